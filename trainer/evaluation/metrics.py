"""Resynthesis metrics: how close is a model's resynthesis to the audio it came from?

The measures of the reference DDSP library (`ddsp/training/metrics.py`), written for numpy
arrays of one example at a time, plus an :func:`aggregate` that pools examples:

========================  =====================================================================
key                       meaning (lower is better unless said)
========================  =====================================================================
``f0_l1_semitones``       mean |f0 of the original - f0 of the resynthesis| in semitones (MIDI)
                          over the *voiced frames* (below) where both f0 are > 0
                          (reference: ``f0_dist_conf_thresh``, ``F0CrepeMetrics``' ``f0_dist``)
``f0_outlier_ratio``      per example 1.0 if its ``f0_l1_semitones`` exceeds 12 semitones (or its
                          resynthesis has no f0 > 0 on any voiced frame), else 0.0; aggregated,
                          the fraction of such examples (reference: ``F0CrepeMetrics``'
                          ``outlier_ratio``, threshold ``OUTLIER_MIDI_THRESH``)
``raw_pitch_accuracy``    fraction of voiced frames whose resynthesis f0 is within 50 cents of the
                          original's (higher is better; mir_eval's ``raw_pitch_accuracy``, as
                          the reference's ``F0Metrics`` uses it)
``raw_chroma_accuracy``   the same with octave errors folded away (higher is better; mir_eval's
                          ``raw_chroma_accuracy``)
``loudness_l1_db``        mean |loudness of the original - of the resynthesis| in dB over all
                          frames (A-weighted, ``compute_loudness``; reference:
                          ``LoudnessMetrics``' ``loudness_db``)
``spectral_distance``     multi-scale spectral L1 distance, the value of
                          ``ddsp_core.losses.SpectralLoss`` with L1 on magnitudes and log
                          magnitudes (the training loss of ``trainer.model.autoencoder``)
``voiced_frames``         frames where CREPE's confidence on the ORIGINAL is >= 0.85 and its f0 is
                          > 0 (reference: ``MIN_F0_CONFIDENCE``); the denominator of the
                          accuracies
``f0_l1_frames``          voiced frames where the resynthesis' f0 is also > 0 (the denominator of
                          ``f0_l1_semitones``)
``n_frames``              frames compared (after trimming to the shorter signal)
``n_samples``             samples compared by ``spectral_distance``
========================  =====================================================================

Only frames where the original is confidently pitched count for the f0 metrics: the original's
confidence decides, never the resynthesis' (as in the reference), so a resynthesis cannot hide a
wrong pitch behind a low confidence.

**No voiced frame.** When the original has no voiced frame (silence, noise, CREPE unsure
throughout) the f0 metrics ``f0_l1_semitones``, ``f0_outlier_ratio``, ``raw_pitch_accuracy``
and ``raw_chroma_accuracy`` are NaN, meaning "undefined: there is no pitch to compare" (the
reference discards such examples too); ``voiced_frames`` is 0 and :func:`aggregate` gives them
no weight. ``f0_l1_semitones`` is also NaN when the resynthesis has no f0 > 0 on any voiced
frame (``f0_l1_frames`` 0); such an example is an outlier. Nothing raises for these cases.

**Lengths.** Arrays of different lengths are trimmed to the shorter (frame-rate arrays to the
smaller number of frames, audio to the smaller number of samples), as the reference's
``l1_distance`` does; a model's resynthesis may be a few samples or frames shorter or longer.

**Bad input.** Empty or non-finite (NaN, inf) arrays, arrays that are not 1-D (singleton axes,
as in [1, n] or [n, 1], are dropped) and non-positive rates raise ``ValueError`` naming the
argument.

Everything here is numpy on top of ``ddsp_core``; TensorFlow is loaded only when CREPE runs or
``ddsp_core.spectral_ops`` is first needed (loudness, spectral distance), not on import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np

from ddsp_core import records

__all__ = [
    'DEFAULT_FFT_SIZES', 'F0_METRIC_KEYS', 'METRIC_KEYS', 'MIN_F0_CONFIDENCE',
    'OUTLIER_SEMITONES', 'RPA_CENT_TOLERANCE', 'aggregate', 'f0_l1_semitones',
    'f0_outlier_ratio', 'loudness_l1_db', 'raw_chroma_accuracy', 'raw_pitch_accuracy',
    'resynthesis_metrics', 'spectral_distance', 'voiced_mask',
]

#: CREPE confidence on the original from which a frame counts as voiced (the reference's
#: ``MIN_F0_CONFIDENCE``).
MIN_F0_CONFIDENCE = 0.85
#: An example whose mean f0 error exceeds this many semitones is an outlier (the reference's
#: ``OUTLIER_MIDI_THRESH``).
OUTLIER_SEMITONES = 12.0
#: A frame's pitch is correct within this many cents (mir_eval's default, the reference's
#: ``rpa_tolerance``).
RPA_CENT_TOLERANCE = 50.0
#: FFT sizes of :func:`spectral_distance` (those of ``SpectralLoss`` and ``model.fft_sizes``).
DEFAULT_FFT_SIZES = (2048, 1024, 512, 256, 128, 64)
#: Overlap of the spectral distance's STFT frames (``SpectralLoss``'s).
_SPECTRAL_OVERLAP = 0.75
#: ``ddsp_core`` ``safe_log``'s floor: log magnitudes of bins <= 0 are log(1e-5).
_LOG_EPS = 1e-5
_CREPE_SAMPLE_RATE = records.CREPE_SAMPLE_RATE

#: The f0 metrics (NaN without a voiced frame).
F0_METRIC_KEYS = ('f0_l1_semitones', 'f0_outlier_ratio', 'raw_pitch_accuracy',
                  'raw_chroma_accuracy')
#: Every key of :func:`resynthesis_metrics`' result.
METRIC_KEYS = F0_METRIC_KEYS + ('loudness_l1_db', 'spectral_distance', 'voiced_frames',
                                'f0_l1_frames', 'n_frames', 'n_samples')
_COUNT_KEYS = ('voiced_frames', 'f0_l1_frames', 'n_frames', 'n_samples')


# ------------------------------------------------------------------------------------------------
# Input checks.
# ------------------------------------------------------------------------------------------------
def _vector(value, name: str) -> np.ndarray:
    """A non-empty, finite, 1-D float64 copy of `value` (singleton axes dropped)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f'{name} must be a numeric array, got {type(value).__name__} '
                         f'({error}).') from None
    if array.ndim > 1:
        array = np.squeeze(array)
    if array.ndim != 1:
        raise ValueError(f'{name} must be 1-D [n] (or [1, n] / [n, 1]), got shape '
                         f'{np.shape(value)}.')
    if array.size == 0:
        raise ValueError(f'{name} is empty.')
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f'{name} has {int(bad.sum())} non-finite value(s) (NaN or inf), the '
                         f'first at index {int(np.argmax(bad))}.')
    return array


