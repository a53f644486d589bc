"""Synthetic prepared datasets for tests, demos and benchmarks.

Writes TFRecord shards in the prepared-dataset layout (:mod:`ddsp_core.records`) plus a
``manifest.json`` that :func:`ddsp_core.records.read_manifest` accepts. The examples are harmonic
tones with a known, slowly gliding f0 and a known amplitude envelope; loudness is the frame RMS in
dB (a simple stand-in for A-weighted loudness), floored at -80 dB.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from ddsp_core import records, shards

DB_FLOOR = -80.0


def synth_example(layout, f0_hz: float = 440.0, amplitude: float = 0.3,
                  n_harmonics: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """One harmonic tone in the dataset layout.

    Args:
        layout: anything with ``sample_rate``, ``n_samples`` and ``n_frames`` (a
            :class:`ddsp_core.records.Layout` or a resolved ``DataConfig``); with
            ``audio_16k`` true, that feature is added.
        f0_hz: Fundamental at the start (Hz); it glides up by up to 3 % over the example.
        amplitude: Peak amplitude of the envelope (linear, <= 1).
        n_harmonics: Harmonics 1..n with amplitudes 1/k (those below Nyquist).
        seed: Seeds the glide and envelope shape.

    Returns:
        dict of float32 arrays: audio [n_samples], f0_hz / f0_confidence / loudness_db
        [n_frames] (and audio_16k [n_frames * 16000 / frame_rate] if the layout has it).
    """
    rng = np.random.default_rng(seed)
    n_samples, n_frames, sr = layout.n_samples, layout.n_frames, layout.sample_rate
    t = np.arange(n_samples) / sr
    glide = 1.0 + rng.uniform(0.0, 0.03) * t / max(t[-1], 1e-9)
    f0 = f0_hz * glide
    phase = 2 * np.pi * np.cumsum(f0) / sr
    envelope = amplitude * np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02 + 0.05)
    audio = np.zeros(n_samples)
    norm = sum(1.0 / k for k in range(1, n_harmonics + 1))
    for k in range(1, n_harmonics + 1):
        if k * f0.max() < sr / 2:
            audio += np.sin(k * phase) / k / norm
    audio = (audio * envelope).astype(np.float32)
    hop = n_samples // n_frames
    frame_idx = np.arange(n_frames) * hop
    frames = audio[: n_frames * hop].reshape(n_frames, hop)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    loudness = np.maximum(20 * np.log10(np.maximum(rms, 1e-12)), DB_FLOOR)
    out = {
        'audio': audio,
        'f0_hz': f0[frame_idx].astype(np.float32),
        'f0_confidence': np.full(n_frames, 0.95, np.float32),
        'loudness_db': loudness.astype(np.float32),
    }
    if getattr(layout, 'audio_16k', False):
        import soxr

        out['audio_16k'] = soxr.resample(audio, sr, 16000).astype(np.float32)[
            :layout.n_samples_16k]
    return out


def write_dataset(directory: str | os.PathLike, layout: records.Layout, n_examples: int = 8,
                  n_shards: int = 2, split: str = 'train', seed: int = 0,
                  f0_range: tuple[float, float] = (110.0, 880.0),
                  manifest: bool = True) -> list[str]:
    """Write a small prepared dataset: ``{split}-0000X-of-0000N.tfrecord`` + ``manifest.json``
    (written or updated for the split; other splits already in it are kept).

    Example i has f0 drawn uniformly in ``f0_range`` (seeded) and is written to shard
    ``i % n_shards``; with ``n_examples`` 0 the shards are empty.

    Returns:
        The shard paths, sorted.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = [directory / records.shard_name(split, i, n_shards) for i in range(n_shards)]
    writers = [tf.io.TFRecordWriter(str(p)) for p in paths]
    digests = []
    try:
        for i in range(n_examples):
            ex = synth_example(layout, f0_hz=float(rng.uniform(*f0_range)),
                               amplitude=float(rng.uniform(0.1, 0.5)), seed=seed * 100003 + i)
            serialized = records.serialize_example(ex)
            digests.append(records.record_digest(serialized))
            writers[i % n_shards].write(serialized)
    finally:
        for w in writers:
            w.close()
    if manifest:
        path = directory / records.MANIFEST
        data = json.loads(path.read_text()) if path.exists() else {}
        splits = data.get('splits', {})
        splits[split] = {'examples': n_examples, 'shards': [p.name for p in paths],
                         'digest': f'{records.combine_digests(digests):064x}',
                         records.SHARD_FILES: {p.name: shards.file_entry(str(p))
                                               for p in paths}}
        for other in records.SPLITS:
            splits.setdefault(other, {'examples': 0, 'shards': []})
        data.update(records.layout_fields(layout))
        data.update({
            'generator': 'trainer.testing.write_dataset',
            'splits': splits,
            'fingerprint': records.fingerprint(layout, {
                s: int(e.get('digest', '0'), 16) for s, e in splits.items()}),
        })
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + '\n')
    return [str(p) for p in paths]
