"""Resynthesis metrics (trainer.evaluation.metrics) on generated tones with known answers."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from trainer.evaluation import metrics

SR = 16000
FPS = 250
CREPE = 'tiny'
SEMITONE = 2.0 ** (1.0 / 12.0)


def harmonic_tone(f0_hz, seconds=0.5, sample_rate=SR, amplitude=0.5, n_harmonics=8):
    """A float32 tone with harmonics of amplitude 1/k (below Nyquist), peak `amplitude`."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = sum(np.sin(2 * np.pi * f0_hz * k * t) / k for k in range(1, n_harmonics + 1)
            if f0_hz * k < sample_rate / 2)
    return (amplitude * x / np.max(np.abs(x))).astype(np.float32)


def measure(original, resynthesis, **kwargs):
    return metrics.resynthesis_metrics(original, resynthesis, SR, FPS, crepe_capacity=CREPE,
                                       **kwargs)


@pytest.fixture(scope='module')
def tone():
    return harmonic_tone(220.0)


# ------------------------------------------------------------------------------------------------
# resynthesis_metrics on audio (CREPE tiny).
# ------------------------------------------------------------------------------------------------
def test_identical_audio_is_perfect(tone):
    result = measure(tone, tone)
    assert list(result) == list(metrics.METRIC_KEYS)
    assert result['f0_l1_semitones'] == 0.0
    assert result['f0_outlier_ratio'] == 0.0
    assert result['raw_pitch_accuracy'] == 1.0
    assert result['raw_chroma_accuracy'] == 1.0
    assert result['loudness_l1_db'] == 0.0
    assert result['spectral_distance'] == 0.0
    assert result['n_frames'] == 1 + len(tone) // (SR // FPS)
    assert result['n_samples'] == len(tone)
    # CREPE is confident on (nearly) all of a steady tone.
    assert result['n_frames'] * 0.8 < result['voiced_frames'] <= result['n_frames']
    assert result['f0_l1_frames'] == result['voiced_frames']
    for key in metrics.F0_METRIC_KEYS + ('loudness_l1_db', 'spectral_distance'):
        assert isinstance(result[key], float), key
    for key in ('voiced_frames', 'f0_l1_frames', 'n_frames', 'n_samples'):
        assert isinstance(result[key], int), key


def test_one_semitone_up(tone):
    result = measure(tone, harmonic_tone(220.0 * SEMITONE))
    assert result['f0_l1_semitones'] == pytest.approx(1.0, abs=0.1)
    assert result['raw_pitch_accuracy'] == 0.0
    assert result['raw_chroma_accuracy'] == 0.0
    assert result['f0_outlier_ratio'] == 0.0
    assert result['spectral_distance'] > 0.0


def test_octave_up_is_a_chroma_match(tone):
    result = measure(tone, harmonic_tone(440.0))
    assert result['raw_pitch_accuracy'] <= 0.05
    assert result['raw_chroma_accuracy'] >= 0.95
    assert result['f0_l1_semitones'] == pytest.approx(12.0, abs=0.3)


def test_two_octaves_up_is_an_outlier(tone):
    result = measure(tone, harmonic_tone(880.0))
    assert result['f0_l1_semitones'] == pytest.approx(24.0, abs=0.5)
    assert result['f0_outlier_ratio'] == 1.0
    assert result['raw_chroma_accuracy'] >= 0.95


def test_6_db_quieter(tone):
    quieter = tone * np.float32(0.501)  # 20 log10(0.501) = -6.0 dB
    assert metrics.loudness_l1_db(tone, quieter, SR, FPS) == pytest.approx(6.0, abs=0.3)
    result = measure(tone, quieter)
    assert result['loudness_l1_db'] == pytest.approx(6.0, abs=0.3)
    assert result['raw_pitch_accuracy'] == 1.0  # CREPE normalises its frames: same pitch
    assert result['f0_l1_semitones'] < 0.01


