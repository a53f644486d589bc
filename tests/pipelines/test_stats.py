"""Per-split statistics: per-example summaries merge exactly, in any order, into the manifest's."""

import functools
import math
import random

import numpy as np
import pytest

from pipelines import stats


def _stats(loud, conf, f0, digest=0, split='train'):
    ex = {'audio': np.zeros(10, np.float32), 'loudness_db': np.asarray(loud, np.float32),
          'f0_confidence': np.asarray(conf, np.float32), 'f0_hz': np.asarray(f0, np.float32)}
    assert len(loud) == len(conf) == len(f0)
    out = stats.example_stats(split, ex, digest)
    assert out.pop('split') == split
    return out


def _merge_all(items, start=None):
    return functools.reduce(stats.merge_split_stats, items, start or stats.empty_split_stats())


def test_split_stats_merge_is_order_independent_and_exact():
    a = _stats([-10, -20], [0.9, 0.1], [440, 0])
    b = _stats([-30, -40], [0.8, 0.7], [220, 880])
    e = stats.empty_split_stats()
    ab = stats.merge_split_stats(stats.merge_split_stats(e, a), b)
    ba = stats.merge_split_stats(stats.merge_split_stats(e, b), a)
    assert ab == ba
    s = stats.summarize_split(ab, 4.0)
    assert s['examples'] == 2 and s['frames'] == 4
    assert s['hours'] == pytest.approx(8.0 / 3600)
    assert s['loudness_db']['mean'] == pytest.approx(-25.0)
    assert s['loudness_db']['std'] == pytest.approx(np.std([-10, -20, -30, -40]))
    assert (s['loudness_db']['min'], s['loudness_db']['max']) == (-40.0, -10.0)
    # voiced frames (confidence >= 0.5): -10, -30, -40
    assert s['loudness_db']['voiced_mean'] == pytest.approx(np.mean([-10, -30, -40]))
    assert s['loudness_db']['voiced_std'] == pytest.approx(np.std([-10, -30, -40]))
    assert s['f0_hz']['min'] == pytest.approx(220) and s['f0_hz']['max'] == pytest.approx(880)
    assert s['f0_hz']['p01'] == pytest.approx(220, rel=0.006)
    assert s['f0_hz']['p99'] == pytest.approx(880, rel=0.006)
    assert s['f0_hz']['geometric_mean'] == pytest.approx((440 * 220 * 880) ** (1 / 3))
    assert s['f0_confidence']['voiced_fraction'] == pytest.approx(0.75)
    assert s['f0_confidence']['mean'] == pytest.approx(0.625)
    assert sum(s['f0_confidence']['histogram']) == 4
    assert len(s['f0_confidence']['histogram_edges']) == stats.CONFIDENCE_BINS + 1
    # voiced loudness percentiles 0..100 (to the 0.25 dB bin): -40, -30, -10
    pct = s['loudness_db']['voiced_percentiles']
    assert len(pct) == 101 and pct == sorted(pct)
    assert pct[0] == pytest.approx(-40.0) and pct[100] == pytest.approx(-9.75)
    assert pct[50] == pytest.approx(-30.0, abs=stats.LOUD_HIST_BIN_DB)


def test_merging_many_float_examples_gives_identical_results_in_any_order_and_grouping():
    """Floating-point sums would differ in the last bits between orders; the fixed-point sums
    must not, so that the manifest is the same however the runner combines examples."""
    rng = np.random.default_rng(3)
    items = []
    for i in range(40):
        n = 37
        loud = rng.uniform(-80, 0, n)
        conf = rng.uniform(0, 1, n)
        f0 = rng.uniform(50, 2000, n)
        items.append(_stats(loud, conf, f0, digest=int(rng.integers(1 << 62)) << 194 | i))
    reference = _merge_all(items)
    shuffled = list(items)
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert _merge_all(shuffled) == reference
        # tree-shaped merges (as Beam's combiners do, in arbitrary partitions)
        cut = 1 + seed * 7
        left, right = _merge_all(shuffled[:cut]), _merge_all(shuffled[cut:])
        assert stats.merge_split_stats(right, left) == reference
        assert stats.summarize_split(stats.merge_split_stats(left, right), 4.0) == \
            stats.summarize_split(reference, 4.0)
    # the digest is a sum mod 2**256, independent of order
    assert reference['digest'] == sum(it['digest'] for it in items) % (1 << 256)
    s = stats.summarize_split(reference, 4.0)
    assert s['frames'] == 40 * 37


