"""ddsp-prepare end to end: real DirectRunner, real TFRecords on disk, tiny CREPE."""

import glob
import hashlib
import json
import os
from unittest.mock import ANY

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from ddsp_core import records
from ddsp_core.f0 import resolve_crepe_precision
from pipelines.inputs import assign_split, expand_inputs
from pipelines.options import OptionError
from pipelines.prepare_dataset import prepare_dataset
from tests.signals import sine

PITCHES = {'a220.wav': 220.0, 'b330.flac': 330.0, 'c440.ogg': 440.0, 'd550.wav': 550.0}
SECONDS = {'a220.wav': 4.5, 'b330.flac': 1.5, 'c440.ogg': 2.0, 'd550.wav': 1.0}
# Each rejected input and (part of) the reason the dead letters and the ledger give for it.
BAD = {'garbage.wav': 'unreadable or corrupt', 'empty.wav': 'no audio (0 samples)',
       'short.wav': 'too short', 'nan.wav': 'NaN', 'zeros.wav': 'silent (all 32000 samples',
       'whisper.wav': 'windows are silent',
       'zero_bytes.wav': 'zero_bytes.wav: empty file (0 bytes)',
       'truncated.wav': 'truncated.wav: truncated: header 4.0 s, decoded 1.6 s',
       'dangling.wav': 'dangling.wav: missing target (dangling symlink to '}
SUBDIR = 'sub'
# CREPE calls of a few frames: their sums depend on TensorFlow's thread count unless it is fixed
KW = dict(crepe_capacity='tiny', chunk_secs=1.0, eval_fraction=0.4, inference_batch_size=7)
TWO_WORKERS = ['--direct_num_workers=2']  # the multi-process default, with 2 processes
ONE_WORKER = ['--direct_num_workers=1']  # one process, with all the cores
LAYOUT = records.Layout(16000, 250, 4.0)


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
    open(os.path.join(d, 'zero_bytes.wav'), 'wb').close()
    truncated = os.path.join(d, 'truncated.wav')
    sf.write(truncated, sine(440, 4.0), 16000, subtype='PCM_16')
    with open(truncated, 'rb') as f:
        data = f.read()
    with open(truncated, 'wb') as f:
        f.write(data[:44 + int(1.6 * 16000) * 2])
    os.symlink(os.path.join(d, 'moved-away.wav'), os.path.join(d, 'dangling.wav'))
    os.makedirs(os.path.join(d, SUBDIR))
    sf.write(os.path.join(d, SUBDIR, 'not_matched.wav'), sine(440, 1.0), 16000)


def _shards(out, split):
    return sorted(glob.glob(os.path.join(out, f'{split}-*-of-*.tfrecord')))


def _read_split(out, split, layout=LAYOUT, with_audio_16k=False):
    spec = records.tf_feature_spec(layout, with_audio_16k)
    ds = tf.data.TFRecordDataset(_shards(out, split)).map(
        lambda s: tf.io.parse_single_example(s, spec))
    return [{k: v.numpy() for k, v in ex.items()} for ex in ds]


def _sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _ledger(out):
    with open(os.path.join(out, records.LEDGER)) as f:
        return [json.loads(line) for line in f]


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
    """Two prepares of the same inputs and options, one with two worker processes and one with
    a single worker that has all the cores (CREPE's thread count must not change the bytes)."""
    root = tmp_path_factory.mktemp('prepare')
    src = str(root / 'in')
    _write_inputs(src)
    pattern = os.path.join(src, '*')
    # four shards per split, so that which shard each record goes to matters (the 5 records
    # land in 4 of the 8 shards; the others are written empty)
    one = prepare_dataset(pattern, str(root / 'out1'), pipeline_args=TWO_WORKERS, num_shards=4,
                          **KW)
    two = prepare_dataset(pattern, str(root / 'out2'), pipeline_args=ONE_WORKER, num_shards=4,
                          **KW)
    return src, str(root / 'out1'), one, str(root / 'out2'), two