def _positive(value, name: str):
    """`value` unchanged if it is a positive finite number, else ValueError."""
    try:
        ok = not isinstance(value, bool) and math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f'{name} must be a positive number, got {value!r}.')
    return value


def _trim(*arrays: np.ndarray) -> list[np.ndarray]:
    n = min(a.shape[0] for a in arrays)
    return [a[:n] for a in arrays]


# ------------------------------------------------------------------------------------------------
# Pitch.
# ------------------------------------------------------------------------------------------------
def voiced_mask(f0_original, confidence_original,
                confidence_threshold: float = MIN_F0_CONFIDENCE) -> np.ndarray:
    """The frames the f0 metrics are computed over.

    Args:
      f0_original: f0 tracked on the original, Hz [n_frames].
      confidence_original: CREPE's confidence of that f0, in [0, 1] [n_frames].
      confidence_threshold: Smallest confidence of a voiced frame.

    Returns:
      bool [n] (n = the shorter length): confidence >= threshold and f0 > 0.
    """
    f0, conf = _trim(_vector(f0_original, 'f0_original'),
                     _vector(confidence_original, 'confidence_original'))
    return (conf >= confidence_threshold) & (f0 > 0)


def _f0_stats(f0_original, f0_resynthesis, confidence_original, confidence_threshold,
              cent_tolerance, outlier_semitones) -> dict:
    """All f0 metrics and their frame counts at once (see the module docstring)."""
    f0_ref, f0_est, conf = _trim(_vector(f0_original, 'f0_original'),
                                 _vector(f0_resynthesis, 'f0_resynthesis'),
                                 _vector(confidence_original, 'confidence_original'))
    voiced = (conf >= confidence_threshold) & (f0_ref > 0)
    both = voiced & (f0_est > 0)
    n_voiced, n_both = int(voiced.sum()), int(both.sum())
    stats = {'voiced_frames': n_voiced, 'f0_l1_frames': n_both}
    if n_voiced == 0:
        stats.update(dict.fromkeys(F0_METRIC_KEYS, math.nan))
        return stats
    # Signed pitch difference in cents on frames where both have a pitch; a resynthesis frame
    # without one (f0 <= 0) is a wrong pitch for the accuracies (as mir_eval counts it).
    cents = 1200.0 * np.log2(f0_est[both] / f0_ref[both])
    distance = np.abs(cents)
    chroma_distance = np.abs(distance - 1200.0 * np.floor(distance / 1200.0 + 0.5))
    l1 = float(np.mean(distance) / 100.0) if n_both else math.nan
    outlier = (not n_both) or l1 > outlier_semitones
    stats.update(
        f0_l1_semitones=l1,
        f0_outlier_ratio=1.0 if outlier else 0.0,
        raw_pitch_accuracy=float(np.sum(distance < cent_tolerance) / n_voiced),
        raw_chroma_accuracy=float(np.sum(chroma_distance < cent_tolerance) / n_voiced))
    return stats