def test_fixed_point_means_match_float_means():
    rng = np.random.default_rng(0)
    loud = rng.uniform(-80, 0, 1000).astype(np.float32)
    conf = rng.uniform(0, 1, 1000).astype(np.float32)
    f0 = rng.uniform(50, 2000, 1000).astype(np.float32)
    s = stats.summarize_split(_merge_all([_stats(loud, conf, f0)]), 4.0)
    assert s['loudness_db']['mean'] == pytest.approx(np.mean(loud.astype(np.float64)), abs=1e-8)
    assert s['loudness_db']['std'] == pytest.approx(np.std(loud.astype(np.float64)), rel=1e-7)
    assert s['f0_confidence']['mean'] == pytest.approx(np.mean(conf.astype(np.float64)),
                                                       abs=1e-8)


def test_empty_split_summarises_to_nones_not_nan():
    s = stats.summarize_split(stats.empty_split_stats(), 4.0)
    assert s['examples'] == s['frames'] == 0
    assert s['loudness_db'] == {'mean': None, 'std': None, 'min': None, 'max': None,
                                'voiced_mean': None, 'voiced_std': None,
                                'voiced_percentiles': None}
    assert s['f0_hz']['min'] is None and s['f0_hz']['p01'] is None
    assert s['f0_hz']['geometric_mean'] is None
    assert s['f0_confidence']['mean'] is None
    # merging with an empty accumulator changes nothing
    a = _stats([-10.0], [0.9], [440.0], digest=5)
    assert stats.merge_split_stats(stats.empty_split_stats(), a) == \
        stats.merge_split_stats(a, stats.empty_split_stats())
    merged = stats.merge_split_stats(stats.empty_split_stats(), a)
    assert {k: merged[k] for k in a} == a


def test_unvoiced_example_has_no_f0_range():
    a = _stats([-30, -35], [0.1, 0.2], [0, 0])
    s = stats.summarize_split(_merge_all([a]), 4.0)
    assert s['f0_hz']['min'] is None and s['f0_hz']['max'] is None
    assert s['f0_confidence']['voiced_fraction'] == 0.0
    assert s['loudness_db']['voiced_mean'] is None
    assert math.isfinite(s['loudness_db']['mean'])


@pytest.mark.parametrize('hz', [55.0, 220.0, 440.0, 1234.5, 3000.0])
def test_f0_percentile_of_one_pitch_is_that_pitch_to_20_cents(hz):
    hist = stats._f0_histogram(np.full(10, hz))
    for q in (1.0, 50.0, 99.0):
        assert stats.f0_percentile(hist, q) == pytest.approx(hz, rel=2 ** (10 / 1200) - 1)
    assert stats.f0_percentile([0] * stats.F0_HIST_BINS, 50.0) is None


def test_voiced_loudness_percentiles_match_numpys_to_a_bin_and_merge_exactly():
    rng = np.random.default_rng(5)
    n = 5000
    parts = [(rng.normal(-25, 7, n), rng.uniform(0, 1, n)) for _ in range(6)]
    items = [_stats(np.clip(loud, -80, 10), conf, np.full(n, 440.0)) for loud, conf in parts]
    merged = _merge_all(items)
    assert merged == _merge_all(items[::-1])  # integer histograms: any order, same bins
    loud = np.concatenate([np.clip(lo, -80, 10)[c.astype(np.float32) >= stats.VOICED_CONFIDENCE]
                           for lo, c in parts])
    pct = stats.summarize_split(merged, 4.0)['loudness_db']['voiced_percentiles']
    # 0.25 dB bins: each percentile within a bin of numpy's (which interpolates between samples)
    np.testing.assert_allclose(pct[1:100], np.percentile(loud.astype(np.float32), range(1, 100)),
                               atol=stats.LOUD_HIST_BIN_DB)
    assert pct[0] <= loud.min() and pct[100] >= loud.max()
    one = stats.loudness_percentiles(stats._loudness_histogram(np.full(7, -12.3)))
    assert one[0] == -12.5 and one[50] == pytest.approx(-12.375) and one[100] == -12.25
    assert stats.loudness_percentiles([0] * stats.LOUD_HIST_BINS) is None
    # outside the histogram's range: counted in the end bins
    edges = stats.loudness_percentiles(stats._loudness_histogram(np.array([-200.0, 100.0])))
    assert edges[0] == stats.LOUD_HIST_MIN_DB
    assert edges[100] == stats.LOUD_HIST_MIN_DB + stats.LOUD_HIST_BINS * stats.LOUD_HIST_BIN_DB