def test_unconfident_original_frames_are_excluded(tone):
    # The original is silent in its second half, where CREPE is unconfident (its f0 there
    # wanders off to ~2 kHz); the resynthesis plays a fifth there. Were those frames counted,
    # the f0 error would be ~17 semitones on half the frames.
    original = np.concatenate([tone, np.zeros_like(tone)])
    resynthesis = np.concatenate([tone, harmonic_tone(330.0)])
    result = measure(original, resynthesis)
    assert result['n_frames'] == 1 + len(original) // (SR // FPS)
    assert result['voiced_frames'] <= 0.55 * result['n_frames']
    assert result['voiced_frames'] >= 0.4 * result['n_frames']
    assert result['f0_l1_semitones'] < 0.6
    assert result['raw_pitch_accuracy'] > 0.9
    assert result['f0_outlier_ratio'] == 0.0


def test_silent_original_gives_nan_f0_metrics_not_an_error(tone):
    result = measure(np.zeros_like(tone), tone)
    assert result['voiced_frames'] == 0
    for key in metrics.F0_METRIC_KEYS:
        assert math.isnan(result[key]), key
    assert math.isfinite(result['loudness_l1_db']) and result['loudness_l1_db'] > 10
    assert math.isfinite(result['spectral_distance'])


def test_given_f0_of_the_original_is_used(tone):
    tracked = measure(tone, tone)
    from ddsp_core.f0 import predict_f0

    f0, confidence = predict_f0(tone, FPS, viterbi=True, model_capacity=CREPE)
    given = measure(tone, tone, f0_original=f0, confidence_original=confidence)
    assert given == tracked
    # A dataset that says the original is unconfident throughout: no voiced frame.
    unsure = measure(tone, tone, f0_original=f0, confidence_original=np.zeros_like(confidence))
    assert unsure['voiced_frames'] == 0 and math.isnan(unsure['raw_pitch_accuracy'])
    # A given f0 an octave below what CREPE hears in the resynthesis.
    low = measure(tone, tone, f0_original=f0 / 2, confidence_original=confidence)
    assert low['raw_pitch_accuracy'] == 0.0 and low['raw_chroma_accuracy'] == 1.0


def test_resynthesis_of_another_length_is_trimmed(tone):
    shorter = tone[:-300]  # 300 samples: 4 frames fewer at 64 samples per frame
    result = measure(tone, shorter)
    assert result['n_samples'] == len(shorter)
    assert result['n_frames'] == 1 + len(shorter) // (SR // FPS)
    assert result['raw_pitch_accuracy'] > 0.95
    # Fewer frames of f0 from the dataset than the audio has: trimmed to those.
    f0 = np.full(50, 220.0, np.float32)
    given = measure(tone, tone, f0_original=f0, confidence_original=np.ones(50, np.float32))
    assert given['n_frames'] == 50 and given['voiced_frames'] == 50


def test_other_sample_rates_are_resampled_for_crepe():
    sample_rate = 32000
    tone = harmonic_tone(220.0, sample_rate=sample_rate)
    up = harmonic_tone(220.0 * SEMITONE, sample_rate=sample_rate)
    result = metrics.resynthesis_metrics(tone, up, sample_rate, FPS, crepe_capacity=CREPE)
    assert result['n_frames'] == 1 + len(tone) // (sample_rate // FPS)
    assert result['voiced_frames'] > 0.8 * result['n_frames']
    assert result['f0_l1_semitones'] == pytest.approx(1.0, abs=0.1)
    # CREPE hears the resynthesis at its true pitch (the audio is resampled to 16 kHz for it).
    f0 = np.full(result['n_frames'], 220.0)
    given = metrics.resynthesis_metrics(tone, tone, sample_rate, FPS, crepe_capacity=CREPE,
                                        f0_original=f0, confidence_original=np.ones_like(f0))
    assert given['raw_pitch_accuracy'] > 0.9


