"""Chunk plans: windows per file, the chunks that own them, streamed audio cut into segments."""

import dataclasses

import numpy as np
import pytest

from pipelines import chunking
from pipelines.options import PrepareOptions

OPTS = PrepareOptions(crepe_capacity='tiny', chunk_secs=3.0, drop_silence_db=None)


@pytest.mark.parametrize('seconds,expected', [(2.0, 1), (4.0, 1), (4.001, 2), (5.0, 2),
                                              (5.5, 3), (60.0, 57)])
def test_n_windows_pads_only_the_last_window(seconds, expected):
    n = int(round(seconds * 16000))
    assert chunking.n_windows(n, OPTS) == expected
    total = chunking.padded_frames(n, OPTS)
    assert total == (expected - 1) * OPTS.hop_frames + OPTS.example_frames
    # the padded length never exceeds the file by a whole hop (only the last window is padded)
    assert total * OPTS.hop_samples - max(n, 64000) < OPTS.hop_frames * OPTS.hop_samples


@pytest.mark.parametrize('seconds', [1.0, 4.0, 9.3, 17.0])
def test_plan_chunks_owns_each_window_once(seconds):
    n = int(seconds * 16000)
    specs = chunking.plan_chunks(n, OPTS)
    starts = [s for spec in specs for s in spec.window_starts]
    assert starts == [w * OPTS.hop_frames for w in range(chunking.n_windows(n, OPTS))]
    total = chunking.padded_frames(n, OPTS)
    per_chunk = OPTS.chunk_frames // OPTS.hop_frames
    for k, spec in enumerate(specs):
        assert spec.index == k and spec.n_chunks == len(specs)
        # chunk k owns the windows starting in [k*C, (k+1)*C)
        assert all(k * OPTS.chunk_frames <= s < (k + 1) * OPTS.chunk_frames
                   for s in spec.window_starts)
        assert len(spec.window_starts) <= per_chunk
        assert spec.first_frame == spec.window_starts[0]
        assert spec.end_frame == spec.window_starts[-1] + OPTS.example_frames
        assert spec.seg_first == max(0, spec.first_frame - OPTS.context_frames)
        assert spec.seg_end == min(total, spec.end_frame + OPTS.context_frames)


def test_plan_chunks_of_a_short_file_is_one_padded_window():
    (spec,) = chunking.plan_chunks(8000, OPTS)  # 0.5 s
    assert spec.window_starts == (0,)
    assert (spec.first_frame, spec.end_frame) == (0, OPTS.example_frames)
    assert (spec.seg_first, spec.seg_end) == (0, OPTS.example_frames)  # clipped to the file


@pytest.mark.parametrize('block', [1000, 7777, 200000])
def test_iter_chunk_audio_equals_slices_of_the_padded_signal(block):
    opts = dataclasses.replace(OPTS, sample_rate=48000)
    rng = np.random.default_rng(1)
    n48, n16 = 48000 * 9 + 123, 16000 * 9 + 41
    x48 = rng.standard_normal(n48).astype(np.float32)
    x16 = rng.standard_normal(n16 + 5).astype(np.float32)  # stream longer than logical length
    specs = chunking.plan_chunks(n48, opts)
    total = chunking.padded_frames(n48, opts)
    pad48 = np.zeros(total * opts.hop_samples, np.float32)
    pad48[:n48] = x48
    pad16 = np.zeros(total * opts.hop_16k, np.float32)
    pad16[:n16] = x16[:n16]

    def blocks():
        for i in range(0, n48, block * 3):
            yield x48[i:i + block * 3], x16[i // 3:i // 3 + block]
        yield x48[:0], x16[(n48 // (block * 3) + 1) * block:]

    got = list(chunking.iter_chunk_audio(blocks(), (n48, n16), (opts.hop_samples, opts.hop_16k),
                                         specs))
    assert [s.index for s, _ in got] == list(range(len(specs)))
    for spec, (a48, a16) in got:
        np.testing.assert_array_equal(
            a48, pad48[spec.seg_first * opts.hop_samples:spec.seg_end * opts.hop_samples])
        np.testing.assert_array_equal(
            a16, pad16[spec.seg_first * opts.hop_16k:spec.seg_end * opts.hop_16k])


def test_iter_chunk_audio_emits_chunks_while_streaming():
    """A chunk is yielded as soon as its audio has arrived, not at the end of the file."""
    n = 16000 * 12
    specs = chunking.plan_chunks(n, OPTS)
    assert len(specs) > 2
    fed = []

    def blocks():
        for i in range(0, n, 4000):
            fed.append(i)
            yield (np.ones(4000, np.float32),)

    it = chunking.iter_chunk_audio(blocks(), (n,), (OPTS.hop_samples,), specs)
    spec, _ = next(it)
    assert spec.index == 0 and len(fed) * 4000 < n


def test_interior_takes_the_owned_frames():
    spec = chunking.plan_chunks(16000 * 12, OPTS)[1]
    feats = np.arange(spec.seg_end - spec.seg_first)
    inner = chunking.interior(feats, spec)
    assert len(inner) == spec.end_frame - spec.first_frame
    assert inner[0] == spec.first_frame - spec.seg_first
    with pytest.raises(ValueError, match=f'chunk {spec.index}'):
        chunking.interior(feats[:-1 - spec.seg_end + spec.end_frame], spec)