@pytest.mark.slow
def test_examples_have_the_documented_schema_and_known_pitch(runs):
    src, out, manifest, _, _ = runs
    expected_split = {n: assign_split(n, KW['eval_fraction']) for n in PITCHES}
    assert set(expected_split.values()) == {'train', 'eval'}  # both splits are exercised
    seen = {}
    for split in records.SPLITS:
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
    # the manifest describes the records, and ddsp_core.records reads it back
    m = records.read_manifest(out)
    assert m.layout == LAYOUT
    assert manifest['features'] == {k: [n] for k, n in LAYOUT.feature_lengths().items()}
    for split in records.SPLITS:
        assert m.shards(split) == _shards(out, split)
        assert manifest['splits'][split]['shards'] == [os.path.basename(p)
                                                       for p in _shards(out, split)]
    assert not glob.glob(os.path.join(out, '.tmp-*'))  # temporary shard names are gone


@pytest.mark.slow
def test_manifest_reconciles_and_dead_letters_every_bad_file(runs):
    src, out, manifest, _, _ = runs
    files = manifest['files']
    n_bad = len(BAD)
    assert files == {'matched': 4 + n_bad + 1, 'in': 4 + n_bad, 'skipped_directories': 1,
                     'written': 4, 'partially_written': 0, 'dead_lettered': n_bad,
                     'reconciled': True, 'ledger': records.LEDGER}
    letters = [json.loads(line) for line in open(os.path.join(out, records.DEAD_LETTERS))]
    assert manifest['dead_letters'] == len(letters) == n_bad
    by_name = {os.path.basename(d['path']): d for d in letters}
    assert set(by_name) == set(BAD)
    for name, needle in BAD.items():
        assert needle in by_name[name]['reason'], by_name[name]
        assert by_name[name]['stage'] == ('windows' if name == 'whisper.wav' else 'decode')
    # dead letters are written in a stable order
    assert letters == sorted(letters, key=lambda d: (d['path'], d['stage'], d['reason']))
    train = manifest['splits']['train']
    assert manifest['mean_loudness_db'] == pytest.approx(train['loudness_db']['mean'])
    lo, hi = manifest['f0_range_hz']
    train_pitches = [p for n, p in PITCHES.items()
                     if assign_split(n, KW['eval_fraction']) == 'train']
    assert lo == pytest.approx(min(train_pitches), rel=0.012)  # 20-cent histogram bins
    assert hi == pytest.approx(max(train_pitches), rel=0.012)
    assert manifest['examples'] == 5 and manifest['hours'] == pytest.approx(5 * 4 / 3600)
    train_secs = sum(SECONDS[n] for n in PITCHES if assign_split(n, KW['eval_fraction'])
                     == 'train')
    assert manifest['splits']['train']['source_hours'] == pytest.approx(train_secs / 3600,
                                                                        rel=1e-3)
    assert manifest['options']['crepe_capacity'] == 'tiny'
    # 'auto' is resolved by each worker (bfloat16 where it has AVX-512 BF16) and recorded,
    # with the CREPE frames it analysed; the option stays as given.
    precision = resolve_crepe_precision('auto')
    assert manifest['f0'] == {'capacity': 'tiny', 'precision': precision, 'viterbi': True,
                              'hop_ms': None, 'frames_by_precision': {precision: ANY}}
    assert manifest['f0']['frames_by_precision'][precision] > 0
    assert manifest['options']['crepe_precision'] == 'auto'
    assert manifest['windows_dropped_silent'] == 1  # whisper.wav's only window


@pytest.mark.slow
def test_ledger_names_every_entry_the_pattern_matched(runs):
    src, out, manifest, _, _ = runs
    ledger = _ledger(out)
    matched = expand_inputs([os.path.join(src, '*')])
    assert [line['path'] for line in ledger] == [e.path for e in matched]
    assert sorted(os.path.basename(line['path']) for line in ledger) == sorted(os.listdir(src))
    by_name = {os.path.basename(line['path']): line for line in ledger}
    for name in PITCHES:
        line = by_name[name]
        assert line['outcome'] == 'written' and line['reasons'] == []
        assert line['examples'] == (2 if name == 'a220.wav' else 1)
        assert line['source_seconds'] == pytest.approx(SECONDS[name], abs=1e-3)
        assert line['split'] == assign_split(name, KW['eval_fraction'])
        assert len(line['sha256']) == 64
    for name, needle in BAD.items():
        line = by_name[name]
        assert line['outcome'] == 'dead_lettered' and line['examples'] == 0, line
        assert len(line['reasons']) == 1 and needle in line['reasons'][0], line
    sub = by_name[SUBDIR]
    assert sub['outcome'] == 'skipped' and sub['reasons'] == ['skipped: directory']
    assert sub['split'] is None
    assert sum(line['examples'] for line in ledger) == manifest['examples']
    split_files = {s: sum(1 for line in ledger if line['split'] == s and line['examples'])
                   for s in records.SPLITS}
    assert split_files == {s: manifest['splits'][s]['files'] for s in records.SPLITS}


