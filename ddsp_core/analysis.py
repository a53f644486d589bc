"""Measures of rendered audio for the quality benchmarks: room decay, tails after notes, spectral
centroid, pitch accuracy per note.

Pure numpy functions (TensorFlow only where the STFT of :mod:`ddsp_core.spectral_ops` is
reused, imported on first use). Conventions: audio is mono float ``[n_samples]``; times are in
seconds; levels in dB are ``10 log10`` of energies (or of mean powers).

- Reverberation time, RT60: the time a sound field takes to decay by 60 dB. From an impulse
  response (given, or estimated from a signal and its reverberated version by regularised
  deconvolution, :func:`estimate_ir`) it is estimated as ISO 3382 does: Schroeder's backward
  integration of the squared IR gives the energy decay curve (EDC, in dB below its start), a
  straight line is fitted to the EDC between two levels (by default -5 and -25 dB: "T20") and
  extrapolated to -60 dB. From a recording, the same fit is made to the level (in dB, short
  frames) of the sound after each note's offset, up to the next onset.
- Tail energy: the energy in a window after each note's offset (e.g. 300 ms), relative to a
  reference signal's mean power; the measure of blind dereverberation (a dry rendering has
  little energy there, a reverberant one has the room's tail).
- Spectral centroid: the amplitude-weighted mean frequency of a spectrum; of a harmonic
  distribution ``[..., n_harmonics]`` at ``f0`` it is ``f0 * sum(k a_k) / sum(a_k)``.
- Pitch accuracy per note: the f0 track's deviation (cents) from each note's true f0, over
  the note's frames after its attack. Where no tracker reaches (CREPE's top bin is 2,005.5 Hz),
  :func:`note_spectral_pitch` measures each note's pitch from its spectrum instead: the lowest
  strong peak of the note's windowed, zero-padded spectrum.
- Level per note: :func:`note_levels_db`, the mean power over each note in dB (full scale: a
  full-scale sine is -3 dB); a note whose level is at the floor was not played at all.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = [
    'audio_spectral_centroid', 'estimate_ir', 'exponential_decay_ir', 'harmonic_centroid',
    'level_db', 'note_levels_db', 'note_pitch_accuracy', 'note_spectral_pitch', 'rt60_from_ir',
    'rt60_from_offsets', 'schroeder_decay_db', 'spectral_centroid', 'tail_energy_db',
]

#: 60 dB of amplitude decay is a factor of 1000: exp(-LN_1000 * t / rt60).
LN_1000 = float(np.log(1000.0))
#: Energies below this are floored before taking a logarithm.
EPSILON = 1e-20


def _mono(audio, name: str = 'audio') -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1:
        raise ValueError(f'{name} must be mono [n_samples], got shape {audio.shape}')
    return audio


def _check_fit(fit_db: Sequence[float]) -> tuple[float, float]:
    start, end = float(fit_db[0]), float(fit_db[1])
    if not 0.0 >= start > end:
        raise ValueError(f'fit_db must be (start, end) with 0 >= start > end, got {fit_db!r}')
    return start, end


def exponential_decay_ir(rt60_s: float, sample_rate: int, seconds: Optional[float] = None,
                         seed: int = 0) -> np.ndarray:
    """A synthetic room impulse response of known RT60: white Gaussian noise under an
    exponentially decaying envelope whose amplitude falls by 60 dB in ``rt60_s`` seconds,
    normalised to unit energy, its first sample 0 (the reflections only, as the model's
    ``Reverb`` learns them: the direct path is added separately).

    Args:
        rt60_s: the reverberation time (seconds, > 0).
        sample_rate: Hz.
        seconds: length (default ``1.5 * rt60_s``: the envelope ends 90 dB down).
        seed: the noise's seed.

    Returns:
        float32 [n_samples].
    """
    if not rt60_s > 0:
        raise ValueError(f'rt60_s must be > 0, got {rt60_s!r}')
    n = int(round((1.5 * rt60_s if seconds is None else seconds) * sample_rate))
    if n < 2:
        raise ValueError(f'an impulse response of {n} samples is too short')
    t = np.arange(n) / sample_rate
    ir = np.random.default_rng(seed).standard_normal(n) * np.exp(-LN_1000 * t / rt60_s)
    ir[0] = 0.0
    return (ir / np.sqrt(np.sum(ir ** 2))).astype(np.float32)


def estimate_ir(dry, wet, n_samples: int, regularization: float = 1e-4) -> np.ndarray:
    """The impulse response ``h`` of ``n_samples`` for which ``wet`` is ``dry`` convolved with
    ``h`` (``wet`` may be cut to ``dry``'s length), by Wiener-regularised deconvolution:
    ``H = W conj(D) / (|D|^2 + regularization * max |D|^2)``. Where ``dry`` has no energy (a
    band it does not play) ``h`` has none either, which leaves the decay rate of a room's
    response intact. float64 [n_samples]."""
    dry, wet = _mono(dry, 'dry'), _mono(wet, 'wet')
    if n_samples < 1:
        raise ValueError(f'n_samples must be >= 1, got {n_samples}')
    n_fft = 1 << (len(dry) + int(n_samples) - 1).bit_length()
    d, w = np.fft.rfft(dry, n_fft), np.fft.rfft(wet, n_fft)
    power = np.abs(d) ** 2
    if power.max() <= 0:
        raise ValueError('dry is all zeros')
    h = w * np.conj(d) / (power + regularization * power.max())
    return np.fft.irfft(h, n_fft)[:int(n_samples)]


def schroeder_decay_db(ir) -> np.ndarray:
    """Schroeder's energy decay curve of an impulse response: the energy remaining after each
    sample (backward integration of ``ir**2``), in dB relative to the total; float64 [n],
    0 dB at the first sample, falling."""
    ir = _mono(ir, 'ir')
    remaining = np.cumsum((ir ** 2)[::-1])[::-1]
    if remaining[0] <= 0:
        raise ValueError('the impulse response is all zeros')
    return 10.0 * np.log10(np.maximum(remaining / remaining[0], EPSILON))


def _rt60_from_curve(curve_db: np.ndarray, rate: float, fit_db: tuple[float, float]) -> float:
    """RT60 from a falling level curve (dB, ``rate`` points per second): a least-squares line
    through the points from where it first falls to ``fit_db[0]`` to where it first falls to
    ``fit_db[1]``, extrapolated to -60 dB. NaN if the curve does not fall that far."""
    start, end = fit_db
    below_start = np.nonzero(curve_db <= start)[0]
    below_end = np.nonzero(curve_db <= end)[0]
    if not below_start.size or not below_end.size or below_end[0] - below_start[0] < 2:
        return float('nan')
    i, j = below_start[0], below_end[0]
    t = np.arange(i, j + 1) / rate
    slope = np.polyfit(t, curve_db[i:j + 1], 1)[0]
    return float(-60.0 / slope) if slope < 0 else float('nan')


def rt60_from_ir(ir, sample_rate: int, fit_db: Sequence[float] = (-5.0, -25.0)) -> float:
    """The reverberation time (seconds) of an impulse response: a line fitted to its Schroeder
    decay curve between ``fit_db`` levels (default T20: -5 to -25 dB), extrapolated to -60 dB.

    Raises:
        ValueError: an all-zero IR, or one whose decay curve does not reach ``fit_db[1]``.
    """
    fit = _check_fit(fit_db)
    rt60 = _rt60_from_curve(schroeder_decay_db(ir), float(sample_rate), fit)
    if np.isnan(rt60):
        raise ValueError(f'the impulse response does not decay from {fit[0]:g} to {fit[1]:g} dB '
                         'over enough samples to fit its decay')
    return rt60


def level_db(audio, sample_rate: int, frame_s: float = 0.01) -> np.ndarray:
    """Mean power of consecutive ``frame_s`` frames of mono audio, in dB (the last partial frame
    dropped); float64 [n_frames]."""
    audio = _mono(audio)
    hop = max(1, int(round(frame_s * sample_rate)))
    n = len(audio) // hop
    power = np.mean(audio[:n * hop].reshape(n, hop) ** 2, axis=1)
    return 10.0 * np.log10(np.maximum(power, EPSILON))


def rt60_from_offsets(audio, sample_rate: int, offsets_s: Sequence[float],
                      onsets_s: Sequence[float] = (), fit_db: Sequence[float] = (-5.0, -25.0),
                      max_s: float = 3.0, frame_s: float = 0.01) -> np.ndarray:
    """The decay rate after each note offset of a recording, as an RT60 (seconds).

    For each offset, the level (:func:`level_db`, ``frame_s`` frames) from the offset to the
    next onset (or ``max_s`` later, or the end) is taken relative to its first frame; a line is
    fitted between the ``fit_db`` levels and extrapolated to -60 dB. Where the sound does not
    fall to ``fit_db[1]`` before the next note, that note's value is NaN (take ``np.nanmedian``
    of the result).

    Args:
        audio: mono [n_samples].
        offsets_s: note offsets (seconds).
        onsets_s: note onsets (seconds); each decay ends at the first onset after its offset.
        fit_db, max_s, frame_s: see above.

    Returns:
        float64 [len(offsets_s)].
    """
    fit = _check_fit(fit_db)
    levels = level_db(audio, sample_rate, frame_s)
    rate = 1.0 / frame_s
    onsets = np.sort(np.asarray(onsets_s, dtype=np.float64))
    out = np.full(len(offsets_s), np.nan)
    for n, offset in enumerate(offsets_s):
        following = onsets[onsets > offset]
        stop = min(offset + max_s, following[0] if following.size else np.inf)
        first, last = int(np.floor(offset * rate)), int(np.floor(stop * rate))
        segment = levels[first:min(last, len(levels))]
        if len(segment) < 3:
            continue
        out[n] = _rt60_from_curve(segment - segment[0], rate, fit)
    return out


def tail_energy_db(audio, sample_rate: int, offsets_s: Sequence[float], window_s: float = 0.3,
                   onsets_s: Sequence[float] = (), reference=None) -> float:
    """Energy in the ``window_s`` after each note offset, summed over the notes, relative to
    the energy a signal of the ``reference``'s mean power (default: ``audio``'s own) would have
    over the same windows; dB. Each window ends early at the next onset; windows past the end
    of the audio are cut there.

    A dry note that stops gives a very negative value; a room's tail raises it. Compare two
    signals against one reference (e.g. the dry truth) to compare their tails.

    Raises:
        ValueError: no window has a sample (no offsets, or all past the end), or a silent
            reference.
    """
    audio = _mono(audio)
    ref = audio if reference is None else _mono(reference, 'reference')
    ref_power = float(np.mean(ref ** 2)) if len(ref) else 0.0
    if ref_power <= 0:
        raise ValueError('the reference is silent')
    onsets = np.sort(np.asarray(onsets_s, dtype=np.float64))
    energy, count = 0.0, 0
    for offset in offsets_s:
        following = onsets[onsets > offset]
        stop = min(offset + window_s, following[0] if following.size else np.inf)
        i = int(round(offset * sample_rate))
        j = min(int(round(stop * sample_rate)), len(audio))
        if j > i:
            energy += float(np.sum(audio[i:j] ** 2))
            count += j - i
    if count == 0:
        raise ValueError('no note offset has a window inside the audio')
    return float(10.0 * np.log10(max(energy / (count * ref_power), EPSILON)))


def spectral_centroid(magnitudes, frequencies) -> np.ndarray:
    """The amplitude-weighted mean frequency of spectra: ``sum(f * a) / sum(a)`` over the last
    axis; NaN where all amplitudes are 0.

    Args:
        magnitudes: [..., n_bins] non-negative amplitudes.
        frequencies: [..., n_bins] (or broadcastable) their frequencies (Hz).
    """
    a = np.asarray(magnitudes, dtype=np.float64)
    if np.any(a < 0):
        raise ValueError('magnitudes must be >= 0')
    f = np.broadcast_to(np.asarray(frequencies, dtype=np.float64), a.shape)
    total = np.sum(a, axis=-1)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(total > 0, np.sum(a * f, axis=-1) / total, np.nan)


def harmonic_centroid(harmonic_distribution, f0_hz=None) -> np.ndarray:
    """Spectral centroid of a harmonic distribution ``[..., n_harmonics]`` (amplitudes of
    harmonics 1..n): in Hz at ``f0_hz`` (``[...]``), or, without ``f0_hz``, in harmonic
    numbers (1.0: all energy in the fundamental)."""
    a = np.asarray(harmonic_distribution, dtype=np.float64)
    k = np.arange(1, a.shape[-1] + 1, dtype=np.float64)
    centroid = spectral_centroid(a, k)
    return centroid if f0_hz is None else centroid * np.asarray(f0_hz, dtype=np.float64)


def audio_spectral_centroid(audio, sample_rate: int, frame_size: int = 2048,
                            overlap: float = 0.75) -> np.ndarray:
    """Spectral centroid (Hz) of each STFT frame of mono audio (the framing of
    :func:`ddsp_core.spectral_ops.stft_np`); NaN for silent frames. float64 [n_frames]."""
    from ddsp_core.spectral_ops import fft_length, stft_np

    mags = np.abs(stft_np(_mono(audio).astype(np.float32), frame_size, overlap))
    freqs = np.fft.rfftfreq(fft_length(frame_size), 1.0 / sample_rate)
    return spectral_centroid(mags, freqs)


def note_pitch_accuracy(f0_hz, frame_rate: float, notes_f0_hz: Sequence[float],
                        onsets_s: Sequence[float], offsets_s: Sequence[float],
                        tolerance_cents: float = 50.0, skip_s: float = 0.05) -> dict:
    """How closely an f0 track follows each note's true pitch.

    Frame i of ``f0_hz`` is at ``i / frame_rate`` seconds. For each note, the frames from
    ``skip_s`` after its onset (past the attack) to its offset are compared with its true f0;
    unvoiced frames (f0 <= 0) count as misses.

    Returns:
        ``{'median_cents': [n_notes] median signed error (cents; NaN for a note with no voiced
        frame), 'accuracy': [n_notes] fraction of the note's frames within
        ``tolerance_cents``, 'frames': [n_notes] frames compared}`` (float64 arrays; a note
        with no frame in the track has accuracy NaN).
    """
    f0 = np.asarray(f0_hz, dtype=np.float64)
    if f0.ndim != 1:
        raise ValueError(f'f0_hz must be [n_frames], got shape {f0.shape}')
    if not len(notes_f0_hz) == len(onsets_s) == len(offsets_s):
        raise ValueError('notes_f0_hz, onsets_s and offsets_s must have one value per note')
    n_notes = len(notes_f0_hz)
    median, accuracy, frames = (np.full(n_notes, np.nan) for _ in range(3))
    notes = zip(notes_f0_hz, onsets_s, offsets_s, strict=True)
    for n, (true_hz, onset, offset) in enumerate(notes):
        first = int(np.ceil((onset + skip_s) * frame_rate))
        last = min(int(np.floor(offset * frame_rate)), len(f0) - 1)
        frames[n] = max(0, last - first + 1)
        if frames[n] == 0:
            continue
        track = f0[first:last + 1]
        voiced = track > 0
        cents = np.full(len(track), np.inf)
        cents[voiced] = 1200.0 * np.log2(track[voiced] / float(true_hz))
        if voiced.any():
            median[n] = float(np.median(cents[voiced]))
        accuracy[n] = float(np.mean(np.abs(cents) <= tolerance_cents))
    return {'median_cents': median, 'accuracy': accuracy, 'frames': frames}


def _note_span(onset_s: float, offset_s: float, sample_rate: int, n_samples: int,
               skip_s: float = 0.0) -> tuple[int, int]:
    start = max(0, int(np.ceil((onset_s + skip_s) * sample_rate)))
    return start, max(start, min(int(np.floor(offset_s * sample_rate)), n_samples))


def note_levels_db(audio, sample_rate: int, onsets_s: Sequence[float],
                   offsets_s: Sequence[float]) -> np.ndarray:
    """Mean power of the audio from each note's onset to its offset, in dB (:data:`EPSILON`
    floors a silent note at -200 dB; a note outside the audio is NaN). float64 [n_notes]."""
    audio = _mono(audio)
    if len(onsets_s) != len(offsets_s):
        raise ValueError('onsets_s and offsets_s must have one value per note')
    out = np.full(len(onsets_s), np.nan)
    for n, (onset, offset) in enumerate(zip(onsets_s, offsets_s, strict=True)):
        i, j = _note_span(onset, offset, sample_rate, len(audio))
        if j > i:
            out[n] = 10.0 * np.log10(max(float(np.mean(audio[i:j] ** 2)), EPSILON))
    return out


def note_spectral_pitch(audio, sample_rate: int, onsets_s: Sequence[float],
                        offsets_s: Sequence[float], skip_s: float = 0.05,
                        threshold_db: float = -30.0, min_hz: float = 30.0,
                        harmonic_cents: float = 25.0) -> np.ndarray:
    """Each note's pitch (Hz) from its spectrum, for pitches no f0 tracker covers.

    The note's samples from ``skip_s`` after its onset (past the attack) to its offset are
    Hann-windowed and zero-padded to 8x their length (at least 2**15 points); every local
    maximum of the magnitude spectrum above ``min_hz`` is refined by a parabola through the
    three log magnitudes around it. The pitch is the lowest of those maxima that lies within
    ``threshold_db`` of the strongest one and of whose frequency the strongest is a whole
    multiple (within ``harmonic_cents``): the bottom of the harmonic series the strongest
    partial belongs to. A peak of noise below the fundamental is not read as the pitch. For a
    harmonic tone whose fundamental is no more than ``-threshold_db`` below its strongest
    partial this is the fundamental; where the fundamental is weaker it reads a harmonic above
    (an octave or more high), which shows as a large error.

    Returns:
        float64 [n_notes]; NaN for a note shorter than 32 samples after ``skip_s`` or silent.
    """
    audio = _mono(audio)
    if len(onsets_s) != len(offsets_s):
        raise ValueError('onsets_s and offsets_s must have one value per note')
    if threshold_db >= 0:
        raise ValueError(f'threshold_db must be negative, got {threshold_db}')
    if harmonic_cents <= 0:
        raise ValueError(f'harmonic_cents must be positive, got {harmonic_cents}')
    out = np.full(len(onsets_s), np.nan)
    for n, (onset, offset) in enumerate(zip(onsets_s, offsets_s, strict=True)):
        i, j = _note_span(onset, offset, sample_rate, len(audio), skip_s)
        if j - i < 32:
            continue
        segment = audio[i:j] * np.hanning(j - i)
        size = 1 << int(np.ceil(np.log2(max(8 * (j - i), 1 << 15))))
        mags = np.abs(np.fft.rfft(segment, size))
        first = int(np.ceil(min_hz * size / sample_rate))
        if first + 2 >= len(mags) or mags[first:].max() <= 0:
            continue
        db = 20.0 * np.log10(np.maximum(mags, 1e-12))
        floor = db[first:].max() + threshold_db
        centre = db[first:-1]
        peaks = np.flatnonzero((centre >= db[first - 1:-2]) & (centre > db[first + 1:])
                               & (centre >= floor)) + first
        a, b, c = db[peaks - 1], db[peaks], db[peaks + 1]
        curvature = a - 2.0 * b + c
        shift = np.where(curvature < 0, 0.5 * (a - c) / np.where(curvature < 0, curvature, -1.0),
                         0.0)
        hz = (peaks + shift) * sample_rate / size
        strongest = hz[int(np.argmax(b))]
        multiple = np.maximum(np.round(strongest / hz), 1.0)
        in_series = np.abs(1200.0 * np.log2(strongest / (multiple * hz))) <= harmonic_cents
        out[n] = hz[int(np.flatnonzero(in_series)[0])]  # the strongest itself is in it
    return out
