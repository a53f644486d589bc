"""Tests for ddsp_core.core: units, resampling, oscillators, filters, delays."""

import numpy as np
import pytest
import tensorflow as tf

from ddsp_core import core
from tests.signals import band_energy, peak_hz

SR = 16000


# ---------------------------------------------------------------- units


def test_midi_hz_round_trip_and_reference_points():
    assert float(core.midi_to_hz(69.0)) == pytest.approx(440.0)
    assert float(core.hz_to_midi(880.0)) == pytest.approx(81.0, abs=1e-4)
    notes = np.array([21.0, 60.0, 100.0], np.float32)
    np.testing.assert_allclose(core.hz_to_midi(core.midi_to_hz(notes)), notes, atol=1e-3)
    assert float(core.hz_to_midi(0.0)) == 0.0
    assert float(core.midi_to_hz(0.0, midi_zero_silence=True)) == 0.0


def test_unit_conversions_are_inverse():
    hz = np.array([50.0, 440.0, 2000.0], np.float32)
    unit = core.hz_to_unit(hz, hz_min=20.0, hz_max=8000.0)
    assert np.all((unit.numpy() > 0) & (unit.numpy() < 1))
    np.testing.assert_allclose(core.unit_to_hz(unit, 20.0, 8000.0), hz, rtol=1e-4)
    assert float(core.unit_to_midi(1.5, clip=True)) == pytest.approx(90.0)
    np.testing.assert_allclose(core.mel_to_hz(core.hz_to_mel(hz)), hz, rtol=1e-4)
    np.testing.assert_allclose(core.bark_to_hz(core.hz_to_bark(hz)), hz, rtol=1e-4)
    assert float(core.hz_to_erb(1000.0)) == pytest.approx(132.7)


def test_bark_scale_is_traunmuller():
    # 26.81 / (1 + 1960 / f) - 0.53: 1 kHz is 8.53 Bark, 1960 Hz is 12.875.
    assert float(core.hz_to_bark(1000.0)) == pytest.approx(26.81 / 2.96 - 0.53, rel=1e-6)
    assert float(core.hz_to_bark(1960.0)) == pytest.approx(12.875, rel=1e-6)
    assert float(core.bark_to_hz(12.875)) == pytest.approx(1960.0, rel=1e-5)


def test_unit_midi_maps_keep_float64_precision():
    unit = np.linspace(-1.0, 2.0, 1001)  # float64, past both ends (no clipping)
    midi = core.unit_to_midi(unit, midi_min=20.0, midi_max=90.0)
    assert midi.dtype == tf.float64
    np.testing.assert_allclose(midi.numpy(), 20.0 + 70.0 * unit, rtol=0, atol=1e-12)
    back = core.midi_to_unit(midi, midi_min=20.0, midi_max=90.0)
    np.testing.assert_allclose(back.numpy(), unit, rtol=0, atol=1e-12)
    # float32 (and Python numbers) stay float32; clipping still applies.
    assert core.unit_to_midi(np.float32(0.5)).dtype == tf.float32
    assert float(core.unit_to_midi(-0.5, clip=True)) == pytest.approx(20.0)


def test_db_conversions():
    assert float(core.amplitude_to_db(0.1)) == pytest.approx(-20.0, abs=1e-4)
    assert float(core.power_to_db(0.1)) == pytest.approx(-10.0, abs=1e-4)
    assert float(core.amplitude_to_db(0.0)) == pytest.approx(-core.DB_RANGE)
    np_db = core.amplitude_to_db(np.array([1.0, 0.01]), use_tf=False)
    np.testing.assert_allclose(np_db, [0.0, -40.0], atol=1e-4)
    assert float(core.db_to_amplitude(-20.0)) == pytest.approx(0.1)
    assert float(core.db_to_power(-10.0)) == pytest.approx(0.1)