def f0_l1_semitones(f0_original, f0_resynthesis, confidence_original,
                    confidence_threshold: float = MIN_F0_CONFIDENCE) -> float:
    """Mean absolute f0 difference in semitones over the original's voiced frames.

    The reference's ``f0_dist_conf_thresh``: |hz_to_midi(f0_resynthesis) - hz_to_midi(f0_original)|
    averaged over frames where the original's confidence is >= `confidence_threshold`; here
    also only where both f0 are > 0 (the reference maps 0 Hz to MIDI 0 instead).

    Args:
      f0_original: f0 tracked on the original, Hz [n_frames].
      f0_resynthesis: f0 tracked on the resynthesis, Hz [n_frames].
      confidence_original: CREPE's confidence on the original, in [0, 1] [n_frames].
      confidence_threshold: Smallest confidence of a voiced frame.

    Returns:
      Semitones (>= 0); NaN without a voiced frame where both f0 are > 0. Arrays of different
      lengths are trimmed to the shortest.
    """
    return _f0_stats(f0_original, f0_resynthesis, confidence_original, confidence_threshold,
                     RPA_CENT_TOLERANCE, OUTLIER_SEMITONES)['f0_l1_semitones']


def f0_outlier_ratio(f0_original, f0_resynthesis, confidence_original,
                     confidence_threshold: float = MIN_F0_CONFIDENCE,
                     outlier_semitones: float = OUTLIER_SEMITONES) -> float:
    """Whether this example's pitch is an outlier: 1.0 or 0.0 (NaN without a voiced frame).

    The reference's rule (``F0CrepeMetrics.update_state``) is per example, not per frame: an
    example whose original has a confident frame is an outlier when its mean f0 error
    (:func:`f0_l1_semitones`) exceeds `outlier_semitones` (12, an octave), or when the error is
    undefined because the resynthesis has no pitch on any voiced frame ("untrackable pitch
    content"). Its ``outlier_ratio`` is the fraction of such examples, which :func:`aggregate`
    computes from these per-example values; an example without a voiced frame is left out of it
    (NaN here), as the reference discards it.

    Args:
      f0_original, f0_resynthesis: Hz [n_frames].
      confidence_original: CREPE's confidence on the original, in [0, 1] [n_frames].
      confidence_threshold: Smallest confidence of a voiced frame.
      outlier_semitones: Largest mean error of a non-outlier, in semitones.
    """
    return _f0_stats(f0_original, f0_resynthesis, confidence_original, confidence_threshold,
                     RPA_CENT_TOLERANCE, outlier_semitones)['f0_outlier_ratio']


