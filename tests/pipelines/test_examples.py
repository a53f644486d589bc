"""From a chunk's audio and CREPE activations to example windows and serialised records."""

import dataclasses

import numpy as np
import pytest

from ddsp_core import records
from pipelines import chunking, examples
from pipelines.options import PrepareOptions
from tests.signals import sine

OPTS = PrepareOptions(crepe_capacity='tiny', chunk_secs=3.0, drop_silence_db=None)


def _chunk_with_features(opts, n_samples):
    spec = chunking.plan_chunks(n_samples, opts)[0]
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
    wins, dropped = examples.make_windows(spec, audio, audio16, f0, f0 / 1e4, loud, opts)
    assert dropped == 0 and [s for s, _ in wins] == list(spec.window_starts)
    for start, ex in wins:
        assert {k: v.shape for k, v in ex.items()} == {
            'audio': (192000,), 'audio_16k': (64000,), 'f0_hz': (1000,),
            'f0_confidence': (1000,), 'loudness_db': (1000,)}
        assert {k: v.dtype for k, v in ex.items()} == {k: np.float32 for k in ex}
        assert ex['audio'][0] == (start - spec.seg_first) * opts.hop_samples
        assert ex['audio_16k'][0] == (start - spec.seg_first) * opts.hop_16k
        assert ex['f0_hz'][0] == start - spec.first_frame
        assert ex.keys() == set(opts.layout.feature_lengths())
        assert {k: len(v) for k, v in ex.items()} == opts.layout.feature_lengths()


def test_make_windows_drops_silent_windows_and_counts_them():
    opts = dataclasses.replace(OPTS, drop_silence_db=-70.0)
    spec, audio, loud = _chunk_with_features(opts, 16000 * 6)  # windows start at 0 s, 1 s, 2 s
    loud[:] = -80.0
    loud[1400] = -10.0  # only inside the last window (frames 500..1499)
    f0 = np.zeros_like(loud)
    wins, dropped = examples.make_windows(spec, audio, None, f0, f0, loud, opts)
    assert [s for s, _ in wins] == [500] and dropped == 2
    assert 'audio_16k' not in wins[0][1]
    # drop_silence_db=None keeps every window
    kept, none = examples.make_windows(spec, audio, None, f0, f0, loud,
                                       dataclasses.replace(opts, drop_silence_db=None))
    assert len(kept) == 3 and none == 0


def test_reference_layout_at_16k_writes_audio_16k_equal_to_audio():
    opts = dataclasses.replace(OPTS, reference_layout=True)
    spec, audio, loud = _chunk_with_features(opts, 16000 * 5)
    f0 = np.zeros_like(loud)
    wins, _ = examples.make_windows(spec, audio, None, f0, f0, loud, opts)
    assert len(wins) == 2
    for _, ex in wins:
        assert ex['audio_16k'].shape == (64000,)
        np.testing.assert_array_equal(ex['audio_16k'], ex['audio'])


def test_a_layout_with_audio_16k_needs_16k_audio_when_the_rate_differs():
    opts = dataclasses.replace(OPTS, sample_rate=48000)
    spec, audio, loud = _chunk_with_features(opts, 48000 * 5)
    with pytest.raises(ValueError, match='no 16 kHz audio'):
        examples.make_windows(spec, audio, None, loud, loud, loud, opts)


def _activations(n_frames, bin_index):
    acts = np.full((n_frames, 360), 0.01, np.float32)
    acts[:, bin_index] = 0.9
    return acts