@pytest.mark.parametrize('kwargs, name', [
    (dict(original=np.zeros(0, np.float32)), 'original'),
    (dict(resynthesis=np.array([0.0, np.nan, 0.0], np.float32)), 'resynthesis'),
    (dict(resynthesis=np.full(800, np.inf, np.float32)), 'resynthesis'),
    (dict(original=np.zeros((2, 800), np.float32)), 'original'),
    (dict(sample_rate=0), 'sample_rate'),
    (dict(frame_rate=-250), 'frame_rate'),
    (dict(f0_original=np.ones(10)), 'confidence_original'),
    (dict(f0_original=np.full(10, np.nan), confidence_original=np.ones(10)), 'f0_original'),
    (dict(f0_original=np.ones(10), confidence_original=np.zeros(0)), 'confidence_original'),
])
def test_bad_input_is_a_value_error_naming_the_argument(kwargs, name):
    args = dict(original=np.zeros(800, np.float32), resynthesis=np.zeros(800, np.float32),
                sample_rate=SR, frame_rate=FPS, crepe_capacity=CREPE)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        metrics.resynthesis_metrics(**args)


# ------------------------------------------------------------------------------------------------
# The f0 metrics on given f0 tracks (exact values).
# ------------------------------------------------------------------------------------------------
def test_f0_metrics_by_hand():
    ref = np.array([100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0])
    cents = np.array([0.0, 49.0, 51.0, 100.0, 1200.0 + 49.0, -2400.0 + 30.0, 0.0, 0.0])
    est = ref * 2.0 ** (cents / 1200.0)
    est[6] = 0.0  # the resynthesis has no pitch here: wrong, and left out of the L1
    conf = np.array([0.9, 0.85, 1.0, 0.9, 0.9, 0.9, 0.9, 0.5])  # frame 7 is not voiced
    # Voiced: frames 0-6. Within 50 cents: 0 and 1. Chroma: also 4 and 5.
    assert metrics.voiced_mask(ref, conf).tolist() == [True] * 7 + [False]
    assert metrics.raw_pitch_accuracy(ref, est, conf) == pytest.approx(2 / 7)
    assert metrics.raw_chroma_accuracy(ref, est, conf) == pytest.approx(4 / 7)
    l1 = (0 + 49 + 51 + 100 + 1249 + 2370) / 6 / 100  # semitones over frames 0-5
    assert metrics.f0_l1_semitones(ref, est, conf) == pytest.approx(l1)
    assert metrics.f0_outlier_ratio(ref, est, conf) == 0.0
    assert metrics.raw_pitch_accuracy(ref, est, conf, cent_tolerance=60) == pytest.approx(3 / 7)


def test_unconfident_frames_are_excluded_exactly():
    ref = np.array([200.0, 200.0, 200.0, 200.0])
    est = np.array([200.0, 200.0 * SEMITONE, 1900.0, 30.0])  # frames 2, 3 are wildly off
    conf = np.array([0.99, 0.86, 0.84, 0.1])
    assert metrics.f0_l1_semitones(ref, est, conf) == pytest.approx(0.5)
    assert metrics.raw_pitch_accuracy(ref, est, conf) == pytest.approx(0.5)
    # A lower threshold lets frame 2 in.
    l1 = (0 + 1 + 12 * math.log2(1900 / 200)) / 3
    assert metrics.f0_l1_semitones(ref, est, conf, confidence_threshold=0.5) == pytest.approx(l1)
    # Frames where the original has f0 0 are not voiced whatever the confidence.
    assert metrics.voiced_mask([0.0, 200.0], [1.0, 1.0]).tolist() == [False, True]


def test_outlier_rule():
    ref = np.full(10, 220.0)
    conf = np.ones(10)
    assert metrics.f0_outlier_ratio(ref, ref * SEMITONE ** 13, conf) == 1.0
    assert metrics.f0_outlier_ratio(ref, ref * SEMITONE ** 11, conf) == 0.0
    # Half the frames two octaves off: mean error 12 semitones, not above the threshold.
    est = ref.copy()
    est[:5] *= 4.0
    assert metrics.f0_l1_semitones(ref, est, conf) == pytest.approx(12.0)
    assert metrics.f0_outlier_ratio(ref, est, conf) == 0.0
    assert metrics.f0_outlier_ratio(ref, est, conf, outlier_semitones=11.0) == 1.0
    # No pitch at all in the resynthesis: L1 undefined, an outlier.
    silent = np.zeros(10)
    assert math.isnan(metrics.f0_l1_semitones(ref, silent, conf))
    assert metrics.f0_outlier_ratio(ref, silent, conf) == 1.0
    assert metrics.raw_pitch_accuracy(ref, silent, conf) == 0.0
    # No confident frame in the original: undefined, not an outlier.
    for fn in (metrics.f0_l1_semitones, metrics.f0_outlier_ratio, metrics.raw_pitch_accuracy,
               metrics.raw_chroma_accuracy):
        assert math.isnan(fn(ref, ref, np.full(10, 0.5))), fn.__name__


