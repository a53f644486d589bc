"""Spectral ops: spectrogram peaks, loudness scale and framing, numpy/TF agreement, CREPE f0."""

import numpy as np
import pytest
import tensorflow as tf

from ddsp_core import core, spectral_ops
from tests.signals import sine


def test_constants():
    assert spectral_ops.CREPE_SAMPLE_RATE == 16000
    assert spectral_ops.CREPE_FRAME_SIZE == 1024
    assert spectral_ops.F0_RANGE == 127.0
    assert spectral_ops.DB_RANGE == core.DB_RANGE == 80.0


@pytest.mark.parametrize('size', [2048, 512])
def test_mag_peak_at_440_hz(size):
    audio = sine(440.0, seconds=0.5)[np.newaxis]
    mag = spectral_ops.compute_mag(audio, size=size).numpy()
    assert mag.shape == (1, int(np.ceil(8000 / (size // 4))), size // 2 + 1)
    peak_bins = np.argmax(mag[0, 2:-2], axis=-1)
    np.testing.assert_array_equal(peak_bins, round(440.0 * size / 16000))
    logmag = spectral_ops.compute_logmag(audio, size=size).numpy()
    np.testing.assert_allclose(logmag, core.safe_log(mag).numpy(), atol=1e-5)
    assert np.isfinite(logmag).all()


def test_stft_shapes_and_numpy_match():
    audio = np.random.randn(2, 5000).astype(np.float32)
    for pad_end, n_frames in [(True, 40), (False, 36)]:
        s_tf = spectral_ops.stft(audio, frame_size=512, overlap=0.75, pad_end=pad_end).numpy()
        s_np = spectral_ops.stft_np(audio, frame_size=512, overlap=0.75, pad_end=pad_end)
        assert s_tf.shape == s_np.shape == (2, n_frames, 257)
        np.testing.assert_allclose(s_np, s_tf, atol=1e-4)
    # 1-D audio has no batch axis.
    assert spectral_ops.stft(audio[0], 256).shape == (79, 129)
    assert spectral_ops.stft_np(audio[0], 256).shape == (79, 129)
    with pytest.raises(ValueError, match='overlap'):
        spectral_ops.stft(audio, 512, overlap=1.0)


def test_mel_and_mfcc_shapes_and_peak():
    audio = np.stack([sine(440.0, 0.5), sine(2000.0, 0.5)])
    mel = spectral_ops.compute_mel(audio, bins=64, fft_size=1024).numpy()
    assert mel.shape == (2, 32, 64)
    # The 2 kHz tone peaks in a higher mel bin than the 440 Hz one.
    assert np.argmax(mel[1, 10]) > np.argmax(mel[0, 10]) + 10
    logmel = spectral_ops.compute_logmel(audio, bins=40, fft_size=512).numpy()
    assert logmel.shape == (2, 63, 40) and np.isfinite(logmel).all()
    mfcc = spectral_ops.compute_mfcc(audio, fft_size=1024, mel_bins=128, mfcc_bins=13).numpy()
    assert mfcc.shape == (2, 32, 13)
    assert not np.allclose(mfcc[0], mfcc[1])
    with pytest.raises(ValueError, match='hi_hz'):
        spectral_ops.compute_mel(audio, hi_hz=9000.0)


@pytest.mark.parametrize('padding,n_frames,padded', [
    ('center', 1001, 64000 + 512), ('same', 1000, 999 * 64 + 512), ('valid', 993, 64000)])
def test_framed_lengths_and_pad(padding, n_frames, padded):
    assert spectral_ops.get_framed_lengths(64000, 512, 64, padding) == (n_frames, padded)
    x = tf.ones([2, 64000])
    y = spectral_ops.pad(x, 512, 64, padding=padding)
    assert y.shape == (2, padded)
    frames = tf.signal.frame(y, 512, 64)
    assert frames.shape[1] == n_frames
    if padding == 'center':  # zeros on both sides.
        assert float(tf.reduce_sum(y[:, :256])) == 0.0 and float(tf.reduce_sum(y[:, -256:])) == 0
        assert float(y[0, 256]) == 1.0 and float(y[0, -257]) == 1.0
    if padding == 'same':  # zeros at the end only.
        assert float(y[0, 0]) == 1.0 and float(tf.reduce_sum(y[:, 64000:])) == 0.0
    # Padding another axis.
    z = spectral_ops.pad(tf.ones([3, 100, 2]), 16, 4, padding=padding, axis=1)
    assert z.shape[1] == spectral_ops.get_framed_lengths(100, 16, 4, padding)[1]


def test_framing_errors():
    with pytest.raises(ValueError, match='padding'):
        spectral_ops.get_framed_lengths(100, 16, 4, 'full')
    with pytest.raises(ValueError, match='padding'):
        spectral_ops.pad(tf.ones([1, 100]), 16, 4, padding='full')
    with pytest.raises(ValueError, match='at least one frame'):
        spectral_ops.get_framed_lengths(10, 16, 4, 'valid')
    with pytest.raises(ValueError, match='frame_rate must be a positive number'):
        spectral_ops.compute_loudness(np.zeros(1000, np.float32), frame_rate=0)
    with pytest.raises(ValueError, match='sample_rate must be a positive number'):
        spectral_ops.compute_rms_energy(np.zeros(1000, np.float32), sample_rate=-16000)
    with pytest.raises(ValueError, match='is above sample_rate'):
        spectral_ops.compute_rms_energy(np.zeros(1000, np.float32), frame_rate=32000)


@pytest.mark.parametrize('seconds', [0.21, 0.4, 1.0])
@pytest.mark.parametrize('padding', ['center', 'same', 'valid'])
def test_frame_rates_that_do_not_divide_the_sample_rate(seconds, padding):
    # 44.1 kHz at 250 frames/s: the hop rounds down to 176 samples (250.57 frames/s).
    sample_rate = 44100
    # 12 whole periods per 512-sample frame, so every full frame has RMS 1/sqrt(2).
    audio = sine(sample_rate * 12 / 512, seconds=seconds, sample_rate=sample_rate,
                 amplitude=1.0)
    n_frames = spectral_ops.get_framed_lengths(len(audio), 512, 176, padding)[0]
    rms = spectral_ops.compute_rms_energy(audio, sample_rate, 250, 512, padding=padding).numpy()
    power = spectral_ops.compute_power(audio, sample_rate, 250, 512, padding=padding).numpy()
    l_tf = spectral_ops.compute_loudness(audio, sample_rate, 250, 512, padding=padding).numpy()
    l_np = spectral_ops.compute_loudness(audio, sample_rate, 250, 512, padding=padding,
                                         use_tf=False)
    assert rms.shape == power.shape == l_tf.shape == l_np.shape == (n_frames,)
    interior = slice(3, -3) if padding == 'center' else slice(0, -3)
    np.testing.assert_allclose(rms[interior], 1.0 / np.sqrt(2.0), rtol=1e-4)
    np.testing.assert_allclose(l_tf, l_np, atol=1e-3)
    # Frame i starts at sample 176 * i ('valid'): its RMS is that slice's.
    if padding == 'valid':
        i = n_frames - 1
        want = np.sqrt(np.mean(audio[176 * i:176 * i + 512].astype(np.float64) ** 2))
        assert rms[i] == pytest.approx(want, rel=1e-4)
    # 1 s, centred: 1 + 44100 // 176 = 251 frames.
    if seconds == 1.0 and padding == 'center':
        assert n_frames == 251


def test_frame_hop_rounds_down():
    # 44.1 kHz at 240 frames/s is 183.75 samples a frame: the hop is 183, not 184.
    audio = np.ones(44100, np.float32)
    for padding in ('center', 'same', 'valid'):
        n_frames = spectral_ops.get_framed_lengths(44100, 512, 183, padding)[0]
        assert n_frames != spectral_ops.get_framed_lengths(44100, 512, 184, padding)[0]
        assert spectral_ops.compute_rms_energy(audio, 44100, 240, padding=padding).shape == (
            n_frames,)


def test_dividing_frame_rates_keep_their_hop():
    # Where the frame rate divides the sample rate nothing changes: 16 kHz / 250 is a hop of 64.
    audio = np.random.default_rng(0).normal(size=4000).astype(np.float32)
    rms = spectral_ops.compute_rms_energy(audio, 16000, 250, 512, padding='valid').numpy()
    frames = np.lib.stride_tricks.sliding_window_view(audio, 512)[::64]
    np.testing.assert_allclose(rms, np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)),
                               rtol=1e-5)
    assert spectral_ops.compute_loudness(audio, 24000, 250, 512).shape == (1 + 4000 // 96,)


def test_stft_of_sizes_that_are_not_powers_of_two():
    audio = np.random.default_rng(2).normal(size=(2, 5000)).astype(np.float32)
    # Frames are windowed at their size and zero-padded to the next power of two for the FFT.
    assert spectral_ops.fft_length(1000) == 1024 and spectral_ops.fft_length(1024) == 1024
    s_tf = spectral_ops.stft(audio, frame_size=1000, overlap=0.75).numpy()
    s_np = spectral_ops.stft_np(audio, frame_size=1000, overlap=0.75)
    assert s_tf.shape == s_np.shape == (2, 20, 513)
    np.testing.assert_allclose(s_np, s_tf, atol=2e-3)
    window = np.hanning(1001)[:1000]  # periodic Hann
    frame = np.pad(audio[1, 250:1250] * window, (0, 24))
    np.testing.assert_allclose(s_tf[1, 1], np.fft.rfft(frame), atol=2e-3)
    assert spectral_ops.compute_mel(audio, fft_size=1000, bins=40).shape == (2, 20, 40)
    # [batch, n_samples, 1] audio is accepted and gives the same spectrogram.
    np.testing.assert_allclose(spectral_ops.stft(audio[..., None], 1000).numpy(), s_tf)


def test_pad_one_dimensional_signal():
    padded = spectral_ops.pad(np.ones(10, np.float32), 4, 2, padding='center', axis=1)
    np.testing.assert_array_equal(padded.numpy(), np.pad(np.ones(10), 2))


def test_loudness_is_in_db_and_frames_reconcile():
    loud = sine(440.0, seconds=4.0, amplitude=1.0)
    quiet = loud * 0.1  # -20 dB
    l_loud = spectral_ops.compute_loudness(loud, use_tf=False)
    l_quiet = spectral_ops.compute_loudness(quiet, use_tf=False)
    assert l_loud.shape == (1001,)  # 64000 samples at 250 frames/s, 'center'.
    interior = slice(10, -10)
    np.testing.assert_allclose(l_loud[interior] - l_quiet[interior], 20.0, atol=0.5)
    # Silence sits at the floor; a ref_db shift moves everything down.
    silent = spectral_ops.compute_loudness(np.zeros(4000, np.float32), use_tf=False)
    np.testing.assert_allclose(silent, -80.0)
    shifted = spectral_ops.compute_loudness(loud, ref_db=10.0, use_tf=False)
    np.testing.assert_allclose(shifted[interior], l_loud[interior] - 10.0, atol=1e-4)
    # A-weighting: 100 Hz is much quieter than 1 kHz at the same amplitude.
    l100 = spectral_ops.compute_loudness(sine(100.0, 0.5), use_tf=False)[20]
    l1k = spectral_ops.compute_loudness(sine(1000.0, 0.5), use_tf=False)[20]
    assert 15.0 < l1k - l100 < 25.0  # A(100 Hz) = -19.1 dB


@pytest.mark.parametrize('padding', ['center', 'same', 'valid'])
def test_loudness_tf_and_numpy_agree(padding):
    audio = 0.3 * np.random.randn(2, 6000).astype(np.float32)
    l_tf = spectral_ops.compute_loudness(audio, n_fft=1024, padding=padding, use_tf=True)
    l_np = spectral_ops.compute_loudness(audio, n_fft=1024, padding=padding, use_tf=False)
    assert isinstance(l_tf, tf.Tensor) and isinstance(l_np, np.ndarray)
    n_frames = spectral_ops.get_framed_lengths(6000, 1024, 64, padding)[0]
    assert l_tf.shape == l_np.shape == (2, n_frames)
    np.testing.assert_allclose(l_tf.numpy(), l_np, atol=1e-3)


def test_loudness_gradient_is_finite():
    audio = tf.Variable(np.concatenate([np.zeros(1000), sine(440.0, 0.1)])[np.newaxis])
    with tf.GradientTape() as tape:
        loudness = tf.reduce_sum(spectral_ops.compute_loudness(audio))
    grad = tape.gradient(loudness, audio).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0


def test_rms_and_power():
    audio = sine(500.0, seconds=0.5, amplitude=1.0)
    rms = spectral_ops.compute_rms_energy(audio, frame_size=512).numpy()
    assert rms.shape == (126,)
    np.testing.assert_allclose(rms[5:-5], 1.0 / np.sqrt(2.0), rtol=1e-3)
    power = spectral_ops.compute_power(audio[np.newaxis], frame_size=512).numpy()
    assert power.shape == (1, 126)
    np.testing.assert_allclose(power[0, 5:-5], -3.0103, atol=0.02)
    np.testing.assert_allclose(spectral_ops.compute_power(np.zeros(640, np.float32)), -80.0)


def test_pad_or_trim_to_expected_length():
    v = np.arange(10, dtype=np.float32)
    padded = spectral_ops.pad_or_trim_to_expected_length(v, 12, pad_value=-1)
    np.testing.assert_array_equal(padded, np.concatenate([v, [-1, -1]]))
    trimmed = spectral_ops.pad_or_trim_to_expected_length(v[np.newaxis], 8, use_tf=True)
    np.testing.assert_array_equal(trimmed.numpy(), v[np.newaxis, :8])
    with pytest.raises(ValueError, match='len_tolerance'):
        spectral_ops.pad_or_trim_to_expected_length(v, 50)


def test_compute_f0_tiny_330_hz():
    audio = sine(330.0, seconds=1.0)
    f0_hz, confidence = spectral_ops.compute_f0(audio, 250, model_capacity='tiny')
    loudness = spectral_ops.compute_loudness(audio, use_tf=False)
    assert f0_hz.shape == confidence.shape == loudness.shape == (251,)
    np.testing.assert_allclose(f0_hz[8:-8], 330.0, rtol=0.02)
    assert confidence[8:-8].min() > 0.8
    # A batch of two: rows equal the single-example result.
    f0_b, conf_b = spectral_ops.compute_f0(np.stack([audio, audio]), 250, model_capacity='tiny')
    assert f0_b.shape == (2, 251)
    np.testing.assert_allclose(f0_b[1], f0_hz, rtol=1e-4)
