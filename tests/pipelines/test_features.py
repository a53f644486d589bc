"""Pure pieces of ddsp-prepare: split hashing, chunk plans, windowing, examples, statistics."""

import dataclasses
import hashlib
import math

import numpy as np
import pytest

from pipelines import features
from pipelines.features import OptionError, PrepareOptions

OPTS = PrepareOptions(crepe_capacity='tiny', chunk_secs=3.0, drop_silence_db=None)


def test_assign_split_is_sha256_based_and_stable():
    key = 'violin/take_01.wav'
    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], 'big') / 2.0 ** 64
    expected = 'eval' if value < 0.3 else 'train'
    assert features.assign_split(key, 0.3) == expected
    keys = [f'f{i:03d}.wav' for i in range(2000)]
    splits = [features.assign_split(k, 0.25) for k in keys]
    assert splits == [features.assign_split(k, 0.25) for k in keys]
    assert 0.2 < splits.count('eval') / len(keys) < 0.3
    assert all(features.assign_split(k, 0.0) == 'train' for k in keys[:50])
    assert all(features.assign_split(k, 1.0) == 'eval' for k in keys[:50])


def test_split_key_is_relative_to_the_pattern_base():
    assert features.pattern_base('/data/violin/*.wav') == '/data/violin/'
    assert features.pattern_base('gs://b/v/**/*.flac') == 'gs://b/v/'
    assert features.pattern_base('/data/violin/a.wav') == '/data/violin/'
    assert features.split_key('/data/violin/sub/a.wav', '/data/violin/') == 'sub/a.wav'
    # the same folder elsewhere (e.g. copied to GCS) gives the same keys, hence the same split
    assert features.split_key('gs://b/violin/sub/a.wav', 'gs://b/violin/') == 'sub/a.wav'


@pytest.mark.parametrize('seconds,expected', [(2.0, 1), (4.0, 1), (4.001, 2), (5.0, 2),
                                              (5.5, 3), (60.0, 57)])
def test_n_windows_pads_only_the_last_window(seconds, expected):
    n = int(round(seconds * 16000))
    assert features.n_windows(n, OPTS) == expected
    total = features.padded_frames(n, OPTS)
    # the padded length never exceeds the file by a whole hop (only the last window is padded)
    assert total * OPTS.hop_samples - max(n, 64000) < OPTS.hop_frames * OPTS.hop_samples


@pytest.mark.parametrize('seconds', [1.0, 4.0, 9.3, 17.0])
def test_plan_chunks_owns_each_window_once(seconds):
    n = int(seconds * 16000)
    specs = features.plan_chunks(n, OPTS)
    starts = [s for spec in specs for s in spec.window_starts]
    assert starts == [w * OPTS.hop_frames for w in range(features.n_windows(n, OPTS))]
    total = features.padded_frames(n, OPTS)
    for spec in specs:
        assert spec.first_frame == spec.window_starts[0]
        assert spec.end_frame == spec.window_starts[-1] + OPTS.example_frames
        assert 0 <= spec.seg_first <= spec.first_frame - min(OPTS.context_frames,
                                                             spec.first_frame)
        assert spec.seg_end == min(total, spec.end_frame + OPTS.context_frames)
        assert spec.n_chunks == len(specs)


def test_context_covers_half_a_crepe_and_loudness_window():
    for opts in (OPTS, dataclasses.replace(OPTS, sample_rate=48000, viterbi=False)):
        assert opts.context_frames * opts.hop_16k >= 512
        assert opts.context_frames * opts.hop_samples >= opts.loudness_n_fft // 2