@pytest.mark.slow
def test_two_runs_write_byte_identical_datasets(runs):
    """... whatever the number of worker processes (and so each worker's share of the cores)."""
    _, out1, m1, out2, m2 = runs
    names = sorted(os.listdir(out1))
    assert names == sorted(os.listdir(out2))
    assert '.spill' not in names  # the examples' spill files go when the job ends
    shards = [n for n in names if n.endswith('.tfrecord')]
    assert len(shards) == 8
    # records are spread over several shards of each split
    for split in records.SPLITS:
        assert sum(os.path.getsize(p) > 0 for p in _shards(out1, split)) == 2
    for name in shards + [records.LEDGER, records.DEAD_LETTERS, records.MANIFEST]:
        assert _sha256(os.path.join(out1, name)) == _sha256(os.path.join(out2, name)), name
    assert m1['fingerprint'] == m2['fingerprint']
    # the fingerprint is the digest of the records in the shards
    digests = {}
    for split in records.SPLITS:
        blobs = [r.numpy() for r in tf.data.TFRecordDataset(_shards(out1, split))]
        digests[split] = records.combine_digests(records.record_digest(b) for b in blobs)
    assert records.fingerprint(LAYOUT, digests) == m1['fingerprint']


@pytest.mark.slow
def test_an_in_process_run_writes_the_same_bytes(runs, tmp_path):
    """ddsp-prepare on the in-process DirectRunner, in a process whose TensorFlow would use 8
    threads (as on an 8-core machine), writes the bytes of the multi-process runs (one thread
    per worker here)."""
    import subprocess
    import sys

    src, out1, m1, _, _ = runs
    out = tmp_path / 'in_process'
    cmd = [sys.executable, '-m', 'pipelines.prepare_dataset', '--input', os.path.join(src, '*'),
           '--output_dir', str(out), '--num_shards', '4', '--runner', 'DirectRunner',
           '--direct_running_mode', 'in_memory']
    for key, value in KW.items():
        cmd += [f'--{key}', str(value)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, 'TF_NUM_INTRAOP_THREADS': '8'}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(os.listdir(out1))
    assert names == sorted(os.listdir(out))
    for name in names:  # shards, manifest, ledger, dead letters
        assert _sha256(os.path.join(out1, name)) == _sha256(out / name), name
    assert json.loads((out / records.MANIFEST).read_text())['fingerprint'] == m1['fingerprint']


@pytest.mark.slow
def test_a_portable_runner_run_writes_the_same_bytes(runs, tmp_path):
    """Beam's portable runner (job service and external worker pool on 127.0.0.1; the workers
    share this virtual environment, see tests/pipelines/portable.py) writes the DirectRunner's
    bytes."""
    from tests.pipelines import listening
    from tests.pipelines.portable import portable_runner

    src, out1, m1, _, _ = runs
    out = tmp_path / 'portable'
    with portable_runner() as args:
        manifest = prepare_dataset(os.path.join(src, '*'), str(out), pipeline_args=args,
                                   num_shards=4, **KW)
        servers = listening.listeners(os.getpid())  # job service, worker pool, job's servers
    assert len(servers) >= 2 and all(s.loopback for s in servers), servers
    names = sorted(os.listdir(out1))
    assert names == sorted(os.listdir(out))
    for name in names:  # shards, manifest, ledger, dead letters
        assert _sha256(os.path.join(out1, name)) == _sha256(out / name), name
    assert manifest['fingerprint'] == m1['fingerprint']