def test_f0_tracks_of_different_lengths_are_trimmed():
    ref = np.full(6, 100.0)
    est = np.array([100.0, 100.0 * SEMITONE, 100.0, 100.0])
    conf = np.ones(5)
    assert metrics.f0_l1_semitones(ref, est, conf) == pytest.approx(0.25)
    assert metrics.voiced_mask(ref, conf).shape == (5,)


# ------------------------------------------------------------------------------------------------
# Spectral distance and loudness.
# ------------------------------------------------------------------------------------------------
def test_spectral_distance_is_the_training_loss():
    from ddsp_core.losses import SpectralLoss

    rng = np.random.default_rng(1)
    a = (0.3 * rng.standard_normal(4000)).astype(np.float32)
    b = (a + 0.1 * rng.standard_normal(4000)).astype(np.float32)
    sizes = (1024, 256, 64)
    loss = SpectralLoss(fft_sizes=sizes, mag_weight=1.0, logmag_weight=1.0)
    expected = float(loss(a[np.newaxis], b[np.newaxis]))
    assert metrics.spectral_distance(a, b, sizes) == pytest.approx(expected, rel=1e-4)
    mag_only = SpectralLoss(fft_sizes=sizes, mag_weight=1.0, logmag_weight=0.0)
    assert metrics.spectral_distance(a, b, sizes, logmag_weight=0.0) == pytest.approx(
        float(mag_only(a[np.newaxis], b[np.newaxis])), rel=1e-4)
    assert metrics.spectral_distance(a, a, sizes) == 0.0
    # Longer resynthesis: compared over the shared samples.
    longer = np.concatenate([b, np.ones(100, np.float32)])
    assert metrics.spectral_distance(a, longer, sizes) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match='fft_sizes'):
        metrics.spectral_distance(a, b, ())


