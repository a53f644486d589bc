"""From a chunk's audio and CREPE activations to serialised examples: the pure function behind
``ddsp-prepare``'s ``MakeExamples`` step."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from ddsp_core import records
from pipelines import stats
from pipelines.chunking import ChunkSpec, crepe_offset, interior
from pipelines.options import PrepareOptions


def make_windows(spec: ChunkSpec, audio: np.ndarray, audio_16k: Optional[np.ndarray],
                 f0_hz: np.ndarray, f0_confidence: np.ndarray, loudness_db: np.ndarray,
                 opts: PrepareOptions) -> tuple[list[tuple[int, dict[str, np.ndarray]]], int]:
    """Cut a chunk's features into example windows.

    Args:
        spec: the chunk.
        audio: float32 [(seg_end - seg_first) * hop_samples], the chunk segment at sample_rate.
        audio_16k: float32 [(seg_end - seg_first) * hop_16k] at 16 kHz, or None when
            the layout has no ``audio_16k``.
        f0_hz, f0_confidence, loudness_db: float32 [end_frame - first_frame], the chunk's
            interior frames (Hz, 0..1, dB).
        opts: options.

    Returns:
        (windows, n_dropped): windows is a list of ``(start_frame, example)`` where example maps
        feature names to float32 arrays (``audio`` [example_secs * sample_rate], ``audio_16k``
        [example_secs * 16000] when the layout has it, frame features [example_frames]);
        n_dropped counts windows dropped as silent.
    """
    out, dropped = [], 0
    n = opts.example_frames
    with_16k = opts.layout.audio_16k
    if with_16k and audio_16k is None:
        if opts.needs_16k:
            raise ValueError('the layout has audio_16k but the chunk holds no 16 kHz audio')
        audio_16k = audio  # the reference layout at 16 kHz: audio_16k is the audio itself
    for start in spec.window_starts:
        fi = start - spec.first_frame
        loud = loudness_db[fi:fi + n]
        if opts.drop_silence_db is not None and float(np.max(loud)) < opts.drop_silence_db:
            dropped += 1
            continue
        si = (start - spec.seg_first) * opts.hop_samples
        ex = {'audio': audio[si:si + n * opts.hop_samples]}
        if with_16k:
            s16 = (start - spec.seg_first) * opts.hop_16k
            ex['audio_16k'] = audio_16k[s16:s16 + n * opts.hop_16k]
        ex['f0_hz'] = f0_hz[fi:fi + n]
        ex['f0_confidence'] = f0_confidence[fi:fi + n]
        ex['loudness_db'] = loud
        out.append((start, {k: np.asarray(v, np.float32) for k, v in ex.items()}))
    return out, dropped


@dataclasses.dataclass
class ChunkExamples:
    """What one chunk contributes to the dataset.

    Attributes:
        split: the file's split: 'train', 'eval' or 'segmented' (see
            :mod:`pipelines.splitting`).
        records: ``(sort_key, serialised tf.train.Example)`` per kept window; the sort key
            ``(split key, path, start frame)`` orders records inside their shard.
        stats: per-record statistics (:func:`pipelines.stats.example_stats`), in the same order.
        n_dropped: windows dropped as silent.
        frames: frames of audio the chunk's windows cover.
        record_splits: 'train' or 'eval' of each record, in the same order.
        n_guard: windows left out as the guard between the splits (in neither).
    """

    split: str
    records: list[tuple[tuple[str, str, int], bytes]]
    stats: list[dict]
    n_dropped: int
    frames: int
    record_splits: list[str] = dataclasses.field(default_factory=list)
    n_guard: int = 0


def chunk_features(chunk: dict[str, Any], activations: np.ndarray, opts: PrepareOptions
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f0 (Hz), confidence and loudness (dB) of a chunk's interior frames, float32 each.

    Args:
        chunk: a chunk from ``DecodeFile`` (``spec``, ``audio`` at ``opts.sample_rate``).
        activations: CREPE activations of the chunk's segment, float32 [n_seg_frames + 1, 360]
            (at ``opts.crepe_rate``: fewer frames with ``f0_hop_ms``, on the whole file's
            grid, i.e. of the segment after ``chunking.crepe_offset`` zeros; interpolated here).
        opts: options.
    """
    from ddsp_core.f0 import activations_to_f0, interpolate_f0
    from ddsp_core.spectral_ops import compute_loudness

    spec = chunk['spec']
    f0, conf = activations_to_f0(np.asarray(activations), viterbi=opts.viterbi)
    if opts.crepe_rate != opts.frame_rate:  # --f0_hop_ms: to the segment's frames
        # (the handler put crepe_offset zeros before the segment: the whole file's grid)
        lead = crepe_offset(spec, opts.frame_rate, opts.crepe_rate)
        f0, conf = interpolate_f0(f0, conf, opts.crepe_rate, opts.frame_rate,
                                  spec.seg_end - spec.seg_first + 1, offset=lead)
    loud = compute_loudness(chunk['audio'], sample_rate=opts.sample_rate,
                            frame_rate=opts.frame_rate, n_fft=opts.loudness_n_fft,
                            use_tf=False, padding='center')
    loud = np.asarray(loud, np.float32).reshape(-1)
    return tuple(interior(np.asarray(x, np.float32), spec) for x in (f0, conf, loud))


def chunk_examples(chunk: dict[str, Any], activations: np.ndarray,
                   opts: PrepareOptions) -> ChunkExamples:
    """Decode a chunk's pitch, compute its loudness, cut its windows and serialise them, each
    to the split its file's plan (``chunk['plan']``, else the file's ``chunk['split']``) gives
    it; guard windows are left out."""
    spec = chunk['spec']
    plan = chunk.get('plan')
    f0, conf, loud = chunk_features(chunk, activations, opts)
    windows, dropped = make_windows(spec, chunk['audio'], chunk.get('audio_16k'), f0, conf,
                                    loud, opts)
    out, out_stats, splits, guard = [], [], [], 0
    for start, example in windows:
        split = plan.window_split(start // opts.hop_frames) if plan else chunk['split']
        if split is None:
            guard += 1
            continue
        serialized = records.serialize_example(example)
        out.append(((chunk['key'], chunk['path'], int(start)), serialized))
        out_stats.append(stats.example_stats(split, example, records.record_digest(serialized)))
        splits.append(split)
    return ChunkExamples(chunk['split'], out, out_stats, dropped,
                         spec.end_frame - spec.first_frame, splits, guard)


def file_record(chunk: dict[str, Any], opts: PrepareOptions) -> dict[str, Any]:
    """What the ledger learns about a file from its first chunk: ``path``, ``key``, ``split``,
    ``seconds``, ``sha256``, and for a file split by segment its eval blocks and guard
    (:func:`pipelines.splitting.describe`)."""
    from pipelines import splitting

    out = {k: chunk[k] for k in ('path', 'key', 'split', 'seconds', 'sha256')}
    plan = chunk.get('plan')
    if plan is not None and chunk['split'] == splitting.SEGMENTED:
        out.update(splitting.describe(plan, chunk['n_samples'], opts))
    return out
