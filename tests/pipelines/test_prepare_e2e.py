"""ddsp-prepare end to end: real DirectRunner, real TFRecords on disk, tiny CREPE."""

import glob
import json
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from pipelines import features
from pipelines.prepare_dataset import prepare_dataset
from tests.signals import sine

PITCHES = {'a220.wav': 220.0, 'b330.flac': 330.0, 'c440.ogg': 440.0, 'd550.wav': 550.0}
SECONDS = {'a220.wav': 4.5, 'b330.flac': 1.5, 'c440.ogg': 2.0, 'd550.wav': 1.0}
BAD = {'garbage.wav': 'unreadable or corrupt', 'empty.wav': 'empty',
       'short.wav': 'too short', 'nan.wav': 'NaN', 'zeros.wav': 'silent',
       'whisper.wav': 'windows are silent'}
KW = dict(crepe_capacity='tiny', chunk_secs=1.0, eval_fraction=0.4, inference_batch_size=256)
SPEC = {'audio': tf.io.FixedLenFeature([64000], tf.float32),
        'f0_hz': tf.io.FixedLenFeature([1000], tf.float32),
        'f0_confidence': tf.io.FixedLenFeature([1000], tf.float32),
        'loudness_db': tf.io.FixedLenFeature([1000], tf.float32)}