@pytest.mark.parametrize('block', [1000, 7777, 200000])
def test_iter_chunk_audio_equals_slices_of_the_padded_signal(block):
    opts = dataclasses.replace(OPTS, sample_rate=48000)
    rng = np.random.default_rng(1)
    n48, n16 = 48000 * 9 + 123, 16000 * 9 + 41
    x48 = rng.standard_normal(n48).astype(np.float32)
    x16 = rng.standard_normal(n16 + 5).astype(np.float32)  # stream longer than logical length
    specs = features.plan_chunks(n48, opts)
    total = features.padded_frames(n48, opts)
    pad48 = np.zeros(total * opts.hop_samples, np.float32)
    pad48[:n48] = x48
    pad16 = np.zeros(total * opts.hop_16k, np.float32)
    pad16[:n16] = x16[:n16]

    def blocks():
        for i in range(0, n48, block * 3):
            yield x48[i:i + block * 3], x16[i // 3:i // 3 + block]
        yield x48[:0], x16[(n48 // (block * 3) + 1) * block:]

    got = list(features.iter_chunk_audio(blocks(), (n48, n16), (opts.hop_samples, opts.hop_16k),
                                         specs))
    assert [s.index for s, _ in got] == list(range(len(specs)))
    for spec, (a48, a16) in got:
        np.testing.assert_array_equal(
            a48, pad48[spec.seg_first * opts.hop_samples:spec.seg_end * opts.hop_samples])
        np.testing.assert_array_equal(
            a16, pad16[spec.seg_first * opts.hop_16k:spec.seg_end * opts.hop_16k])


def _chunk_with_features(opts, n_samples):
    spec = features.plan_chunks(n_samples, opts)[0]
    seg = (spec.seg_end - spec.seg_first)
    audio = np.arange(seg * opts.hop_samples, dtype=np.float32)
    n = spec.end_frame - spec.first_frame
    loud = np.full(n, -20.0, np.float32)
    return spec, audio, loud


def test_make_windows_shapes_and_positions():
    opts = dataclasses.replace(OPTS, sample_rate=48000)
    spec, audio, loud = _chunk_with_features(opts, 48000 * 6)
    audio16 = np.arange((spec.seg_end - spec.seg_first) * 64, dtype=np.float32)
    f0 = np.arange(spec.end_frame - spec.first_frame, dtype=np.float32)
    wins, dropped = features.make_windows(spec, audio, audio16, f0, f0 / 1e4, loud, opts)
    assert dropped == 0 and [s for s, _ in wins] == list(spec.window_starts)
    for start, ex in wins:
        assert {k: v.shape for k, v in ex.items()} == {
            'audio': (192000,), 'audio_16k': (64000,), 'f0_hz': (1000,),
            'f0_confidence': (1000,), 'loudness_db': (1000,)}
        assert ex['audio'][0] == (start - spec.seg_first) * opts.hop_samples
        assert ex['f0_hz'][0] == start - spec.first_frame


def test_make_windows_drops_silent_windows_and_counts_them():
    opts = dataclasses.replace(OPTS, drop_silence_db=-70.0)
    spec, audio, loud = _chunk_with_features(opts, 16000 * 6)  # windows start at 0 s, 1 s, 2 s
    loud[:] = -80.0
    loud[1400] = -10.0  # only inside the last window (frames 500..1499)
    f0 = np.zeros_like(loud)
    wins, dropped = features.make_windows(spec, audio, None, f0, f0, loud, opts)
    assert [s for s, _ in wins] == [500] and dropped == 2
    assert 'audio_16k' not in wins[0][1]


def test_serialize_roundtrip_has_the_reference_layout():
    ex = {'audio': np.linspace(-1, 1, 64000, dtype=np.float32),
          'f0_hz': np.full(1000, 440.0, np.float32),
          'f0_confidence': np.full(1000, 0.9, np.float32),
          'loudness_db': np.full(1000, -30.0, np.float32)}
    back = features.parse_example(features.serialize_example(ex))
    assert set(back) == set(ex)
    for k in ex:
        np.testing.assert_array_equal(back[k], ex[k])
    assert features.feature_spec(OPTS) == {'audio': [64000], 'f0_hz': [1000],
                                           'f0_confidence': [1000], 'loudness_db': [1000]}


def _stats(split, key, loud, conf, f0):
    n = len(loud)
    ex = {'audio': np.zeros(10, np.float32), 'loudness_db': np.asarray(loud, np.float32),
          'f0_confidence': np.asarray(conf, np.float32), 'f0_hz': np.asarray(f0, np.float32)}
    assert n == len(conf) == len(f0)
    return {k: v for k, v in features.example_stats(split, key, 0, ex).items() if k != 'split'}


def test_split_stats_merge_is_order_independent_and_exact():
    a = _stats('train', 'a', [-10, -20], [0.9, 0.1], [440, 0])
    b = _stats('train', 'b', [-30, -40], [0.8, 0.7], [220, 880])
    e = features.empty_split_stats()
    ab = features.merge_split_stats(features.merge_split_stats(e, a), b)
    ba = features.merge_split_stats(features.merge_split_stats(e, b), a)
    assert ab == ba
    s = features.summarize_split(ab, OPTS)
    assert s['examples'] == 2 and s['frames'] == 4
    assert s['loudness_db']['mean'] == pytest.approx(-25.0)
    assert s['loudness_db']['std'] == pytest.approx(np.std([-10, -20, -30, -40]))
    assert s['f0_hz']['min'] == pytest.approx(220) and s['f0_hz']['max'] == pytest.approx(880)
    assert s['f0_hz']['p01'] == pytest.approx(220, rel=0.006)
    assert s['f0_hz']['p99'] == pytest.approx(880, rel=0.006)
    assert s['f0_confidence']['voiced_fraction'] == pytest.approx(0.75)
    assert sum(s['f0_confidence']['histogram']) == 4


def test_build_manifest_reconciles_and_fingerprints_content():
    acc = {s: features.empty_split_stats() for s in features.SPLITS}
    acc['train'] = features.merge_split_stats(acc['train'], _stats('train', 'a', [-10], [1], [440]))
    files = [{'path': '/x/a.wav', 'key': 'a.wav', 'split': 'train', 'seconds': 3.0,
              'sha256': '0'}]
    dead = [{'path': '/x/b.wav', 'reason': 'corrupt', 'stage': 'decode'}]
    m = features.build_manifest(OPTS, ['/x/*.wav'], 2, files, acc, {'/x/a.wav': 1}, dead,
                                {'train': ['/out/train-00000-of-00001.tfrecord']}, 0)
    assert m['files'] == {'in': 2, 'written': 1, 'partially_written': 0, 'dead_lettered': 1,
                          'reconciled': True}
    assert m['splits']['train']['shards'] == ['train-00000-of-00001.tfrecord']
    assert m['mean_loudness_db'] == pytest.approx(-10.0)
    assert m['f0_range_hz'] == [pytest.approx(440.0, rel=0.006)] * 2
    bad = features.build_manifest(OPTS, ['/x/*.wav'], 3, files, acc, {'/x/a.wav': 1}, dead,
                                  {}, 0)
    assert bad['files']['reconciled'] is False
    acc2 = dict(acc)
    acc2['train'] = features.merge_split_stats(acc['train'], _stats('train', 'c', [-5], [1], [1]))
    m2 = features.build_manifest(OPTS, ['/x/*.wav'], 2, files, acc2, {'/x/a.wav': 1}, dead, {}, 0)
    assert m2['fingerprint'] != m['fingerprint']
    assert math.isclose(m['hours'], 4.0 / 3600)
    # A file with examples *and* a dead letter (it failed after some chunks were written) is
    # partially written: its examples and source seconds count, and the files still reconcile.
    files3 = files + [{'path': '/x/c.wav', 'key': 'c.wav', 'split': 'train', 'seconds': 30.0,
                       'sha256': '1'}]
    dead3 = dead + [{'path': '/x/c.wav', 'reason': 'decode failed', 'stage': 'decode'}]
    m3 = features.build_manifest(OPTS, ['/x/*.wav'], 3, files3, acc,
                                 {'/x/a.wav': 1, '/x/c.wav': 2}, dead3, {}, 0)
    assert m3['files'] == {'in': 3, 'written': 1, 'partially_written': 1, 'dead_lettered': 1,
                           'reconciled': True}
    assert m3['splits']['train']['files'] == 2
    assert math.isclose(m3['source_hours'], 33.0 / 3600)


@pytest.mark.parametrize('field,value,needle', [
    ('frame_rate', 300, 'must divide 16000'),
    ('sample_rate', 44100, 'must divide --sample_rate'),
    ('chunk_secs', 2.5, 'multiple of --hop_secs'),
    ('eval_fraction', 1.5, '[0, 1]'),
    ('crepe_capacity', 'huge', 'tiny'),
    ('example_secs', 0.001, 'whole number of frames'),
])
def test_bad_options_name_the_option(field, value, needle):
    with pytest.raises(OptionError, match='--' + field) as info:
        dataclasses.replace(OPTS, **{field: value}).validate()
    assert needle in str(info.value)
