"""Instrument-like audio for demos and benchmarks, generated with numpy (no downloads).

A melody of notes, each a harmonic tone with a bowed-string-like spectrum (harmonic amplitudes
falling as 1/k with a formant bump), delayed vibrato, attack/release envelopes and a little
breath noise, written as 16-bit wav files.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import soundfile as sf

# A-minor-ish melody in MIDI notes, violin range.
MELODY = [69, 71, 72, 74, 76, 74, 72, 71, 69, 67, 69, 72, 76, 79, 77, 76]


def render_melody(seconds: float, sample_rate: int = 16000, seed: int = 0,
                  n_harmonics: int = 30, note_secs: float = 0.5,
                  transpose: float = 0.0) -> np.ndarray:
    """Renders a mono melody, float32 [n_samples] in [-1, 1], ``transpose`` semitones from
    :data:`MELODY`."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    note_len = int(note_secs * sample_rate)
    offset = int(rng.integers(len(MELODY)))
    notes = np.array([MELODY[(offset + i // note_len) % len(MELODY)] for i in range(n)],
                     dtype=np.float64)
    # Smooth note transitions (portamento) with a short moving average.
    kernel = np.hanning(int(0.03 * sample_rate)) + 1e-9
    notes = np.convolve(notes, kernel / kernel.sum(), mode='same')
    note_phase = (np.arange(n) % note_len) / sample_rate
    vibrato = 0.25 * np.clip(note_phase / 0.2 - 0.5, 0.0, 1.0) * np.sin(2 * np.pi * 5.5 * t)
    f0 = 440.0 * 2.0 ** ((notes + transpose + vibrato - 69.0) / 12.0)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    k = np.arange(1, n_harmonics + 1)
    weights = (1.0 / k) * (1.0 + 0.8 * np.exp(-0.5 * ((k - 4) / 1.5) ** 2))
    audio = np.zeros(n)
    for i, w in enumerate(weights, start=1):
        audible = f0 * i < sample_rate / 2
        audio += np.where(audible, w * np.sin(i * phase), 0.0)
    attack = np.clip(note_phase / 0.05, 0.0, 1.0)
    release = np.clip((note_secs - note_phase) / 0.08, 0.0, 1.0)
    envelope = attack * release * (0.6 + 0.4 * np.sin(2 * np.pi * 0.3 * t + seed) ** 2)
    audio = audio * envelope + 0.003 * rng.standard_normal(n) * envelope
    audio = 0.8 * audio / max(np.max(np.abs(audio)), 1e-9)
    return audio.astype(np.float32)


def write_dataset_audio(out_dir: str, durations_secs, sample_rate: int = 16000,
                        prefix: str = 'melody') -> list[str]:
    """Writes one wav per duration; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, secs in enumerate(durations_secs):
        path = os.path.join(out_dir, f'{prefix}_{i:03d}.wav')
        sf.write(path, render_melody(secs, sample_rate, seed=i), sample_rate, subtype='PCM_16')
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out_dir', required=True)
    parser.add_argument('--seconds', type=float, nargs='+', default=[8.0, 8.0, 6.0])
    parser.add_argument('--sample_rate', type=int, default=16000)
    args = parser.parse_args(argv)
    for path in write_dataset_audio(args.out_dir, args.seconds, args.sample_rate):
        print(path)


if __name__ == '__main__':
    main()