def _write_inputs(d):
    os.makedirs(d, exist_ok=True)
    for name, f0 in PITCHES.items():
        sr = 22050 if name.startswith('b') else 16000
        x = sine(f0, SECONDS[name], sr, amplitude=0.4)
        if name.startswith('d'):
            x = np.stack([x, 0.5 * x], 1)  # stereo: mixed down to mono
        sf.write(os.path.join(d, name), x, sr)
    with open(os.path.join(d, 'garbage.wav'), 'wb') as f:
        f.write(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    sf.write(os.path.join(d, 'empty.wav'), np.zeros(0, np.float32), 16000)
    sf.write(os.path.join(d, 'short.wav'), sine(440, 0.1), 16000)
    nan = sine(440, 2.0)
    nan[5000] = np.nan
    sf.write(os.path.join(d, 'nan.wav'), nan, 16000, subtype='FLOAT')
    sf.write(os.path.join(d, 'zeros.wav'), np.zeros(32000, np.float32), 16000)
    sf.write(os.path.join(d, 'whisper.wav'), sine(440, 2.0, amplitude=1e-6), 16000,
             subtype='FLOAT')


def _read_split(out, split):
    files = sorted(glob.glob(os.path.join(out, f'{split}-*.tfrecord')))
    ds = tf.data.TFRecordDataset(files).map(lambda s: tf.io.parse_single_example(s, SPEC))
    return [{k: v.numpy() for k, v in ex.items()} for ex in ds]


def _pitch_of(example):
    """Median f0 and the voiced frames: confident frames whose whole 1024-sample CREPE window
    lies inside the tone (not across its abrupt end, where no pitch is defined)."""
    nonzero = np.flatnonzero(np.abs(example['audio']) > 1e-4)
    centres = np.arange(1000) * 64
    inside = centres + 512 <= nonzero[-1]
    voiced = (example['f0_confidence'] >= 0.5) & inside
    return float(np.median(example['f0_hz'][voiced])), voiced


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('prepare')
    src = str(root / 'in')
    _write_inputs(src)
    one = prepare_dataset(os.path.join(src, '*'), str(root / 'out1'),
                          pipeline_args=['--runner=DirectRunner',
                                         '--direct_running_mode=in_memory'], **KW)
    two = prepare_dataset([os.path.join(src, '*.wav'), os.path.join(src, '*.flac,') +
                           os.path.join(src, '*.ogg')], str(root / 'out2'),
                          pipeline_args=['--direct_num_workers=2'], **KW)  # 2 processes
    return src, str(root / 'out1'), one, str(root / 'out2'), two


@pytest.mark.slow
def test_examples_have_the_documented_schema_and_known_pitch(runs):
    src, out, manifest, _, _ = runs
    expected_split = {n: features.assign_split(n, KW['eval_fraction']) for n in PITCHES}
    assert set(expected_split.values()) == {'train', 'eval'}  # both splits are exercised
    seen = {}
    for split in features.SPLITS:
        examples = _read_split(out, split)
        assert len(examples) == manifest['splits'][split]['examples'] > 0
        for ex in examples:
            pitch, voiced = _pitch_of(ex)
            name = min(PITCHES, key=lambda n: abs(PITCHES[n] - pitch))
            seen[name] = seen.get(name, 0) + 1
            assert expected_split[name] == split  # no file leaks into the other split
            assert voiced.sum() > 200
            err = np.abs(ex['f0_hz'][voiced] / PITCHES[name] - 1)
            assert np.mean(err < 0.01) > 0.99, (name, np.max(err))
            peak = 0.3 if name == 'd550.wav' else 0.4  # the stereo file mixes 0.4 and 0.2
            assert np.abs(ex['audio']).max() == pytest.approx(peak, abs=0.05)
    # windows: 4.5 s -> 2 (at 0 s and 1 s), shorter files -> 1 (only the last window is padded)
    assert seen == {'a220.wav': 2, 'b330.flac': 1, 'c440.ogg': 1, 'd550.wav': 1}
    # a padded last window: 1.5 s of tone then zeros
    b = [ex for ex in _read_split(out, expected_split['b330.flac'])
         if abs(_pitch_of(ex)[0] - 330) < 5][0]
    assert np.abs(b['audio'][:23000]).max() > 0.3 and np.abs(b['audio'][25000:]).max() == 0


@pytest.mark.slow
def test_manifest_reconciles_and_dead_letters_every_bad_file(runs):
    src, out, manifest, _, _ = runs
    files = manifest['files']
    assert files == {'in': 10, 'written': 4, 'partially_written': 0, 'dead_lettered': 6,
                     'reconciled': True}
    letters = [json.loads(line) for line in open(os.path.join(out, 'dead_letters.jsonl'))]
    assert manifest['dead_letters'] == len(letters) == 6
    by_name = {os.path.basename(d['path']): d for d in letters}
    assert set(by_name) == set(BAD)
    for name, needle in BAD.items():
        assert needle in by_name[name]['reason'], by_name[name]
    train = manifest['splits']['train']
    assert manifest['mean_loudness_db'] == pytest.approx(train['loudness_db']['mean'])
    lo, hi = manifest['f0_range_hz']
    train_pitches = [p for n, p in PITCHES.items()
                     if features.assign_split(n, KW['eval_fraction']) == 'train']
    assert lo == pytest.approx(min(train_pitches), rel=0.012)  # 20-cent histogram bins
    assert hi == pytest.approx(max(train_pitches), rel=0.012)
    assert manifest['examples'] == 5 and manifest['hours'] == pytest.approx(5 * 4 / 3600)
    assert manifest['splits']['train']['source_hours'] == pytest.approx(6.0 / 3600, rel=1e-3)
    assert manifest['features'] == {k: list(v.shape) for k, v in SPEC.items()}
    assert manifest['options']['crepe_capacity'] == 'tiny'
    assert manifest['windows_dropped_silent'] == 1  # whisper.wav's only window


def _audio_then_f0(example):
    return example['audio'].tobytes(), example['f0_hz'].round(2).tobytes()


@pytest.mark.slow
def test_split_and_content_identical_across_runs_and_workers(runs):
    _, out1, m1, out2, m2 = runs
    assert m1['fingerprint'] == m2['fingerprint']
    for split in features.SPLITS:
        a = sorted(ex['audio'].tobytes() for ex in _read_split(out1, split))
        b = sorted(ex['audio'].tobytes() for ex in _read_split(out2, split))
        assert a == b
        assert m1['splits'][split]['examples'] == m2['splits'][split]['examples']
        # The features of each example agree too (one process vs two worker processes).
        e1, e2 = (sorted(_read_split(out, split), key=_audio_then_f0) for out in (out1, out2))
        assert len(e1) == len(e2) > 0
        for x, y in zip(e1, e2, strict=True):
            np.testing.assert_allclose(x['f0_hz'], y['f0_hz'], rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(x['f0_confidence'], y['f0_confidence'], atol=1e-4)
            np.testing.assert_allclose(x['loudness_db'], y['loudness_db'], atol=1e-3)
    assert m2['files'] == m1['files']
