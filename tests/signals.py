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