# ---- a dataset whose eval split gets no file, in the reference layout; overwriting it -------
@pytest.fixture(scope='module')
def one_split(tmp_path_factory):
    root = tmp_path_factory.mktemp('one_split')
    src = root / 'in'
    src.mkdir()
    sf.write(str(src / 'tone.wav'), sine(440, 5.0, 16000, 0.4), 16000)  # 2 windows
    out = str(root / 'out')
    kw = dict(KW, eval_fraction=0.0, reference_layout=True,
              pipeline_args=['--runner=DirectRunner', '--direct_running_mode=in_memory'])
    first = prepare_dataset(str(src / '*.wav'), out, num_shards=3, **kw)
    first_files = {n: _sha256(os.path.join(out, n)) for n in os.listdir(out)}
    with pytest.raises(OptionError) as refused:
        prepare_dataset(str(src / '*.wav'), out, num_shards=1, **kw)
    after_refusal = {n: _sha256(os.path.join(out, n)) for n in os.listdir(out)}
    second = prepare_dataset(str(src / '*.wav'), out, num_shards=1, overwrite=True, **kw)
    return {'out': out, 'first': first, 'first_files': first_files, 'refused': refused.value,
            'after_refusal': after_refusal, 'second': second}


@pytest.mark.slow
def test_split_without_files_gets_one_empty_shard(one_split):
    first = one_split['first']
    assert first['splits']['eval']['examples'] == 0 and first['splits']['eval']['files'] == 0
    assert first['splits']['eval']['shards'] == ['eval-00000-of-00001.tfrecord']
    assert first['splits']['train']['examples'] == first['examples'] == 2
    # num_shards=3: every shard is written, also those no record hashed to
    assert first['splits']['train']['shards'] == [records.shard_name('train', i, 3)
                                                  for i in range(3)]
    assert sorted(one_split['first_files']) == sorted(
        ['eval-00000-of-00001.tfrecord', 'train-00000-of-00003.tfrecord',
         'train-00001-of-00003.tfrecord', 'train-00002-of-00003.tfrecord',
         records.MANIFEST, records.LEDGER, records.DEAD_LETTERS])
    out = one_split['out']
    m = records.read_manifest(out)
    assert m.split_examples('eval') == 0
    assert records.summary_of_split(m, 'eval') == 'empty (0 examples)'
    second = one_split['second']
    assert _read_split(out, 'eval', m.layout) == []
    assert os.path.getsize(os.path.join(out, 'eval-00000-of-00001.tfrecord')) == 0
    assert second['splits']['eval']['examples'] == 0


@pytest.mark.slow
def test_reference_layout_at_16k_writes_audio_16k_equal_to_audio(one_split):
    out = one_split['out']
    m = records.read_manifest(out)
    assert m.layout == records.Layout(16000, 250, 4.0, audio_16k=True)
    assert m.data['features']['audio_16k'] == [64000]
    examples = _read_split(out, 'train', m.layout, with_audio_16k=True)
    assert len(examples) == 2
    for ex in examples:
        assert ex['audio_16k'].shape == (64000,)
        np.testing.assert_array_equal(ex['audio_16k'], ex['audio'])
        assert np.abs(ex['audio']).max() == pytest.approx(0.4, abs=0.05)
    # the records' own lengths give the same layout (as a reader without the manifest sees)
    blob = next(iter(tf.data.TFRecordDataset(_shards(out, 'train')))).numpy()
    lengths = {k: v.size for k, v in records.parse_example(blob).items()}
    assert records.Layout.from_lengths(lengths) == m.layout


@pytest.mark.slow
def test_existing_dataset_is_kept_unless_overwrite(one_split):
    refused = one_split['refused']
    message = str(refused)
    assert one_split['out'] in message and '--overwrite' in message
    assert 'already holds a dataset' in message and records.MANIFEST in message
    assert one_split['after_refusal'] == one_split['first_files']  # nothing was touched


@pytest.mark.slow
def test_overwrite_with_fewer_shards_leaves_no_stale_shard(one_split):
    out, first, second = one_split['out'], one_split['first'], one_split['second']
    assert sorted(os.listdir(out)) == sorted(
        ['eval-00000-of-00001.tfrecord', 'train-00000-of-00001.tfrecord', records.MANIFEST,
         records.LEDGER, records.DEAD_LETTERS])
    assert second['splits']['train']['shards'] == ['train-00000-of-00001.tfrecord']
    assert second['examples'] == 2 and len(_read_split(out, 'train', records.read_manifest(
        out).layout)) == 2
    # the same records, sharded differently: the same fingerprint
    assert second['fingerprint'] == first['fingerprint']
    assert second['files']['reconciled'] is True