def raw_pitch_accuracy(f0_original, f0_resynthesis, confidence_original,
                       cent_tolerance: float = RPA_CENT_TOLERANCE,
                       confidence_threshold: float = MIN_F0_CONFIDENCE) -> float:
    """Fraction of voiced frames whose resynthesis pitch is within `cent_tolerance` cents.

    mir_eval's ``melody.raw_pitch_accuracy`` with the original's voiced frames as the reference
    voicing (and as the estimate's, as the reference's ``F0Metrics`` passes them): correct when
    |1200 log2(f0_resynthesis / f0_original)| < cent_tolerance; a voiced frame where the
    resynthesis has f0 <= 0 counts as wrong.

    Args:
      f0_original, f0_resynthesis: Hz [n_frames].
      confidence_original: CREPE's confidence on the original, in [0, 1] [n_frames].
      cent_tolerance: Tolerance in cents (50: a quarter tone either side).
      confidence_threshold: Smallest confidence of a voiced frame.

    Returns:
      In [0, 1]; NaN without a voiced frame (mir_eval returns 0 there).
    """
    return _f0_stats(f0_original, f0_resynthesis, confidence_original, confidence_threshold,
                     cent_tolerance, OUTLIER_SEMITONES)['raw_pitch_accuracy']


def raw_chroma_accuracy(f0_original, f0_resynthesis, confidence_original,
                        cent_tolerance: float = RPA_CENT_TOLERANCE,
                        confidence_threshold: float = MIN_F0_CONFIDENCE) -> float:
    """:func:`raw_pitch_accuracy` with octave errors forgiven (mir_eval's
    ``melody.raw_chroma_accuracy``): the cent distance d is folded to |d - 1200 round(d / 1200)|
    (rounding halves up) before the tolerance test, so a resynthesis an octave (or two) off is
    correct.

    Returns:
      In [0, 1]; NaN without a voiced frame.
    """
    return _f0_stats(f0_original, f0_resynthesis, confidence_original, confidence_threshold,
                     cent_tolerance, OUTLIER_SEMITONES)['raw_chroma_accuracy']


# ------------------------------------------------------------------------------------------------
# Loudness and spectra.
# ------------------------------------------------------------------------------------------------
def _loudness_n_fft(sample_rate: float, n_fft: Optional[int]) -> int:
    if n_fft is None:  # 32 ms, as ddsp-prepare computes the datasets' loudness_db
        return records.loudness_n_fft(sample_rate)
    if isinstance(n_fft, bool) or int(n_fft) != n_fft or n_fft < 1:
        raise ValueError(f'loudness_n_fft must be a positive integer, got {n_fft!r}.')
    return int(n_fft)


def _loudness(audio: np.ndarray, sample_rate, frame_rate, n_fft: int) -> np.ndarray:
    from ddsp_core import spectral_ops

    return np.asarray(spectral_ops.compute_loudness(
        audio.astype(np.float32), sample_rate=sample_rate, frame_rate=frame_rate, n_fft=n_fft,
        use_tf=False, padding='center'), np.float64)


def loudness_l1_db(original, resynthesis, sample_rate: int, frame_rate: int,
                   n_fft: Optional[int] = None) -> float:
    """Mean absolute loudness difference in dB (the reference's ``LoudnessMetrics``).

    Loudness is ``ddsp_core.spectral_ops.compute_loudness`` (A-weighted power, dB, floored at
    -80 dB, 'center' framing, one frame every sample_rate // frame_rate samples) of each signal.

    Args:
      original, resynthesis: float audio [n_samples] at `sample_rate` (lengths may differ: the
        loudness frames are trimmed to the shorter).
      sample_rate: Hz.
      frame_rate: Loudness frames per second.
      n_fft: Loudness window in samples; default 32 ms (512 at 16 kHz), as ``ddsp-prepare``
        computes ``loudness_db``.

    Returns:
      dB (>= 0).
    """
    original, resynthesis = _vector(original, 'original'), _vector(resynthesis, 'resynthesis')
    sample_rate = _positive(sample_rate, 'sample_rate')
    frame_rate = _positive(frame_rate, 'frame_rate')
    n_fft = _loudness_n_fft(sample_rate, n_fft)
    a, b = _trim(_loudness(original, sample_rate, frame_rate, n_fft),
                 _loudness(resynthesis, sample_rate, frame_rate, n_fft))
    return float(np.mean(np.abs(a - b)))