@pytest.mark.parametrize('viterbi', [False, True])
def test_chunk_examples_serialises_windows_with_sort_keys_and_stats(viterbi):
    opts = dataclasses.replace(OPTS, viterbi=viterbi, chunk_secs=2.0)
    n = 16000 * 6
    x = sine(440, 6.0, 16000, 0.5)
    specs = chunking.plan_chunks(n, opts)
    spec = specs[1]  # an inner chunk, with context on both sides
    seg = x[spec.seg_first * opts.hop_samples:spec.seg_end * opts.hop_samples]
    chunk = {'path': '/d/a.wav', 'key': 'a.wav', 'split': 'eval', 'spec': spec,
             'audio': np.pad(seg, (0, (spec.seg_end - spec.seg_first) * opts.hop_samples
                                   - len(seg))),
             'audio_16k': None}
    acts = _activations(spec.seg_end - spec.seg_first + 1, 180)
    made = examples.chunk_examples(chunk, acts, opts)
    assert made.split == 'eval' and made.n_dropped == 0
    assert made.frames == spec.end_frame - spec.first_frame
    assert [k for k, _ in made.records] == [('a.wav', '/d/a.wav', s)
                                            for s in spec.window_starts]
    assert len(made.stats) == len(made.records) == len(spec.window_starts)
    for ((_, _, start), data), st in zip(made.records, made.stats, strict=True):
        ex = records.parse_example(data)
        assert {k: len(v) for k, v in ex.items()} == opts.layout.feature_lengths()
        si = (start - spec.seg_first) * opts.hop_samples
        np.testing.assert_array_equal(ex['audio'], chunk['audio'][si:si + 64000])
        # bin 180 of CREPE's 20-cent grid is ~ 10 * 2**((1997.38 + 3600) / 1200) Hz
        np.testing.assert_allclose(ex['f0_hz'], 10 * 2 ** ((1997.3794 + 180 * 20) / 1200),
                                   rtol=1e-3)
        np.testing.assert_allclose(ex['f0_confidence'], 0.9)
        assert np.all(ex['loudness_db'] > -40)  # a 0.5-amplitude tone is loud
        assert st['split'] == 'eval' and st['examples'] == 1
        assert st['digest'] == records.record_digest(data)


def test_chunk_features_are_the_interior_frames():
    opts = dataclasses.replace(OPTS, viterbi=False, chunk_secs=2.0)
    spec = chunking.plan_chunks(16000 * 6, opts)[1]
    audio = np.zeros((spec.seg_end - spec.seg_first) * opts.hop_samples, np.float32)
    acts = np.zeros((spec.seg_end - spec.seg_first + 1, 360), np.float32)
    acts[spec.first_frame - spec.seg_first, 100] = 0.7  # first interior frame
    f0, conf, loud = examples.chunk_features({'spec': spec, 'audio': audio}, acts, opts)
    assert f0.shape == conf.shape == loud.shape == (spec.end_frame - spec.first_frame,)
    assert conf[0] == pytest.approx(0.7) and np.all(conf[1:] == 0)
    assert f0[0] > 0 and np.all(f0[1:] == 0)
    assert np.all(loud <= -79.9)  # silence is the loudness floor


def test_chunk_features_with_f0_hop_are_interpolated_to_the_frame_rate():
    # --f0_hop_ms 10: activations at 100 frames/s whose pitch rises 5 cents per analysis frame
    # (two neighbouring bins, weighted); the features are at 250 frames/s, each frame's pitch
    # read off that line at its time.
    opts = dataclasses.replace(OPTS, viterbi=False, chunk_secs=1.0, f0_hop_ms=10)
    spec = chunking.plan_chunks(16000 * 6, opts)[1]
    n_seg = spec.seg_end - spec.seg_first
    audio = np.zeros(n_seg * opts.hop_samples, np.float32)
    n_acts = n_seg * opts.hop_16k // 160 + 2
    pos = 40 + 0.25 * np.arange(n_acts)  # in bins
    low = np.floor(pos).astype(int)
    acts = np.zeros((n_acts, 360), np.float32)
    acts[np.arange(n_acts), low] = 0.9 * (1 - (pos - low))
    acts[np.arange(n_acts), low + 1] = 0.9 * (pos - low)
    f0, conf, _ = examples.chunk_features({'spec': spec, 'audio': audio}, acts, opts)
    assert f0.shape == conf.shape == (spec.end_frame - spec.first_frame,)
    frames = np.arange(spec.first_frame, spec.end_frame) - spec.seg_first
    lead = (spec.seg_first * 64) % 160  # the handler's zeros: frames on the file's grid
    assert lead > 0
    cents = 1997.3794084376191 + 20.0 * (40 + 0.25 * (lead + frames * 64) / 160)
    np.testing.assert_allclose(f0, 10 * 2 ** (cents / 1200), rtol=1e-4)
    assert np.all((conf >= 0.45) & (conf <= 0.9))
