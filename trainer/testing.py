"""Synthetic prepared datasets for tests, demos and benchmarks.

Writes TFRecord shards with the prepared-dataset schema (float lists ``audio`` [n_samples],
``f0_hz``, ``f0_confidence``, ``loudness_db`` [n_frames]) plus a ``manifest.json``. The examples
are harmonic tones with a known, slowly gliding f0 and a known amplitude envelope; loudness is
the frame RMS in dB (a simple stand-in for A-weighted loudness), floored at -80 dB.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from trainer.config import DataConfig

DB_FLOOR = -80.0


def synth_example(config: DataConfig, f0_hz: float = 440.0, amplitude: float = 0.3,
                  n_harmonics: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """One harmonic tone in the dataset layout.

    Args:
        config: Sample rate, frame rate and example length.
        f0_hz: Fundamental at the start (Hz); it glides up by up to 3 % over the example.
        amplitude: Peak amplitude of the envelope (linear, <= 1).
        n_harmonics: Harmonics 1..n with amplitudes 1/k (those below Nyquist).
        seed: Seeds the glide and envelope shape.

    Returns:
        dict of float32 arrays: audio [n_samples], f0_hz / f0_confidence / loudness_db
        [n_frames].
    """
    rng = np.random.default_rng(seed)
    n_samples, n_frames, sr = config.n_samples, config.n_frames, config.sample_rate
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
    return {
        'audio': audio,
        'f0_hz': f0[frame_idx].astype(np.float32),
        'f0_confidence': np.full(n_frames, 0.95, np.float32),
        'loudness_db': loudness.astype(np.float32),
    }


def to_tf_example(example: dict[str, np.ndarray]) -> tf.train.Example:
    """Wrap a dict of 1-D float arrays as a tf.train.Example of float lists."""
    feature = {k: tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(v).ravel()))
               for k, v in example.items()}
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_dataset(directory: str | os.PathLike, config: DataConfig, n_examples: int = 8,
                  n_shards: int = 2, split: str = 'train', seed: int = 0,
                  f0_range: tuple[float, float] = (110.0, 880.0)) -> list[str]:
    """Write a small prepared dataset: ``{split}-0000X-of-0000N.tfrecord`` + ``manifest.json``.

    Example i has f0 drawn uniformly in ``f0_range`` (seeded) and is written to shard
    ``i % n_shards``.

    Returns:
        The shard paths, sorted.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = [directory / f'{split}-{i:05d}-of-{n_shards:05d}.tfrecord' for i in range(n_shards)]
    writers = [tf.io.TFRecordWriter(str(p)) for p in paths]
    digest = hashlib.sha256()
    try:
        for i in range(n_examples):
            ex = synth_example(config, f0_hz=float(rng.uniform(*f0_range)),
                               amplitude=float(rng.uniform(0.1, 0.5)), seed=seed * 100003 + i)
            serialized = to_tf_example(ex).SerializeToString()
            digest.update(serialized)
            writers[i % n_shards].write(serialized)
    finally:
        for w in writers:
            w.close()
    manifest = {
        'schema_version': 1,
        'fingerprint': digest.hexdigest()[:16],
        'sample_rate': config.sample_rate,
        'frame_rate': config.frame_rate,
        'example_secs': config.example_secs,
        'splits': {split: {'examples': n_examples, 'shards': n_shards}},
        'generator': 'trainer.testing.write_dataset',
    }
    (directory / 'manifest.json').write_text(json.dumps(manifest, indent=2) + '\n')
    return [str(p) for p in paths]