def test_safe_math_has_finite_gradients_at_zero():
    x = tf.constant([0.0, 1.0, -1.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(core.safe_log(x) + core.safe_divide(1.0, x))
    assert np.all(np.isfinite(tape.gradient(y, x).numpy()))
    assert float(core.log10(100.0)) == pytest.approx(2.0, abs=1e-5)
    assert float(core.logb(8.0, 2.0)) == pytest.approx(3.0, abs=1e-5)
    np.testing.assert_array_equal(core.nan_to_num(tf.constant([np.nan, 2.0])), [0.0, 2.0])


def test_scaling_functions():
    # exp_sigmoid: 2 * sigmoid(x)^ln(10) + 1e-7, so sigmoid(0)=0.5 gives 2*0.5^2.3026.
    assert float(core.exp_sigmoid(0.0)) == pytest.approx(2 * 0.5 ** np.log(10.0) + 1e-7)
    assert float(core.exp_sigmoid(100.0)) == pytest.approx(2.0, rel=1e-5)
    assert float(core.sym_exp_sigmoid(0.0)) < 1e-3 < float(core.sym_exp_sigmoid(2.0))
    np.testing.assert_allclose(core.log_scale([-1.0, 1.0], 10.0, 1000.0), [10.0, 1000.0],
                               rtol=1e-5)
    lim = core.soft_limit(tf.constant([-50.0, 0.5, 50.0])).numpy()
    assert lim[0] == pytest.approx(0.0, abs=1e-4) and lim[2] == pytest.approx(1.0, abs=1e-4)
    x = tf.constant(2.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = 3.0 * core.gradient_reversal(x)
    assert float(y) == 6.0 and float(tape.gradient(y, x)) == -3.0


def test_frequencies_softmax_and_sigmoid_ranges():
    logits = tf.random.normal([2, 5, 3 * 4])
    hz = core.frequencies_softmax(logits, depth=4, hz_min=20.0, hz_max=8000.0)
    assert hz.shape == (2, 5, 3)
    assert np.all((hz.numpy() >= 20.0 - 1e-3) & (hz.numpy() <= 8000.0 + 1e-2))
    hz = core.frequencies_sigmoid(tf.fill([1, 2, 2], 100.0), depth=2, hz_max=8000.0)
    np.testing.assert_allclose(hz, 8000.0, rtol=1e-4)
    with pytest.raises(ValueError, match='divisible'):
        core.frequencies_softmax(tf.zeros([1, 2, 5]), depth=2)


def test_diff_pad_and_nested():
    x = tf.constant([[1.0, 4.0, 9.0]])
    np.testing.assert_array_equal(core.diff(x, axis=-1), [[3.0, 5.0]])
    assert core.pad_axis(x, (2, 1), axis=1).shape == (1, 6)
    d = {'a': {'b': 1, 'c': {'d': 2}}, 'e': 3}
    assert core.nested_keys(d) == ['a/b', 'a/c/d', 'e']
    assert core.nested_lookup('a/c/d', d) == 2
    with pytest.raises(KeyError, match='a/x'):
        core.nested_lookup('a/x', d)


# ---------------------------------------------------------------- resampling


def test_linear_resample_places_frames_on_hops():
    frames = tf.constant([[0.0, 1.0, 3.0]])  # [1, 3]
    up = core.resample(frames, 6).numpy()[0]  # frame i at sample 2i, last frame held
    np.testing.assert_allclose(up, [0.0, 0.5, 1.0, 2.0, 3.0, 3.0])
    up = core.resample(frames, 5, add_endpoint=False).numpy()[0]  # ends on the last frame
    np.testing.assert_allclose(up, [0.0, 0.5, 1.0, 2.0, 3.0])
    near = core.resample(frames, 6, method='nearest').numpy()[0]
    np.testing.assert_allclose(near, [0.0, 0.0, 1.0, 1.0, 3.0, 3.0])
    cubic = core.resample(frames, 6, method='cubic').numpy()[0]
    np.testing.assert_allclose(cubic[::2], [0.0, 1.0, 3.0], atol=1e-6)
    with pytest.raises(ValueError, match='method'):
        core.resample(frames, 6, method='sinc')


@pytest.mark.parametrize('add_endpoint', [True, False])
def test_cubic_resample_uses_the_image_resize_kernel(add_endpoint):
    # Between frames the cubic kernel shows: TensorFlow's legacy bicubic resize (the
    # reference's) uses a = -0.75, and tabulates its weights in 1/1024 steps (hence 3e-3).
    frames = np.random.default_rng(0).normal(size=(2, 7, 3)).astype(np.float32)
    ours = core.resample(frames, 50, method='cubic', add_endpoint=add_endpoint).numpy()
    image = tf.compat.v1.image.resize(frames[:, :, None, :], [50, 1], method='bicubic',
                                      align_corners=not add_endpoint)[:, :, 0, :].numpy()
    np.testing.assert_allclose(ours, image, atol=3e-3)


def _overlap_add_windows(frames, n_timesteps):
    """Explicit Hann-window overlap-add, the definition `upsample_with_windows` implements."""
    frames = np.concatenate([frames, frames[:, -1:]], axis=1)
    n_intervals = frames.shape[1] - 1
    hop = n_timesteps // n_intervals
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2 * hop) / (2 * hop))
    out = np.zeros((frames.shape[0], (n_intervals + 1) * hop + hop, frames.shape[2]))
    for i in range(frames.shape[1]):
        out[:, i * hop:i * hop + 2 * hop] += frames[:, i:i + 1] * window[None, :, None]
    return out[:, hop:hop + n_timesteps]


def test_upsample_with_windows_matches_overlap_add():
    frames = np.random.rand(2, 10, 3).astype(np.float32)
    up = core.upsample_with_windows(frames, 80).numpy()
    np.testing.assert_allclose(up, _overlap_add_windows(frames, 80), atol=1e-6)
    assert core.resample(frames, 80, method='window').shape == (2, 80, 3)
    with pytest.raises(ValueError, match='divisible'):
        core.upsample_with_windows(frames, 81)


# ---------------------------------------------------------------- oscillators


def test_angular_cumsum_matches_float64_phase():
    omega = np.random.uniform(0.0, 3.0, size=(2, 5000, 3)).astype(np.float32)
    phase = core.angular_cumsum(omega, chunk_size=700).numpy()
    truth = np.cumsum(omega.astype(np.float64), axis=1)
    diff = np.angle(np.exp(1j * (phase - truth)))
    assert np.max(np.abs(diff)) < 5e-3  # float32 sums of up to chunk_size increments


def test_oscillator_bank_renders_given_frequencies():
    n = SR
    freqs = np.tile(np.array([300.0, 1000.0, 9000.0], np.float32), (1, n, 1))
    amps = np.tile(np.array([1.0, 0.5, 1.0], np.float32), (1, n, 1))
    audio = core.oscillator_bank(freqs, amps, sample_rate=SR).numpy()[0]
    assert peak_hz(audio) == pytest.approx(300.0, abs=2)
    assert band_energy(audio, 950, 1050) > 0.1 * band_energy(audio, 250, 350)
    # 9 kHz is above Nyquist and must be removed, not aliased to 7 kHz.
    assert band_energy(audio, 6900, 7100) < 1e-6 * band_energy(audio, 250, 350)
    split = core.oscillator_bank(freqs, amps, sample_rate=SR, sum_sinusoids=False)
    assert split.shape == (1, n, 3)


def _numpy_harmonic(f0_frames, amp_frames, n_samples, sample_rate):
    """Float64 straightforward harmonic synthesis: window-upsampled amplitudes, exact phase."""
    n_frames = f0_frames.shape[1]
    n_harm = amp_frames.shape[2]
    hop = n_samples // n_frames
    pos = np.arange(n_samples) / hop
    f0 = np.stack([np.interp(pos, np.arange(n_frames), f[:, 0]) for f in f0_frames])
    amps = _overlap_add_windows(amp_frames.astype(np.float64), n_samples)
    phase = np.cumsum(2 * np.pi * f0 / sample_rate, axis=1)
    k = np.arange(1, n_harm + 1)
    audible = f0[..., None] * k < sample_rate / 2  # silent from the sample reaching Nyquist
    return np.sum(np.where(audible, amps * np.sin(phase[..., None] * k), 0.0), axis=-1)


def test_harmonic_synthesis_matches_straightforward_rendering():
    n_frames, n_samples, n_harm = 50, 3200, 20
    f0 = np.linspace(200.0, 300.0, n_frames, dtype=np.float32)[None, :, None]
    f0 = np.concatenate([f0, f0 * 1.1], axis=0)  # batch of 2; top harmonic stays < Nyquist
    amps = np.random.uniform(0.0, 0.1, (2, n_frames, n_harm)).astype(np.float32)
    ones = np.ones((2, n_frames, 1), np.float32)
    fast = core.harmonic_synthesis(f0, ones, harmonic_distribution=amps,
                                   n_samples=n_samples, sample_rate=SR).numpy()
    truth = _numpy_harmonic(f0, amps, n_samples, SR)
    np.testing.assert_allclose(fast, truth, atol=2e-4)
    # The general path (harmonic_shifts forces it) agrees too.
    general = core.harmonic_synthesis(f0, ones, harmonic_shifts=np.zeros_like(amps),
                                      harmonic_distribution=amps, n_samples=n_samples,
                                      sample_rate=SR).numpy()
    np.testing.assert_allclose(general, truth, atol=2e-4)


def _assert_close_but_at_nyquist_crossings(actual, desired, amplitude):
    """Equal to float tolerance, except that a sample whose harmonic sits within rounding of
    Nyquist may be kept by one rendering and dropped by the other (one harmonic's amplitude)."""
    diff = np.abs(actual - desired)
    assert np.mean(diff > 2e-4) < 2e-3, f'{np.sum(diff > 2e-4)} samples differ'
    assert diff.max() <= amplitude


def test_harmonic_synthesis_with_harmonics_crossing_nyquist():
    # A glide from 700 to 1100 Hz takes harmonics 8..11 across 8 kHz mid-hop.
    n_frames, n_samples, n_harm = 40, 2560, 12
    f0 = np.linspace(700.0, 1100.0, n_frames, dtype=np.float32)[None, :, None]
    amps = np.random.uniform(0.05, 0.1, (1, n_frames, n_harm)).astype(np.float32)
    ones = np.ones((1, n_frames, 1), np.float32)
    for method in ('window', 'linear'):
        fast = core.harmonic_synthesis(f0, ones, harmonic_distribution=amps,
                                       n_samples=n_samples, amp_resample_method=method).numpy()
        straightforward = core.oscillator_bank(
            core.resample(core.get_harmonic_frequencies(f0, n_harm), n_samples),
            core.resample(amps, n_samples, method=method)).numpy()
        _assert_close_but_at_nyquist_crossings(fast, straightforward, 0.1)
    window = core.harmonic_synthesis(f0, ones, harmonic_distribution=amps,
                                     n_samples=n_samples).numpy()
    _assert_close_but_at_nyquist_crossings(window, _numpy_harmonic(f0, amps, n_samples, SR), 0.1)
    # Silencing crossing harmonics for their whole hop would differ on many more samples.
    no_crossing = core.harmonic_synthesis(f0, ones, harmonic_distribution=amps[..., :7],
                                          n_samples=n_samples).numpy()
    assert np.mean(np.abs(window - no_crossing) > 2e-4) > 0.1


def test_harmonic_synthesis_peak_and_nothing_above_nyquist():
    n_frames, n_samples = 250, 16000
    f0 = np.full((1, n_frames, 1), 440.0, np.float32)
    amp = np.ones((1, n_frames, 1), np.float32)
    audio = core.harmonic_synthesis(f0, amp, n_samples=n_samples).numpy()[0]
    assert peak_hz(audio) == pytest.approx(440.0, abs=1.0)
    # 3 kHz fundamental with 10 harmonics: only 3 and 6 kHz are below 8 kHz.
    f0 = np.full((1, n_frames, 1), 3000.0, np.float32)
    dist = np.ones((1, n_frames, 10), np.float32)
    audio = core.harmonic_synthesis(f0, amp, harmonic_distribution=dist,
                                    n_samples=n_samples).numpy()[0]
    total = band_energy(audio, 0, 8001)
    for alias_hz in (1000, 2000, 4000, 5000, 7000):  # where 9, 12, 15 kHz... would fold
        assert band_energy(audio, alias_hz - 50, alias_hz + 50) < 1e-6 * total
    assert band_energy(audio, 5950, 6050) > 0.3 * band_energy(audio, 2950, 3050)


def test_harmonic_synthesis_is_differentiable_and_traceable():
    f0 = tf.Variable(tf.fill([1, 10, 1], 220.0))
    dist = tf.Variable(tf.random.uniform([1, 10, 5]))

    @tf.function
    def render():
        return core.harmonic_synthesis(f0, tf.ones([1, 10, 1]), harmonic_distribution=dist,
                                       n_samples=640)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(render() ** 2)
    g_f0, g_dist = tape.gradient(loss, [f0, dist])
    assert np.all(np.isfinite(g_f0.numpy())) and np.any(g_f0.numpy() != 0)
    assert np.any(g_dist.numpy() != 0)


def test_normalize_harmonics_removes_above_nyquist():
    f0 = tf.fill([1, 2, 1], 3000.0)
    dist = core.normalize_harmonics(tf.ones([1, 2, 4]), f0, sample_rate=SR).numpy()
    np.testing.assert_allclose(dist[0, 0], [0.5, 0.5, 0.0, 0.0])
    dist = core.normalize_harmonics(tf.ones([1, 2, 4])).numpy()
    np.testing.assert_allclose(dist[0, 0], 0.25)


def test_harmonic_oscillator_bank():
    freq = tf.fill([1, SR // 2, 1], 500.0)
    amps = tf.tile(tf.constant([[[1.0, 0.0, 0.5]]]), [1, SR // 2, 1])
    audio, final_phase = core.harmonic_oscillator_bank(freq, amps, sample_rate=SR)
    audio = audio.numpy()[0]
    assert peak_hz(audio) == pytest.approx(500.0, abs=2.0)
    assert band_energy(audio, 1450, 1550) > 0.1 * band_energy(audio, 450, 550)
    assert band_energy(audio, 950, 1050) < 1e-4 * band_energy(audio, 450, 550)
    # 8000 samples of 500 Hz are 250 whole periods: the phase ends back at 0 (mod 2 pi).
    assert final_phase.shape == (1, 1, 1)
    assert np.cos(float(final_phase[0, 0, 0])) == pytest.approx(1.0, abs=1e-4)


def test_harmonic_oscillator_bank_streams_blocks_with_the_final_phase():
    freq = tf.constant(np.linspace(200.0, 900.0, 4000, dtype=np.float32)[None, :, None])
    amps = tf.tile(tf.constant([[[1.0, 0.5, 0.25]]]), [1, 4000, 1])
    whole, _ = core.harmonic_oscillator_bank(freq, amps, use_angular_cumsum=False)
    first, phase = core.harmonic_oscillator_bank(freq[:, :1500], amps[:, :1500],
                                                 use_angular_cumsum=False)
    second, _ = core.harmonic_oscillator_bank(freq[:, 1500:], amps[:, 1500:],
                                              initial_phase=phase, use_angular_cumsum=False)
    np.testing.assert_allclose(tf.concat([first, second], axis=1), whole, atol=2e-4)


def test_wavetable_synthesis_and_lookup():
    table = core.harmonic_distribution_to_wavetable(tf.constant([[1.0, 0.0, 0.0]]), 256)
    np.testing.assert_allclose(table.numpy()[0], np.sin(2 * np.pi * np.arange(256) / 256),
                               atol=1e-5)
    phase = tf.constant([[[0.0], [0.25], [0.5], [1.0]]])
    np.testing.assert_allclose(core.linear_lookup(phase, table).numpy()[0], [0, 1, 0, 0],
                               atol=1e-3)
    n_frames = 100
    audio = core.wavetable_synthesis(tf.fill([1, n_frames, 1], 440.0),
                                     tf.ones([1, n_frames, 1]), table, n_samples=SR,
                                     sample_rate=SR).numpy()[0]
    assert peak_hz(audio) == pytest.approx(440.0, abs=1.0)


def test_sinusoidal_harmonic_round_trip():
    f0 = tf.fill([1, 3, 1], 200.0)
    dist = tf.constant([[[0.5, 0.3, 0.2]] * 3])
    sin_amps, sin_freqs = core.harmonic_to_sinusoidal(tf.ones([1, 3, 1]), dist, f0)
    np.testing.assert_allclose(sin_freqs.numpy()[0, 0], [200.0, 400.0, 600.0])
    amp, back = core.sinusoidal_to_harmonic(sin_amps, sin_freqs, f0, n_harmonics=3,
                                            normalize=True)
    np.testing.assert_allclose(back.numpy(), dist.numpy(), atol=1e-4)
    np.testing.assert_allclose(amp.numpy(), 1.0, atol=1e-4)


def test_harmonic_to_sinusoidal_renormalises_below_nyquist():
    f0 = tf.constant([[[100.0], [3000.0], [5000.0]]])  # 3rd harmonic (9 kHz), 2nd (10 kHz) out
    dist = tf.fill([1, 3, 3], 1.0 / 3.0)
    sin_amps, sin_freqs = core.harmonic_to_sinusoidal(tf.fill([1, 3, 1], 6.0), dist, f0)
    np.testing.assert_allclose(sin_amps.numpy()[0], [[2.0, 2.0, 2.0], [3.0, 3.0, 0.0],
                                                     [6.0, 0.0, 0.0]], atol=1e-5)
    np.testing.assert_allclose(sin_freqs.numpy()[0, 1], [3000.0, 6000.0, 9000.0])


def test_sinusoidal_to_harmonic_weights_and_normalize():
    f0 = tf.fill([1, 1, 1], 100.0)
    # A sinusoid 5 Hz (0.05 f0) above harmonic 2: weight exp(-(0.05 / 0.1) ** 2) there.
    amp, dist = core.sinusoidal_to_harmonic(tf.ones([1, 1, 1]), tf.fill([1, 1, 1], 205.0), f0,
                                            n_harmonics=4)
    weight = np.exp(-0.25)
    assert float(amp[0, 0, 0]) == pytest.approx(weight, rel=1e-5)
    np.testing.assert_allclose(dist.numpy()[0, 0], [0.0, 1.0, 0.0, 0.0], atol=1e-6)
    # Two sinusoids on one harmonic: their weights sum to 2, normalize caps that at 1.
    two = tf.fill([1, 1, 2], 200.0)
    amp, _ = core.sinusoidal_to_harmonic(tf.ones([1, 1, 2]), two, f0, n_harmonics=4)
    capped, _ = core.sinusoidal_to_harmonic(tf.ones([1, 1, 2]), two, f0, n_harmonics=4,
                                            normalize=True)
    assert float(amp[0, 0, 0]) == pytest.approx(2.0, rel=1e-5)
    assert float(capped[0, 0, 0]) == pytest.approx(1.0, rel=1e-5)


# ---------------------------------------------------------------- filters


def test_get_fft_size():
    assert core.get_fft_size(64, 257) == 512
    assert core.get_fft_size(1000, 1000, power_of_2=False) >= 1999


def test_fft_convolve_matches_numpy_convolution():
    audio = np.random.randn(2, 300).astype(np.float32)
    ir = np.random.randn(2, 31).astype(np.float32)
    full = np.stack([np.convolve(a, h) for a, h in zip(audio, ir, strict=True)])
    valid = core.fft_convolve(audio, ir, padding='valid', delay_compensation=0).numpy()
    np.testing.assert_allclose(valid, full, atol=1e-4)
    same = core.fft_convolve(audio, ir, padding='same', delay_compensation=0).numpy()
    np.testing.assert_allclose(same, full[:, :300], atol=1e-4)
    centred = core.fft_convolve(audio, ir, padding='same').numpy()  # drops ir_size // 2
    np.testing.assert_allclose(centred, full[:, 15:315], atol=1e-4)
    with pytest.raises(ValueError, match='padding'):
        core.fft_convolve(audio, ir, padding='full')


def test_fft_convolve_batches_of_impulse_responses():
    audio = np.random.randn(3, 200).astype(np.float32)
    ir = np.random.randn(17).astype(np.float32)
    expected = np.stack([np.convolve(a, ir)[:200] for a in audio])
    # One response shared by the batch: unbatched [ir_size], or a batch of one.
    for shared in (ir, ir[None], ir[None, None]):
        out = core.fft_convolve(audio, shared, delay_compensation=0).numpy()
        np.testing.assert_allclose(out, expected, atol=1e-4)
    # Otherwise the batches must match.
    with pytest.raises(ValueError, match=r"batch \(2\) must be 1 or the audio's \(3\)"):
        core.fft_convolve(audio, np.stack([ir, ir]))
    with pytest.raises(ValueError, match='batch'):
        core.fft_convolve(audio[:1], np.stack([ir, ir]))


def test_time_varying_fft_convolve_uses_each_frames_response():
    audio = np.ones((1, 40), np.float32)
    ir = np.zeros((1, 2, 3), np.float32)
    ir[0, 0, 0] = 1.0  # first half: identity
    ir[0, 1, 0] = 2.0  # second half: gain 2
    out = core.fft_convolve(audio, ir, delay_compensation=0).numpy()[0]
    np.testing.assert_allclose(out[:20], 1.0, atol=1e-5)
    np.testing.assert_allclose(out[20:], 2.0, atol=1e-5)


def test_frequency_impulse_response_realises_the_magnitudes():
    mags = np.ones((1, 1, 65), np.float32)
    mags[..., 33:] = 0.0  # low-pass at 4 kHz
    ir = core.frequency_impulse_response(mags, window_size=0).numpy()[0, 0]
    assert ir.shape == (128,)
    assert np.argmax(np.abs(ir)) == 64  # centred at window_size // 2: linear phase
    response = np.abs(np.fft.rfft(ir, 1024))
    freqs = np.fft.rfftfreq(1024, 1 / SR)
    assert np.all(np.abs(response[freqs < 3000] - 1.0) < 0.1)
    assert np.all(response[freqs > 5500] < 0.05)


@pytest.mark.parametrize('window_size, n_out', [(22, 21), (64, 63), (65, 65), (0, 128),
                                                (128, 128), (500, 128)])
def test_frequency_impulse_response_sizes_are_odd_when_windowed(window_size, n_out):
    mags = np.random.uniform(size=(2, 65)).astype(np.float32)  # 128-sample responses
    ir = core.frequency_impulse_response(mags, window_size=window_size).numpy()
    assert ir.shape == (2, n_out)
    if n_out < 128:
        # Cropped to an odd length: symmetric about its centre sample (linear phase).
        np.testing.assert_allclose(ir, ir[:, ::-1], atol=1e-6)
    # Flat magnitudes give a unit impulse at the centre, n // 2.
    flat = core.frequency_impulse_response(np.ones((1, 65), np.float32), window_size).numpy()
    assert np.argmax(np.abs(flat[0])) == n_out // 2


def test_frequency_filter_shapes_white_noise():
    noise = np.random.uniform(-1, 1, (1, SR)).astype(np.float32)
    mags = np.zeros((1, 100, 33), np.float32)
    mags[..., :9] = 1.0  # pass below ~2 kHz
    out = core.frequency_filter(noise, mags, window_size=64).numpy()[0]
    assert out.shape == (SR,)
    assert band_energy(out, 100, 1500) > 100 * band_energy(out, 4000, 8000)


def test_sinc_filter_low_and_high_pass():
    noise = np.random.uniform(-1, 1, (1, SR)).astype(np.float32)
    cutoff = np.full((1, 10, 1), 2000.0, np.float32)
    low = core.sinc_filter(noise, cutoff, window_size=256, sample_rate=SR).numpy()[0]
    high = core.sinc_filter(noise, cutoff, window_size=256, sample_rate=SR,
                            high_pass=True).numpy()[0]
    assert band_energy(low, 0, 1500) > 100 * band_energy(low, 3000, 8000)
    assert band_energy(high, 3000, 8000) > 100 * band_energy(high, 0, 1000)
    ir = core.sinc_impulse_response(tf.constant([[0.5]]), window_size=64).numpy()
    assert ir.shape == (1, 65) and float(ir.sum()) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(ir, ir[:, ::-1], atol=1e-7)  # symmetric: linear phase
    assert float(core.sinc(0.0)) == pytest.approx(1.0)


@pytest.mark.parametrize('high_pass, window_size', [(False, 256), (True, 257)])
def test_sinc_filter_with_one_fixed_cutoff(high_pass, window_size):
    noise = np.random.uniform(-1, 1, (2, 4000)).astype(np.float32)
    ir = core.sinc_impulse_response(0.25, window_size=window_size, high_pass=high_pass)
    assert ir.shape == (257,)  # a scalar cutoff gives one unbatched response
    out = core.sinc_filter(noise, 0.25, window_size=window_size, high_pass=high_pass).numpy()
    framed = core.sinc_filter(noise, np.full((2, 1, 1), 0.25, np.float32),
                              window_size=window_size, high_pass=high_pass).numpy()
    assert out.shape == (2, 4000)
    np.testing.assert_allclose(out, framed, atol=1e-5)
    # Cutoff at a quarter of Nyquist, 2 kHz at 16 kHz.
    stop = (3000, 8000) if not high_pass else (0, 1000)
    passed = (0, 1500) if not high_pass else (3000, 8000)
    assert band_energy(out[0], *passed) > 100 * band_energy(out[0], *stop)


def test_variable_length_delay():
    audio = np.random.randn(1, 200).astype(np.float32)
    phase = np.full((1, 200, 1), 0.25, np.float32)  # 8 samples of a 32-sample maximum
    out = core.variable_length_delay(phase, audio, max_length=32).numpy()[0]
    np.testing.assert_allclose(out[8:], audio[0, :-8], atol=1e-6)
    np.testing.assert_allclose(out[:8], 0.0)
    half = np.full((1, 200, 1), 0.5 / 32, np.float32)  # half a sample: average of neighbours
    out = core.variable_length_delay(half, audio, max_length=32).numpy()[0]
    np.testing.assert_allclose(out[1:], 0.5 * (audio[0, 1:] + audio[0, :-1]), atol=1e-6)


def test_center_crop():
    audio = tf.reshape(tf.range(10.0), [1, 10])
    np.testing.assert_array_equal(core.center_crop(audio, 4).numpy(), [[2, 3, 4, 5, 6, 7]])
