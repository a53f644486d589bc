"""Chunk plans: how a file is cut into pieces processed in parallel, and into example windows.

Geometry (all positions are integer *frames* at ``frame_rate``; a frame is ``sample_rate //
frame_rate`` samples of ``audio`` and ``16000 // frame_rate`` samples of 16 kHz audio):

* A file of ``L`` samples yields windows starting at frames ``0, H, 2H, ...`` (``H`` = hop) up to
  and including the first window that reaches the end of the file, so only the last window can
  extend past the end; the file is zero-padded (logically) to the end of that window, never further.
  A file shorter than one example gives exactly one (padded) window.
* Windows are *aligned to chunks*: chunk ``k`` owns the windows starting in frames
  ``[k*C, (k+1)*C)`` (``C`` = chunk length, a multiple of ``H``) and computes features for the
  frames those windows cover, plus ``context`` frames either side (clipped to the padded file).
  Every frame's loudness and CREPE activations depend only on the audio under its own window, so
  with ``context`` >= half a window they are exactly the whole-file values; Viterbi decoding runs
  per chunk over the chunk's frames including the context, so decoded f0 can differ from a
  whole-file decode only in the rare case that the best path through the context frames differs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import numpy as np

from ddsp_core.audio_stream import SignalBuffer
from pipelines.options import PrepareOptions


# ---- chunk plan --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ChunkSpec:
    """One chunk of a file, in frames (see module docstring).

    Attributes:
        index: chunk number in the file.
        n_chunks: chunks in the file.
        first_frame, end_frame: frames whose features the chunk's windows use, ``[first, end)``.
        seg_first, seg_end: frames of audio handed to the feature extractors (with context).
        window_starts: start frames of the windows the chunk owns.
    """

    index: int
    n_chunks: int
    first_frame: int
    end_frame: int
    seg_first: int
    seg_end: int
    window_starts: tuple[int, ...]


def n_windows(n_samples: int, opts: PrepareOptions) -> int:
    """Number of example windows of a file with ``n_samples`` samples at ``opts.sample_rate``."""
    example = opts.example_frames * opts.hop_samples
    hop = opts.hop_frames * opts.hop_samples
    if n_samples <= example:
        return 1
    return 1 + math.ceil((n_samples - example) / hop)


def padded_frames(n_samples: int, opts: PrepareOptions) -> int:
    """Length in frames of the file zero-padded to the end of its last window."""
    return (n_windows(n_samples, opts) - 1) * opts.hop_frames + opts.example_frames


def plan_chunks(n_samples: int, opts: PrepareOptions) -> list[ChunkSpec]:
    """The chunks of a file of ``n_samples`` samples at ``opts.sample_rate``."""
    n_win = n_windows(n_samples, opts)
    per_chunk = opts.chunk_frames // opts.hop_frames
    n_chunks = math.ceil(n_win / per_chunk)
    total = padded_frames(n_samples, opts)
    ctx = opts.context_frames
    specs = []
    for k in range(n_chunks):
        wins = tuple(w * opts.hop_frames for w in range(k * per_chunk, min((k + 1) * per_chunk,
                                                                            n_win)))
        first, end = wins[0], wins[-1] + opts.example_frames
        specs.append(ChunkSpec(k, n_chunks, first, end, max(0, first - ctx), min(total, end + ctx),
                               wins))
    return specs


def iter_chunk_audio(blocks: Iterable[tuple[np.ndarray, ...]], lengths: tuple[int, ...],
                     hops: tuple[int, ...], specs: list[ChunkSpec]):
    """Cut streamed audio into chunk segments as soon as each is complete.

    Args:
        blocks: iterable of tuples of float32 arrays, one per stream (e.g. ``audio`` and
            ``audio_16k``), as from :func:`pipelines.audio_io.stream_resampled`.
        lengths: logical length in samples of each stream (the file's resampled length).
        hops: samples per frame of each stream.
        specs: the file's chunks, from :func:`plan_chunks`.

    Yields:
        ``(spec, segments)``: segments[i] is float32 [(seg_end - seg_first) * hops[i]], samples
        ``seg_first * hop ... seg_end * hop`` of stream i, zero past the file's end.
    """
    bufs = [SignalBuffer(n) for n in lengths]
    pending = list(specs)

    def emit(finished):
        while pending and all(b.ready(pending[0].seg_end * h, finished)
                              for b, h in zip(bufs, hops, strict=True)):
            spec = pending.pop(0)
            segs = tuple(b.get(spec.seg_first * h, spec.seg_end * h)
                         for b, h in zip(bufs, hops, strict=True))
            if pending:
                for b, h in zip(bufs, hops, strict=True):
                    b.drop_before(pending[0].seg_first * h)
            yield spec, segs

    for block in blocks:
        for b, x in zip(bufs, block, strict=True):
            b.append(x)
        yield from emit(False)
    yield from emit(True)


def crepe_offset(spec: ChunkSpec, frame_rate: int, crepe_rate: int) -> int:
    """Zeros (16 kHz samples) put before a chunk's 16 kHz segment so that CREPE, running at
    ``crepe_rate`` frames/s (``--f0_hop_ms``), frames it on the whole file's grid
    (``ddsp_core.f0.analysis_offset`` of the segment's first frame): the RunInference handler
    pads by it and the decoding reads the analysis frames back off the grid by it. 0 when CREPE
    runs at ``frame_rate``."""
    from ddsp_core.f0 import analysis_offset

    return 0 if crepe_rate == frame_rate else analysis_offset(spec.seg_first, frame_rate,
                                                              crepe_rate)


def interior(features: np.ndarray, spec: ChunkSpec) -> np.ndarray:
    """Frames ``[first_frame, end_frame)`` of per-segment features [n_seg_frames, ...]."""
    lo = spec.first_frame - spec.seg_first
    hi = spec.end_frame - spec.seg_first
    if features.shape[0] < hi:
        raise ValueError(f'expected >= {hi} frames of features for chunk {spec.index}, '
                         f'got {features.shape[0]}')
    return features[lo:hi]