def test_loudness_is_a_weighted_at_the_sample_rate_and_bad_input(tone):
    at_32k = harmonic_tone(220.0, sample_rate=32000)
    assert metrics.loudness_l1_db(at_32k, 0.501 * at_32k, 32000, FPS) == pytest.approx(
        6.0, abs=0.3)
    # Equal sines at 500 Hz and 5 kHz: A-weighting -3.2 dB and +0.5 dB, 3.7 dB apart, at any
    # sample rate (read at a wrong rate the frequencies, and so the weights, would be off).
    for sample_rate in (16000, 32000):
        t = np.arange(sample_rate // 2) / sample_rate
        low, high = (0.3 * np.sin(2 * np.pi * f * t) for f in (500.0, 5000.0))
        assert metrics.loudness_l1_db(low, high, sample_rate, FPS) == pytest.approx(
            3.7, abs=0.4), sample_rate
    with pytest.raises(ValueError, match='resynthesis'):
        metrics.loudness_l1_db(tone, np.zeros(0), SR, FPS)
    with pytest.raises(ValueError, match='n_fft'):
        metrics.loudness_l1_db(tone, tone, SR, FPS, n_fft=0)


# ------------------------------------------------------------------------------------------------
# aggregate.
# ------------------------------------------------------------------------------------------------
def _row(l1, outlier, rpa, rca, loud, spec, voiced, l1_frames, frames, samples, **extra):
    return dict(f0_l1_semitones=l1, f0_outlier_ratio=outlier, raw_pitch_accuracy=rpa,
                raw_chroma_accuracy=rca, loudness_l1_db=loud, spectral_distance=spec,
                voiced_frames=voiced, f0_l1_frames=l1_frames, n_frames=frames,
                n_samples=samples, **extra)


def test_aggregate_weights_by_hand():
    rows = [
        _row(1.0, 0.0, 0.5, 0.75, 2.0, 10.0, 100, 100, 200, 12800, id='a'),
        _row(2.0, 0.0, 1.0, 1.0, 4.0, 20.0, 300, 200, 200, 12800, id='b'),
        _row(30.0, 1.0, 0.0, 0.0, 8.0, 40.0, 50, 50, 400, 25600, id='c'),  # an outlier
        _row(math.nan, math.nan, math.nan, math.nan, 1.0, 5.0, 0, 0, 200, 12800, id='d'),
    ]
    result = metrics.aggregate(rows)
    # f0 L1: frame-weighted over the non-outliers a and b: (1 * 100 + 2 * 200) / 300.
    assert result['f0_l1_semitones'] == pytest.approx(500 / 300)
    # Outliers: 1 of the 3 examples with a voiced frame (d has none).
    assert result['f0_outlier_ratio'] == pytest.approx(1 / 3)
    # Accuracies: correct voiced frames / voiced frames = (50 + 300 + 0) / 450.
    assert result['raw_pitch_accuracy'] == pytest.approx(350 / 450)
    assert result['raw_chroma_accuracy'] == pytest.approx((75 + 300 + 0) / 450)
    # Loudness by frames: (2*200 + 4*200 + 8*400 + 1*200) / 1000.
    assert result['loudness_l1_db'] == pytest.approx(4.6)
    # Spectral distance by samples: (10 + 20 + 40*2 + 5) / 5.
    assert result['spectral_distance'] == pytest.approx(23.0)
    assert result['voiced_frames'] == 450 and isinstance(result['voiced_frames'], int)
    assert result['f0_l1_frames'] == 350
    assert result['n_frames'] == 1000
    assert result['n_samples'] == 64000
    assert result['examples'] == 4
    assert 'id' not in result


def test_aggregate_of_one_row_is_the_row_and_edge_cases():
    row = _row(1.5, 0.0, 0.8, 0.9, 3.0, 7.0, 90, 90, 126, 8000, id='x')
    result = metrics.aggregate([row])
    for key in metrics.METRIC_KEYS:
        assert result[key] == pytest.approx(row[key]), key
    # Nothing voiced anywhere: the f0 metrics are NaN, the rest are still pooled.
    silent = _row(math.nan, math.nan, math.nan, math.nan, 3.0, 7.0, 0, 0, 126, 8000)
    result = metrics.aggregate([silent, dict(silent, loudness_l1_db=5.0)])
    for key in metrics.F0_METRIC_KEYS:
        assert math.isnan(result[key]), key
    assert result['loudness_l1_db'] == pytest.approx(4.0)
    # Only outliers: no f0 L1 to report, outlier ratio 1.
    outlier = _row(20.0, 1.0, 0.0, 0.0, 3.0, 7.0, 90, 90, 126, 8000)
    result = metrics.aggregate([outlier])
    assert math.isnan(result['f0_l1_semitones']) and result['f0_outlier_ratio'] == 1.0
    with pytest.raises(ValueError, match='empty'):
        metrics.aggregate([])
    with pytest.raises(ValueError, match='spectral_distance'):
        metrics.aggregate([{k: v for k, v in row.items() if k != 'spectral_distance'}])
    with pytest.raises(ValueError, match='loudness_l1_db'):
        metrics.aggregate([dict(row, loudness_l1_db='loud')])


def test_aggregate_of_measured_examples(tone):
    same = measure(tone, tone)
    up = measure(tone, harmonic_tone(220.0 * SEMITONE))
    result = metrics.aggregate([same, up])
    assert same['voiced_frames'] == up['voiced_frames']
    assert result['raw_pitch_accuracy'] == pytest.approx(0.5)
    assert result['f0_l1_semitones'] == pytest.approx(up['f0_l1_semitones'] / 2)
    assert result['spectral_distance'] == pytest.approx(up['spectral_distance'] / 2)


def test_importing_the_module_loads_no_tensorflow():
    code = ('import sys, trainer.evaluation.metrics; '
            'sys.exit(1 if "tensorflow" in sys.modules else 0)')
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0
