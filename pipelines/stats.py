"""Dataset statistics: per-example summaries that merge exactly, in any order, into the per-split
loudness, confidence and pitch statistics of the manifest.

Distributions are kept as integer histograms (exact to merge): f0 of voiced frames in 20-cent
bins, confidence in tenths, and the loudness of voiced frames in 0.25 dB bins, from which the
manifest gives percentiles (``f0_hz.p01``/``p99``, ``loudness_db.voiced_percentiles``: the
loudness at percentiles 0, 1, ..., 100, what ``ddsp-transfer`` maps an input's loudness onto)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ddsp_core.records import VOICED_CONFIDENCE

CONFIDENCE_BINS = 10
F0_HIST_MIN_HZ = 20.0  # voiced-f0 histogram: 20-cent bins from 20 Hz up to ~4.1 kHz
F0_HIST_BINS_PER_OCTAVE = 60
F0_HIST_BINS = 460
F0_RANGE_PERCENTILES = (1.0, 99.0)
LOUD_HIST_MIN_DB = -80.0  # voiced-loudness histogram: 0.25 dB bins over [-80, 40) dB (values
LOUD_HIST_BIN_DB = 0.25  # outside are counted in the first or last bin; loudness is floored
LOUD_HIST_BINS = 480  # at -80 dB by compute_loudness)
# Sums are kept as integers in units of 2**-FIXED_BITS, so that merging is exact and the
# manifest is the same whatever order the runner combines examples in.
FIXED_BITS = 32


def _fixed_sum(values: np.ndarray) -> int:
    """Sum of float values as an exact integer count of 2**-FIXED_BITS units."""
    if values.size == 0:
        return 0
    return int(np.round(values.astype(np.float64) * 2.0 ** FIXED_BITS).astype(np.int64)
               .sum(dtype=np.int64))


def _unfixed(total: int) -> float:
    return total / 2.0 ** FIXED_BITS


def example_stats(split: str, example: dict[str, np.ndarray], digest: int) -> dict:
    """Summable statistics of one example (merged by :func:`merge_split_stats`).

    Args:
        split: 'train' or 'eval'.
        example: its features (``loudness_db``, ``f0_confidence``, ``f0_hz`` are used).
        digest: :func:`ddsp_core.records.record_digest` of its serialised record.
    """
    loud = example['loudness_db'].astype(np.float64)
    conf = example['f0_confidence'].astype(np.float64)
    f0 = example['f0_hz'].astype(np.float64)
    voiced = conf >= VOICED_CONFIDENCE
    return {
        'split': split,
        'examples': 1,
        'frames': int(loud.size),
        'loud_sum': _fixed_sum(loud), 'loud_sq': _fixed_sum(loud ** 2),
        'loud_min': float(loud.min()), 'loud_max': float(loud.max()),
        'conf_sum': _fixed_sum(conf),
        'conf_hist': np.histogram(conf, bins=CONFIDENCE_BINS, range=(0.0, 1.0))[0].tolist(),
        'voiced': int(voiced.sum()),
        'voiced_loud_sum': _fixed_sum(loud[voiced]),
        'voiced_loud_sq': _fixed_sum(loud[voiced] ** 2),
        'f0_min': float(f0[voiced].min()) if voiced.any() else math.inf,
        'f0_max': float(f0[voiced].max()) if voiced.any() else -math.inf,
        'log2_f0_sum': _fixed_sum(np.log2(np.maximum(f0[voiced], 1e-3))),
        'f0_hist': _f0_histogram(f0[voiced]),
        'loud_hist': _loudness_histogram(loud[voiced]),
        'digest': int(digest),
    }


def _loudness_histogram(loud: np.ndarray) -> list[int]:
    pos = (np.asarray(loud, np.float64) - LOUD_HIST_MIN_DB) / LOUD_HIST_BIN_DB
    pos = np.clip(pos, 0, LOUD_HIST_BINS - 1e-6)
    return np.histogram(pos, bins=LOUD_HIST_BINS, range=(0, LOUD_HIST_BINS))[0].tolist()


def loudness_percentiles(hist: list[int]) -> Optional[list[float]]:
    """Loudness (dB) at percentiles 0, 1, ..., 100 of a voiced-loudness histogram (values
    spread evenly within each 0.25 dB bin, so the result is exact to a bin), or None when the
    histogram is empty."""
    counts = np.asarray(hist, np.float64)
    total = counts.sum()
    if total == 0:
        return None
    cum = np.concatenate([[0.0], np.cumsum(counts)]) / total  # the CDF at the bin edges
    q = np.linspace(0.0, 1.0, 101)
    # Bin i holds quantile q when cum[i] <= q < cum[i + 1] (an occupied bin); invert linearly.
    i = np.clip(np.searchsorted(cum, q, side='right') - 1, 0, LOUD_HIST_BINS - 1)
    share = np.maximum(counts[i] / total, 1e-300)
    values = LOUD_HIST_MIN_DB + LOUD_HIST_BIN_DB * (i + np.clip((q - cum[i]) / share, 0, 1))
    values[-1] = LOUD_HIST_MIN_DB + LOUD_HIST_BIN_DB * (np.flatnonzero(counts)[-1] + 1)
    return values.round(4).tolist()


def _f0_histogram(f0: np.ndarray) -> list[int]:
    pos = np.log2(np.maximum(f0, 1e-3) / F0_HIST_MIN_HZ) * F0_HIST_BINS_PER_OCTAVE
    pos = np.clip(pos, 0, F0_HIST_BINS - 1e-6)
    return np.histogram(pos, bins=F0_HIST_BINS, range=(0, F0_HIST_BINS))[0].tolist()


def f0_percentile(hist: list[int], q: float) -> Optional[float]:
    """The q-th percentile (0..100) of f0 (Hz) from a voiced-f0 histogram (20-cent bins)."""
    counts = np.asarray(hist, np.float64)
    if counts.sum() == 0:
        return None
    i = int(np.searchsorted(np.cumsum(counts), q / 100.0 * counts.sum()))
    return float(F0_HIST_MIN_HZ * 2.0 ** ((min(i, F0_HIST_BINS - 1) + 0.5)
                                         / F0_HIST_BINS_PER_OCTAVE))


_SUM_KEYS = ('examples', 'frames', 'loud_sum', 'loud_sq', 'conf_sum', 'voiced',
             'voiced_loud_sum', 'voiced_loud_sq', 'log2_f0_sum', 'digest')


def empty_split_stats() -> dict:
    return {'examples': 0, 'frames': 0, 'loud_sum': 0, 'loud_sq': 0, 'loud_min': math.inf,
            'loud_max': -math.inf, 'conf_sum': 0, 'conf_hist': [0] * CONFIDENCE_BINS,
            'voiced': 0, 'voiced_loud_sum': 0, 'voiced_loud_sq': 0, 'f0_min': math.inf,
            'f0_max': -math.inf, 'log2_f0_sum': 0, 'f0_hist': [0] * F0_HIST_BINS,
            'loud_hist': [0] * LOUD_HIST_BINS, 'digest': 0}


def merge_split_stats(a: dict, b: dict) -> dict:
    """Combine two per-split accumulators (commutative and associative)."""
    out = {k: a[k] + b[k] for k in _SUM_KEYS}
    out['digest'] %= 1 << 256
    out['loud_min'] = min(a['loud_min'], b['loud_min'])
    out['loud_max'] = max(a['loud_max'], b['loud_max'])
    out['f0_min'] = min(a['f0_min'], b['f0_min'])
    out['f0_max'] = max(a['f0_max'], b['f0_max'])
    for key in ('conf_hist', 'f0_hist', 'loud_hist'):
        out[key] = [x + y for x, y in zip(a[key], b[key], strict=True)]
    return out


def _mean_std(total: int, squares: int, n: int):
    if n == 0:
        return None, None
    mean = _unfixed(total) / n
    return mean, math.sqrt(max(0.0, _unfixed(squares) / n - mean * mean))


def _finite(x):
    return None if (x is None or not math.isfinite(x)) else float(x)


def summarize_split(acc: dict, example_secs: float) -> dict:
    """The manifest entry of one split from its accumulator."""
    n = acc['frames']
    mean, std = _mean_std(acc['loud_sum'], acc['loud_sq'], n)
    vmean, vstd = _mean_std(acc['voiced_loud_sum'], acc['voiced_loud_sq'], acc['voiced'])
    return {
        'examples': acc['examples'],
        'frames': n,
        'hours': acc['examples'] * example_secs / 3600.0,
        'loudness_db': {'mean': _finite(mean), 'std': _finite(std),
                        'min': _finite(acc['loud_min']), 'max': _finite(acc['loud_max']),
                        'voiced_mean': _finite(vmean), 'voiced_std': _finite(vstd),
                        'voiced_percentiles': loudness_percentiles(acc['loud_hist'])},
        'f0_confidence': {'mean': _unfixed(acc['conf_sum']) / n if n else None,
                          'voiced_fraction': acc['voiced'] / n if n else None,
                          'voiced_threshold': VOICED_CONFIDENCE,
                          'histogram': acc['conf_hist'],
                          'histogram_edges': np.linspace(0, 1, CONFIDENCE_BINS + 1).round(3)
                          .tolist()},
        'f0_hz': {'min': _finite(acc['f0_min']), 'max': _finite(acc['f0_max']),
                  'p01': f0_percentile(acc['f0_hist'], F0_RANGE_PERCENTILES[0]),
                  'p99': f0_percentile(acc['f0_hist'], F0_RANGE_PERCENTILES[1]),
                  'geometric_mean': (2.0 ** (_unfixed(acc['log2_f0_sum']) / acc['voiced'])
                                     if acc['voiced'] else None),
                  'of': f'frames with f0_confidence >= {VOICED_CONFIDENCE}'},
    }
