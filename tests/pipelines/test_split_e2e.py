"""ddsp-prepare's split by segment end to end: the held-out blocks, checked on the decoded samples
of the written TFRecords, and the same bytes on a second run."""

import glob
import json
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from ddsp_core import records
from pipelines.prepare_dataset import prepare_dataset
from tests.signals import sine

SECONDS = {'a.wav': 8.0, 'b.wav': 7.0}
# windows of 1 s every 0.5 s: consecutive windows share half their audio; the reference layout
KW = dict(crepe_capacity='tiny', example_secs=1.0, hop_secs=0.5, chunk_secs=2.0,
          inference_batch_size=256, num_shards=2, reference_layout=True)
LAYOUT = records.Layout(16000, 250, 1.0)


def _source(name):
    """A tone with a little noise: every stretch of samples occurs once in the file."""
    rng = np.random.default_rng(len(name) + ord(name[0]))
    x = sine(220.0 if name == 'a.wav' else 330.0, SECONDS[name], 16000, amplitude=0.3)
    return (x + 0.02 * rng.standard_normal(len(x))).astype(np.float32)


@pytest.fixture(scope='module')
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp('split')
    src = root / 'in'
    src.mkdir()
    for name in SECONDS:
        sf.write(str(src / name), _source(name), 16000, subtype='FLOAT')
    outs = [str(root / 'out1'), str(root / 'out2')]
    manifests = [prepare_dataset(str(src / '*.wav'), outs[0],
                                 pipeline_args=['--direct_num_workers=2'], **KW),
                 prepare_dataset(str(src / '*.wav'), outs[1],
                                 pipeline_args=['--direct_running_mode=in_memory'], **KW)]
    return outs, manifests


def _read(out, split):
    spec = records.tf_feature_spec(LAYOUT)
    files = sorted(glob.glob(os.path.join(out, f'{split}-*.tfrecord')))
    return [ex['audio'].numpy() for ex in tf.data.TFRecordDataset(files).map(
        lambda s: tf.io.parse_single_example(s, spec))]


def _locate(audio, sources):
    """(file, first sample) of an example's audio in the sources, from its samples alone."""
    found = []
    for name, x in sources.items():
        for i in np.flatnonzero(x == audio[0]):
            n = min(len(audio), len(x) - i)
            if np.array_equal(x[i:i + n], audio[:n]) and not audio[n:].any():
                found.append((name, int(i)))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
def test_eval_blocks_share_no_audio_with_training_examples(datasets):
    (out, _), (manifest, _) = datasets
    split = manifest['split']
    assert split['method'] == 'segment' and split['split_by'] == 'auto'
    assert split['files_segmented'] == 2 and split['guard_secs'] == 1.0
    with open(os.path.join(out, records.LEDGER)) as f:
        ledger = {os.path.basename(line['path']): line for line in map(json.loads, f)}
    sources = {name: _source(name) for name in SECONDS}
    found = {s: [_locate(a, sources) for a in _read(out, s)] for s in records.SPLITS}
    assert len(found['eval']) == manifest['splits']['eval']['examples'] >= 2
    assert len(found['train']) == manifest['splits']['train']['examples'] >= 2 * 4
    window = 16000  # samples of one example, the guard
    for name in SECONDS:
        line = ledger[name]
        assert line['split'] == 'segmented' and line['eval_examples'] >= 1
        train = [i for n, i in found['train'] if n == name]
        held = [i for n, i in found['eval'] if n == name]
        assert len(held) == line['eval_examples'] and train
        for i in train:  # a whole example of audio between every train and eval example
            for j in held:
                assert i + window + window <= j or j + window + window <= i
        # the ledger's blocks are the eval examples' audio
        (block,) = line['eval_blocks']
        assert block[0] == min(held) / 16000 and block[1] == max(held) / 16000 + 1.0
    held_out = sum(ledger[n]['eval_seconds'] for n in SECONDS)
    assert split['held_out_seconds'] == pytest.approx(held_out)
    assert manifest['splits']['eval']['files'] == manifest['splits']['train']['files'] == 2


@pytest.mark.slow
def test_a_second_run_writes_the_same_bytes(datasets):
    (out1, out2), _ = datasets
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out1, '*')))
    assert names == sorted(os.path.basename(p) for p in glob.glob(os.path.join(out2, '*')))
    assert any(n.startswith('eval-') for n in names)
    for name in names:
        with open(os.path.join(out1, name), 'rb') as a, open(os.path.join(out2, name), 'rb') as b:
            assert a.read() == b.read(), name
