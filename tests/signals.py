"""Small generated signals with known answers, for tests."""

import numpy as np


def sine(freq_hz, seconds=1.0, sample_rate=16000, amplitude=0.5):
    """A float32 sine, [n_samples]."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def peak_hz(audio, sample_rate=16000):
    """Frequency of the largest bin of a Hann-windowed magnitude spectrum of 1-D audio."""
    audio = np.asarray(audio, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.argmax(spectrum) * sample_rate / len(audio)


def band_energy(audio, lo_hz, hi_hz, sample_rate=16000):
    """Energy of 1-D audio between lo_hz and hi_hz (Hann-windowed power spectrum)."""
    audio = np.asarray(audio, dtype=np.float64)
    power = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
    return float(power[(freqs >= lo_hz) & (freqs < hi_hz)].sum())


#: Harmonic amplitudes (k = 1, 2, ...) of the instruments `melody` plays: a flute-like tone
#: (few harmonics), a bowed-string-like one (all harmonics, 1/k), a clarinet-like one (odd
#: harmonics) and a bright brass-like one.
MELODY_INSTRUMENTS = {
    'flute': (1.0, 0.35, 0.12, 0.05),
    'string': tuple(1.0 / k for k in range(1, 16)),
    'clarinet': tuple((1.0 / k if k % 2 else 0.04 / k) for k in range(1, 12)),
    'brass': tuple(1.0 / k ** 0.6 for k in range(1, 20)),
}


def melody_notes(seconds, seed=0, sample_rate=16000):
    """The notes of `melody`: held notes with vibrato (5.5 Hz, +-35 cents) and runs of fast
    notes (12 per second, stepwise), over about two octaves (MIDI 45-81, 110-880 Hz).

    Returns:
      list of (start_sample, end_sample, midi_note, vibrato_semitones), back to back.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    notes, pos = [], 0
    note = 57 + rng.integers(-5, 6)
    while pos < n:
        if rng.random() < 0.5:  # a held note with vibrato
            length, depth, run = int(rng.uniform(0.4, 0.9) * sample_rate), 0.35, [note]
        else:  # a fast run, stepwise
            length, depth = int(sample_rate / 12), 0.0
            run = list(note + np.cumsum(rng.choice([-2, -1, 1, 2], size=int(rng.integers(4, 9)))))
        for m in run:
            if pos >= n:
                break
            note = int(np.clip(m, 45, 81))
            end = min(n, pos + length)
            notes.append((pos, end, note, depth))
            pos = end
    return notes


def notes_f0(notes, n, sample_rate=16000, glide_secs=0.0):
    """f0 (Hz) at every sample of `melody_notes`' notes (vibrato included), float64 [n]; with
    `glide_secs`, a portamento of that length between notes."""
    t = np.arange(n) / sample_rate
    midi, vibrato = np.zeros(n), np.zeros(n)
    for start, end, note, depth in notes:
        midi[start:end] = note
        vibrato[start:end] = depth * np.sin(2 * np.pi * 5.5 * (t[start:end] - t[start]))
    glide = int(glide_secs * sample_rate)
    if glide > 1:
        midi = np.convolve(np.pad(midi, (glide // 2, glide - glide // 2 - 1), mode='edge'),
                           np.ones(glide) / glide, mode='valid')
    return 440.0 * 2.0 ** ((midi + vibrato - 69.0) / 12.0)


def melody(seconds, instrument='string', seed=0, sample_rate=16000):
    """A legato melody with a known f0 (`melody_notes`, 10 ms glides between notes) played by
    one of MELODY_INSTRUMENTS (harmonics above 7 kHz left out), with a little noise.

    Returns:
      (audio float32 [n], f0_hz float64 [n]): the signal and its f0 at every sample.
    """
    n = int(seconds * sample_rate)
    f0 = notes_f0(melody_notes(seconds, seed, sample_rate), n, sample_rate, glide_secs=0.01)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    audio = np.zeros(n)
    for k, a in enumerate(MELODY_INSTRUMENTS[instrument], start=1):
        audio += a * np.sin(k * phase) * (k * f0 < 7000.0)
    audio *= 0.4 / np.max(np.abs(audio))
    audio += 0.002 * np.random.default_rng(seed).standard_normal(n)
    return audio.astype(np.float32), f0


def f0_at_frames(f0_per_sample, frame_rate, n_frames, sample_rate=16000):
    """The f0 at the centres of centred frames (frame i at sample i * hop), float64
    [n_frames]; frames past the end hold the last value."""
    hop = sample_rate // frame_rate
    idx = np.minimum(np.arange(n_frames) * hop, len(f0_per_sample) - 1)
    return np.asarray(f0_per_sample)[idx]
