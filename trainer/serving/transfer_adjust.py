"""ddsp-transfer's adjustment of an input's controls to the training data: the training data's
statistics from the dataset manifest (:class:`TrainingStats`), the octave shift, the loudness
quantile mapping and the attenuation of unconfident quiet frames (:func:`adjust`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from ddsp_core import records
from ddsp_core.records import VOICED_CONFIDENCE
from trainer.serving.transfer_analysis import Features

#: Loudness floor of compute_loudness (dB).
DB_FLOOR = -80.0
#: Auto-adjust defaults.
QUIET_DB = 20.0
CONFIDENCE_SMOOTHING_SECS = 0.1
MAX_OCTAVES = 4


@dataclasses.dataclass(frozen=True)
class TrainingStats:
    """What auto-adjust matches an input to, read from the dataset's manifest.

    Attributes:
        f0_range_hz: (low, high) robust pitch range of voiced training frames (1st-99th
            percentile), or None.
        f0_mean_hz: their geometric mean pitch, or None.
        loudness_percentiles: loudness (dB) of voiced training frames at percentiles 0..100,
            or None (older manifests).
        loudness_mean, loudness_std: mean and std of voiced (else all) training frames' dB.
        voiced_threshold: the confidence from which a frame counts as voiced.
    """

    f0_range_hz: Optional[tuple[float, float]]
    f0_mean_hz: Optional[float]
    loudness_percentiles: Optional[tuple[float, ...]]
    loudness_mean: Optional[float]
    loudness_std: Optional[float]
    voiced_threshold: float = VOICED_CONFIDENCE

    @classmethod
    def from_manifest(cls, manifest: Optional[records.Manifest]) -> Optional[TrainingStats]:
        """The statistics of a manifest's train split, or None when it has none."""
        if not manifest:
            return None
        f0 = manifest.statistic('splits', 'train', 'f0_hz') or {}
        loud = manifest.statistic('splits', 'train', 'loudness_db') or {}
        conf = manifest.statistic('splits', 'train', 'f0_confidence') or {}
        rng = manifest.statistic('f0_range_hz') or [f0.get('p01'), f0.get('p99')]
        f0_range = None
        if rng and len(rng) == 2 and all(isinstance(v, (int, float)) and v > 0 for v in rng):
            f0_range = (float(min(rng)), float(max(rng)))
        mean_hz = f0.get('geometric_mean')
        if not isinstance(mean_hz, (int, float)) or mean_hz <= 0:
            mean_hz = math.sqrt(f0_range[0] * f0_range[1]) if f0_range else None
        pct = loud.get('voiced_percentiles')
        pct = tuple(float(v) for v in pct) if isinstance(pct, list) and len(pct) == 101 else None
        # Older manifests kept the mean and std of every frame at the top level.
        mean = loud.get('voiced_mean', manifest.statistic('mean_loudness_db'))
        std = loud.get('voiced_std', manifest.statistic('std_loudness_db'))
        if mean is None:
            mean = manifest.statistic('mean_loudness_db')
            std = manifest.statistic('std_loudness_db')
        if f0_range is None and pct is None and mean is None:
            return None
        return cls(f0_range, float(mean_hz) if mean_hz else None, pct,
                   None if mean is None else float(mean), None if std is None else float(std),
                   float(conf.get('voiced_threshold') or VOICED_CONFIDENCE))