def _check_fft_sizes(fft_sizes) -> tuple[int, ...]:
    try:
        given = list(fft_sizes)
        sizes = tuple(int(s) for s in given)
        ok = bool(sizes) and all(not isinstance(g, bool) and g == s and s >= 4
                                 for g, s in zip(given, sizes, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f'fft_sizes must be a non-empty list of integers >= 4, got '
                         f'{fft_sizes!r}.')
    return sizes


def spectral_distance(original, resynthesis, fft_sizes: Sequence[int] = DEFAULT_FFT_SIZES,
                      mag_weight: float = 1.0, logmag_weight: float = 1.0) -> float:
    """Multi-scale spectral L1 distance: ``SpectralLoss`` of the two signals, in numpy.

    For each FFT size N: S = |STFT| with a periodic Hann window of N samples, hop N / 4,
    zero-padded at the end (``spectral_ops.stft_np``, the framing of ``SpectralLoss``), and the
    term mag_weight * mean|S_orig - S_resyn| + logmag_weight * mean|log S_orig - log S_resyn|
    (means over frames and bins; log with ``safe_log``'s floor, bins <= 0 -> log 1e-5); the
    distance is the sum of the terms over the sizes. With the defaults it equals
    ``SpectralLoss(fft_sizes, mag_weight=1, logmag_weight=1)`` (the model's training loss) of
    the pair as a batch of one.

    Args:
      original, resynthesis: float audio [n_samples] (lengths may differ: both are trimmed to
        the shorter).
      fft_sizes: FFT (window) sizes of the scales, samples.
      mag_weight, logmag_weight: Weights of the magnitude and log-magnitude terms.

    Returns:
      Non-negative float (0 for identical signals); unitless (magnitudes of [-1, 1] audio and
      natural logs of them).
    """
    from ddsp_core import spectral_ops

    original, resynthesis = _trim(_vector(original, 'original'),
                                  _vector(resynthesis, 'resynthesis'))
    sizes = _check_fft_sizes(fft_sizes)
    mag_weight, logmag_weight = float(mag_weight), float(logmag_weight)
    total = 0.0
    for size in sizes:
        mags = [np.abs(spectral_ops.stft_np(x.astype(np.float32), frame_size=size,
                                            overlap=_SPECTRAL_OVERLAP, pad_end=True))
                .astype(np.float64) for x in (original, resynthesis)]
        if mag_weight > 0:
            total += mag_weight * float(np.mean(np.abs(mags[0] - mags[1])))
        if logmag_weight > 0:
            logs = [np.log(np.where(m <= 0.0, _LOG_EPS, m)) for m in mags]
            total += logmag_weight * float(np.mean(np.abs(logs[0] - logs[1])))
    return total


# ------------------------------------------------------------------------------------------------
# One call per example.
# ------------------------------------------------------------------------------------------------
def _to_crepe_rate(audio: np.ndarray, sample_rate: float) -> np.ndarray:
    if sample_rate == _CREPE_SAMPLE_RATE:
        return audio.astype(np.float32)
    import soxr

    return soxr.resample(audio.astype(np.float32), sample_rate, _CREPE_SAMPLE_RATE,
                         quality='HQ').astype(np.float32)


def _track_f0(audio, sample_rate, frame_rate, capacity, viterbi, precision='float32'):
    from ddsp_core import f0 as crepe

    return crepe.predict_f0(_to_crepe_rate(audio, sample_rate), frame_rate, viterbi=viterbi,
                            padding='center', model_capacity=capacity, precision=precision)


def resynthesis_metrics(original, resynthesis, sample_rate: int, frame_rate: int,
                        crepe_capacity: str = 'full', f0_original=None, confidence_original=None,
                        fft_sizes: Sequence[int] = DEFAULT_FFT_SIZES,
                        loudness_n_fft: Optional[int] = None,
                        confidence_threshold: float = MIN_F0_CONFIDENCE,
                        viterbi: bool = True, crepe_precision: str = 'float32') -> dict:
    """Every metric of one resynthesised example (keys: :data:`METRIC_KEYS`, see the module
    docstring).

    Pitch is tracked with CREPE (``ddsp_core.f0.predict_f0``, Viterbi decoding and 'center'
    framing as ``ddsp-prepare`` and the reference's ``F0CrepeMetrics``) on the resynthesis and,
    unless `f0_original` and `confidence_original` are given (e.g. the dataset's ``f0_hz`` and
    ``f0_confidence`` of the example), on the original. Audio at another rate than 16 kHz is
    resampled to 16 kHz for CREPE (soxr); loudness and spectra use it at `sample_rate`.

    Args:
      original: the example's audio, float [n_samples] at `sample_rate`.
      resynthesis: the model's audio for it, float [n_samples'] at `sample_rate` (n_samples'
        may differ from n_samples: frames and samples are trimmed to the shorter).
      sample_rate: Hz.
      frame_rate: Frames per second of the f0 and loudness features.
      crepe_capacity: CREPE model ('tiny' ... 'full'); use the one the dataset's f0 was
        tracked with, so that both signals are tracked alike.
      f0_original: optional f0 of the original, Hz [n_frames] (at `frame_rate`).
      confidence_original: its CREPE confidence, [0, 1] [n_frames]; given with `f0_original`.
      fft_sizes: FFT sizes of ``spectral_distance``.
      loudness_n_fft: Loudness window (default 32 ms, see :func:`loudness_l1_db`).
      confidence_threshold: Smallest CREPE confidence on the original of a voiced frame.
      viterbi: CREPE's Viterbi decoding (as the reference's metrics and the datasets).
      crepe_precision: CREPE's number format: 'float32', 'bfloat16' or 'auto'
        (``ddsp_core.f0.resolve_crepe_precision``).

    Returns:
      ``{key: float}`` for the metrics and ``{key: int}`` for the counts ``voiced_frames``,
      ``f0_l1_frames``, ``n_frames`` (frames compared: the fewest of the two loudness tracks
      and the f0 tracks) and ``n_samples``. The f0 metrics are NaN when the original has no
      voiced frame.

    Raises:
      ValueError: empty or non-finite audio, f0 or confidence; only one of `f0_original` and
        `confidence_original`; non-positive rates (the message names the argument).
    """
    original, resynthesis = _vector(original, 'original'), _vector(resynthesis, 'resynthesis')
    sample_rate = _positive(sample_rate, 'sample_rate')
    frame_rate = _positive(frame_rate, 'frame_rate')
    if (f0_original is None) != (confidence_original is None):
        raise ValueError('f0_original and confidence_original go together: give both (e.g. the '
                         "dataset's f0_hz and f0_confidence) or neither (CREPE tracks the "
                         'original).')
    n_fft = _loudness_n_fft(sample_rate, loudness_n_fft)
    if f0_original is None:
        f0_ref, conf_ref = _track_f0(original, sample_rate, frame_rate, crepe_capacity, viterbi,
                                     crepe_precision)
    else:
        f0_ref = _vector(f0_original, 'f0_original')
        conf_ref = _vector(confidence_original, 'confidence_original')
    f0_est, _ = _track_f0(resynthesis, sample_rate, frame_rate, crepe_capacity, viterbi,
                          crepe_precision)
    loud_ref = _loudness(original, sample_rate, frame_rate, n_fft)
    loud_est = _loudness(resynthesis, sample_rate, frame_rate, n_fft)
    f0_ref, conf_ref, f0_est, loud_ref, loud_est = _trim(
        np.asarray(f0_ref, np.float64), np.asarray(conf_ref, np.float64),
        np.asarray(f0_est, np.float64), loud_ref, loud_est)

    result = _f0_stats(f0_ref, f0_est, conf_ref, confidence_threshold, RPA_CENT_TOLERANCE,
                       OUTLIER_SEMITONES)
    result['loudness_l1_db'] = float(np.mean(np.abs(loud_ref - loud_est)))
    result['spectral_distance'] = spectral_distance(original, resynthesis, fft_sizes)
    result['n_frames'] = int(f0_ref.shape[0])
    result['n_samples'] = int(min(original.shape[0], resynthesis.shape[0]))
    return {key: result[key] for key in METRIC_KEYS}


# ------------------------------------------------------------------------------------------------
# Many examples.
# ------------------------------------------------------------------------------------------------
def _number(row: Mapping, key: str, index: int) -> float:
    if key not in row:
        raise ValueError(f'per_example[{index}] has no {key!r}; rows must hold the keys of '
                         f'resynthesis_metrics ({", ".join(METRIC_KEYS)}).')
    value = row[key]
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f'per_example[{index}][{key!r}] must be a number, got '
                         f'{value!r}.') from None


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    use = np.isfinite(values) & (weights > 0)
    total = float(weights[use].sum())
    if total == 0:
        return math.nan
    return float(np.sum(values[use] * weights[use]) / total)