def _box_smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over ``width`` frames, renormalised at the edges."""
    if width <= 1 or len(x) == 0:
        return np.asarray(x, np.float64)
    kernel = np.ones(width)
    total = np.convolve(np.asarray(x, np.float64), kernel, mode='same')
    count = np.convolve(np.ones(len(x)), kernel, mode='same')
    return total / count


def activity(loudness_db: np.ndarray, confidence: np.ndarray, frame_rate: int,
             threshold: float = VOICED_CONFIDENCE) -> np.ndarray:
    """How much each frame is a note, float64 [n_frames]: (smoothed confidence / threshold)^2
    times the frame's level above the -80 dB floor relative to the voiced frames' mean level.
    About 1 for a voiced frame at the input's typical level; below 1 for unconfident or quiet
    frames, 0 for silence."""
    loud = np.asarray(loudness_db, np.float64)
    conf = _box_smooth(confidence, int(round(CONFIDENCE_SMOOTHING_SECS * frame_rate)))
    voiced = np.asarray(confidence) >= threshold
    reference = float(np.mean(loud[voiced])) if voiced.any() else float(np.mean(loud))
    level = np.maximum(loud - DB_FLOOR, 0.0) / max(reference - DB_FLOOR, 1e-3)
    return (conf / threshold) ** 2 * level


def octave_shift(f0_hz: np.ndarray, f0_range_hz: tuple[float, float],
                 f0_mean_hz: Optional[float] = None, max_octaves: int = MAX_OCTAVES) -> int:
    """The whole number of octaves that puts the most of ``f0_hz`` (the input's note frames)
    inside ``f0_range_hz``; ties go to the shift that brings the geometric mean nearest
    ``f0_mean_hz`` (the range's centre if None), then to the smallest shift."""
    f0 = np.asarray(f0_hz, np.float64)
    f0 = f0[f0 > 0]
    if f0.size == 0:
        return 0
    lo, hi = f0_range_hz
    centre = math.log2(f0_mean_hz) if f0_mean_hz else 0.5 * (math.log2(lo) + math.log2(hi))
    mean = float(np.mean(np.log2(f0)))
    best = None
    for k in range(-max_octaves, max_octaves + 1):
        shifted = f0 * 2.0 ** k
        inside = int(np.count_nonzero((shifted >= lo) & (shifted <= hi)))
        key = (-inside, round(abs(mean + k - centre), 9), abs(k))
        if best is None or key < best[0]:
            best = (key, k)
    return best[1]


def quantile_map(x: np.ndarray, source_percentiles: np.ndarray,
                 target_percentiles: np.ndarray, floor: float = DB_FLOOR) -> np.ndarray:
    """Map values so that the source distribution (its percentiles 1..99) lands on the target's.

    Piecewise linear through the percentile pairs, with slope 1 above the 99th; below the 1st
    it runs linearly to (``floor``, ``floor``), so silence stays silent. Monotone.
    """
    src = np.asarray(source_percentiles, np.float64)[1:100]
    dst = np.maximum.accumulate(np.asarray(target_percentiles, np.float64)[1:100])
    # Strictly increasing knots (ties in the source are a flat stretch of its distribution).
    src = np.maximum.accumulate(src) + 1e-6 * np.arange(len(src))
    if src[0] > floor:
        src = np.concatenate([[floor], src])
        dst = np.concatenate([[min(floor, dst[0])], dst])
    x = np.asarray(x, np.float64)
    y = np.interp(x, src, dst)
    above = x > src[-1]
    y[above] = dst[-1] + (x[above] - src[-1])
    below = x < src[0]
    y[below] = dst[0] + (x[below] - src[0])
    return y


@dataclasses.dataclass
class Adjustment:
    """What :func:`adjust` did.

    Attributes:
        octaves: auto-adjust's octave shift.
        pitch_shift: the total shift applied to f0, in semitones (octaves * 12 + manual).
        loudness_mapping: 'quantiles', 'mean_std' or 'none'.
        loudness_shift: the manual loudness shift (dB).
        median_change_db: the median change of voiced frames' loudness (mapping + shift).
        attenuated_fraction: fraction of frames attenuated as unconfident and quiet.
        notes: why something was skipped.
    """

    octaves: int = 0
    pitch_shift: float = 0.0
    loudness_mapping: str = 'none'
    loudness_shift: float = 0.0
    median_change_db: float = 0.0
    attenuated_fraction: float = 0.0
    notes: list = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        parts = [f'pitch {self.pitch_shift:+.1f} semitones'
                 + (f' (auto {self.octaves:+d} octave{"s" if abs(self.octaves) != 1 else ""})'
                    if self.octaves else '')]
        loud = f'loudness {self.median_change_db:+.1f} dB median'
        if self.loudness_mapping != 'none':
            loud += f' ({self.loudness_mapping.replace("_", "/")} mapping)'
        parts.append(loud)
        if self.attenuated_fraction:
            parts.append(f'{100 * self.attenuated_fraction:.0f}% of frames attenuated')
        return ', '.join(parts) + ''.join(f'; {n}' for n in self.notes)


def adjust(features: Features, stats: Optional[TrainingStats], auto_adjust: bool = True,
           pitch_shift: float = 0.0, loudness_shift: float = 0.0, quiet_db: float = QUIET_DB
           ) -> tuple[np.ndarray, np.ndarray, Adjustment]:
    """The controls the model renders: the input's f0 and loudness, adjusted.

    With ``auto_adjust`` and the training data's ``stats``: f0 shifts by :func:`octave_shift`
    (of the input's note frames, :func:`activity` >= 1); the loudness of every frame goes
    through :func:`quantile_map` from the input's voiced frames' percentiles to the training
    data's (or a mean/std match when the manifest has no percentiles); frames with activity
    below 1 lose up to ``quiet_db`` dB (all of it at activity 0). Then f0 is multiplied by
    2^(pitch_shift / 12) and ``loudness_shift`` dB are added. Loudness stays >= -80 dB.

    Returns:
        (f0_hz, loudness_db) float32 [n_frames], and the :class:`Adjustment`.
    """
    f0 = features.f0_hz.astype(np.float64)
    loud = features.loudness_db.astype(np.float64)
    conf = features.f0_confidence
    info = Adjustment(loudness_shift=float(loudness_shift))
    if auto_adjust:
        threshold = stats.voiced_threshold if stats else VOICED_CONFIDENCE
        voiced = conf >= threshold
        act = activity(loud, conf, features.frame_rate, threshold)
        notes = voiced & (act >= 1.0)
        if stats is None:
            info.notes.append('auto-adjust skipped: the model has no dataset statistics')
        elif not voiced.any():
            info.notes.append('auto-adjust skipped: no voiced frame in the input')
        else:
            if stats.f0_range_hz is not None:
                info.octaves = octave_shift(f0[notes] if notes.any() else f0[voiced],
                                            stats.f0_range_hz, stats.f0_mean_hz)
                f0 = f0 * 2.0 ** info.octaves
            if stats.loudness_percentiles is not None:
                source = np.percentile(loud[voiced], np.arange(101))
                loud = quantile_map(loud, source, np.asarray(stats.loudness_percentiles))
                info.loudness_mapping = 'quantiles'
            elif stats.loudness_mean is not None:
                mean, std = float(np.mean(loud[voiced])), float(np.std(loud[voiced]))
                scale = (stats.loudness_std / std) if (stats.loudness_std and std > 1e-6) \
                    else 1.0
                loud = stats.loudness_mean + (loud - mean) * scale
                info.loudness_mapping = 'mean_std'
            quiet = act < 1.0
            loud = loud - quiet_db * np.clip(1.0 - act, 0.0, 1.0) * quiet
            info.attenuated_fraction = float(np.mean(quiet & (act < 0.999)))
    info.pitch_shift = 12.0 * info.octaves + float(pitch_shift)
    f0 = f0 * 2.0 ** (float(pitch_shift) / 12.0)
    loud = np.maximum(loud + float(loudness_shift), DB_FLOOR)
    voiced = conf >= VOICED_CONFIDENCE
    sel = voiced if voiced.any() else np.ones_like(voiced)
    info.median_change_db = float(np.median(loud[sel] - features.loudness_db[sel]))
    return f0.astype(np.float32), loud.astype(np.float32), info