def aggregate(per_example: Sequence[Mapping]) -> dict:
    """Pools per-example metrics (rows of :func:`resynthesis_metrics`) into one set.

    Per-frame means are pooled over frames, so the result is the metric of all frames together
    (a longer or more voiced example weighs more), not a mean of means:

    - ``raw_pitch_accuracy``, ``raw_chroma_accuracy``: weighted by ``voiced_frames`` (= the
      fraction of all voiced frames that are correct).
    - ``f0_l1_semitones``: weighted by ``f0_l1_frames``, over the examples that are not outliers
      (as the reference's ``f0_dist`` leaves outliers out; they are counted by
      ``f0_outlier_ratio`` instead).
    - ``f0_outlier_ratio``: the fraction of outlier examples among those with a voiced frame
      (one vote per example, as the reference's ``outlier_ratio``).
    - ``loudness_l1_db``: weighted by ``n_frames``.
    - ``spectral_distance``: weighted by ``n_samples`` (for examples of one length, as in a
      dataset split, the plain mean, which is ``SpectralLoss`` of them as one batch).
    - ``voiced_frames``, ``f0_l1_frames``, ``n_frames``, ``n_samples``: sums; ``examples``: the
      number of rows.

    NaN values (no voiced frame) carry no weight; a metric with no weight at all is NaN. Other
    keys of the rows (an ``id``) are ignored.

    Args:
      per_example: dicts with (at least) the keys :data:`METRIC_KEYS`.

    Returns:
      ``{key: float}`` for the metrics, ``{key: int}`` for the counts and ``examples``.

    Raises:
      ValueError: no rows, or a row without a metric key or with a non-numeric value.
    """
    rows = list(per_example)
    if not rows:
        raise ValueError('per_example is empty: nothing to aggregate.')
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f'per_example[{i}] must be a dict of metrics, got '
                             f'{type(row).__name__}.')
    column = {key: np.array([_number(row, key, i) for i, row in enumerate(rows)], np.float64)
              for key in METRIC_KEYS}
    counts = {key: np.nan_to_num(column[key], nan=0.0) for key in _COUNT_KEYS}
    outlier = column['f0_outlier_ratio']
    not_outlier = np.where(outlier == 0.0, counts['f0_l1_frames'], 0.0)
    known_outlier = outlier[np.isfinite(outlier)]
    result = {
        'f0_l1_semitones': _weighted_mean(column['f0_l1_semitones'], not_outlier),
        'f0_outlier_ratio': (float(np.mean(known_outlier)) if known_outlier.size
                             else math.nan),
        'raw_pitch_accuracy': _weighted_mean(column['raw_pitch_accuracy'],
                                             counts['voiced_frames']),
        'raw_chroma_accuracy': _weighted_mean(column['raw_chroma_accuracy'],
                                              counts['voiced_frames']),
        'loudness_l1_db': _weighted_mean(column['loudness_l1_db'], counts['n_frames']),
        'spectral_distance': _weighted_mean(column['spectral_distance'], counts['n_samples']),
    }
    result.update({key: int(counts[key].sum()) for key in _COUNT_KEYS})
    result['examples'] = len(rows)
    return result
