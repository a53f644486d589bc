"""Effects: reverbs convolve as numpy does, learn, and decay as set; filters and delays measured."""

import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from ddsp_core import effects

SR = 16000


def test_reverb_with_given_ir_is_dry_plus_numpy_convolution():
    rng = np.random.default_rng(0)
    audio = rng.normal(size=[2, 1000]).astype(np.float32)
    ir = rng.normal(size=[2, 200]).astype(np.float32)
    masked = ir.copy()
    masked[:, 0] = 0.0  # the first IR sample is the dry path, handled by add_dry
    wet = np.stack([np.convolve(audio[b], masked[b])[:1000] for b in range(2)])

    out = effects.Reverb(reverb_length=200)(audio, ir)
    np.testing.assert_allclose(out, audio + wet, atol=1e-4)
    out_wet = effects.Reverb(add_dry=False)(audio, ir)
    np.testing.assert_allclose(out_wet, wet, atol=1e-4)
    # One IR ([ir_size]) is shared across the batch.
    shared = effects.Reverb(add_dry=False)(audio, ir[0])
    np.testing.assert_allclose(shared[1], np.convolve(audio[1], masked[0])[:1000], atol=1e-4)


def test_reverb_argument_errors():
    audio = tf.zeros([1, 100])
    with pytest.raises(ValueError, match='needs an impulse response'):
        effects.Reverb()(audio)
    with pytest.raises(ValueError, match='do not pass `ir`'):
        effects.Reverb(trainable=True, reverb_length=50)(audio, tf.zeros([1, 50]))
    with pytest.raises(ValueError, match='ir batch'):
        effects.Reverb()(tf.zeros([2, 100]), tf.zeros([3, 50]))


def test_trainable_reverb_ir_is_a_variable_that_gets_gradients():
    reverb = effects.Reverb(trainable=True, reverb_length=300)
    assert [tuple(v.shape) for v in reverb.trainable_variables] == [(300,)]
    ir0 = reverb.trainable_variables[0].numpy()
    # Initialised as quiet noise that decays over its length.
    assert 0 < np.abs(ir0).max() < 0.01
    assert np.mean(ir0[:50] ** 2) > 10 * np.mean(ir0[-50:] ** 2)

    audio = tf.random.normal([2, 1000])
    target = tf.random.normal([2, 1000])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((reverb(audio) - target) ** 2)
    (grad,) = tape.gradient(loss, reverb.trainable_variables)
    grad = grad.numpy()
    assert grad.shape == (300,)
    assert np.abs(grad[1:]).min() > 0
    assert grad[0] == 0.0  # masked dry sample


def test_exp_decay_reverb_decays_at_the_set_rate():
    length = 16000
    reverb = effects.ExpDecayReverb(reverb_length=length, scale_fn=None, add_dry=False)
    for decay in (0.0, 1.5):
        ir = reverb.get_controls(tf.zeros([1, 100]), tf.constant([[1.0]]),
                                 tf.constant([[decay]]))['ir'].numpy()[0]
        assert ir.shape == (length,)
        n_blocks = 40
        energy = np.mean(ir.reshape(n_blocks, -1) ** 2, axis=1)
        t = (np.arange(n_blocks) + 0.5) / n_blocks  # IR time runs 0..1 over its length
        slope = np.polyfit(t, np.log(energy), 1)[0]
        expected = -2.0 * (2.0 + np.exp(decay))  # energy falls twice as fast as amplitude
        np.testing.assert_allclose(slope, expected, rtol=0.1)
        # Uniform noise in [-1, 1] has energy 1/3 at gain 1.
        np.testing.assert_allclose(np.mean(ir[:400] ** 2), 1 / 3, rtol=0.3)


def test_trainable_exp_decay_reverb_learns_gain_and_decay():
    reverb = effects.ExpDecayReverb(trainable=True, reverb_length=2000)
    names = sorted(v.name for v in reverb.trainable_variables)
    assert names == ['decay', 'gain']
    audio = tf.random.normal([1, 4000])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(reverb(audio) ** 2)
    grads = tape.gradient(loss, reverb.trainable_variables)
    assert all(g is not None and float(tf.abs(g[0])) > 0 for g in grads)
    with pytest.raises(ValueError, match='needs `gain` and `decay`'):
        effects.ExpDecayReverb()(audio)


def test_filtered_noise_reverb_shapes_and_learned_magnitudes():
    reverb = effects.FilteredNoiseReverb(trainable=True, reverb_length=2000, n_frames=50,
                                         n_filter_banks=8, window_size=65)
    assert [tuple(v.shape) for v in reverb.trainable_variables] == [(50, 8)]
    audio = tf.random.normal([2, 4000])
    with tf.GradientTape() as tape:
        out = reverb(audio, return_outputs_dict=True)
        loss = tf.reduce_mean(out['signal'] ** 2)
    assert out['signal'].shape == (2, 4000)
    assert out['controls']['ir'].shape == (1, 2000)
    (grad,) = tape.gradient(loss, reverb.trainable_variables)
    assert float(tf.reduce_sum(tf.abs(grad))) > 0

    # Given magnitudes: an impulse through the wet path reproduces the IR (first sample zeroed).
    fixed = effects.FilteredNoiseReverb(reverb_length=2000, n_frames=50, n_filter_banks=8,
                                        window_size=65, add_dry=False)
    impulse = np.zeros([1, 4000], np.float32)
    impulse[0, 0] = 1.0
    out = fixed(impulse, tf.zeros([1, 50, 8]), return_outputs_dict=True)
    ir = out['controls']['ir'].numpy()[0]
    assert np.std(ir) > 0
    np.testing.assert_allclose(out['signal'][0, 1:2000], ir[1:], atol=1e-5)
    assert abs(float(out['signal'][0, 0])) < 1e-6
    with pytest.raises(ValueError, match='n_frames'):
        effects.FilteredNoiseReverb(reverb_length=1000, n_frames=3000)


def _band_gain(x, y, lo_hz, hi_hz):
    n = x.shape[-1]
    px = np.abs(np.fft.rfft(x)) ** 2
    py = np.abs(np.fft.rfft(y)) ** 2
    lo, hi = int(lo_hz * n / SR), int(hi_hz * n / SR)
    return float(np.sum(py[lo:hi]) / np.sum(px[lo:hi]))


def test_fir_filter_frequency_response_matches_magnitudes():
    rng = np.random.default_rng(1)
    noise = rng.uniform(-1, 1, size=[1, 16000]).astype(np.float32)
    mags = np.zeros([1, 10, 65], np.float32)  # 125 Hz per band
    mags[..., :17] = 1.0  # pass below 2 kHz
    mags[..., 17:33] = 0.5  # half gain 2.25..4 kHz
    out = effects.FIRFilter(window_size=257, scale_fn=None)(noise, mags).numpy()
    assert out.shape == (1, 16000)
    np.testing.assert_allclose(_band_gain(noise[0], out[0], 100, 1800), 1.0, rtol=0.1)
    np.testing.assert_allclose(_band_gain(noise[0], out[0], 2500, 3800), 0.25, rtol=0.15)
    assert _band_gain(noise[0], out[0], 4500, 7900) < 1e-3


def test_fir_filter_is_time_varying_and_scales_magnitudes():
    rng = np.random.default_rng(2)
    noise = rng.uniform(-1, 1, size=[1, 16000]).astype(np.float32)
    mags = np.zeros([1, 10, 65], np.float32)
    mags[:, :5, :17] = 1.0  # first half: low-pass
    mags[:, 5:, 40:] = 1.0  # second half: high-pass (above 5 kHz)
    out = effects.FIRFilter(scale_fn=None)(noise, mags).numpy()[0]
    first, second = out[:7600], out[8400:]
    assert _band_gain(noise[0, :7600], first, 100, 1800) > 100 * _band_gain(
        noise[0, :7600], first, 5500, 7900)
    assert _band_gain(noise[0, 8400:], second, 5500, 7900) > 100 * _band_gain(
        noise[0, 8400:], second, 100, 1800)
    controls = effects.FIRFilter().get_controls(noise, tf.zeros([1, 10, 65]))
    np.testing.assert_allclose(controls['magnitudes'], 2.0 * 0.5 ** np.log(10.0) + 1e-7,
                               rtol=1e-5)  # exp_sigmoid(0)


def _instantaneous_frequency(audio):
    phase = np.unwrap(np.angle(scipy.signal.hilbert(audio)))
    return np.diff(phase) * SR / (2 * np.pi)


def test_mod_delay_vibrato_moves_pitch_only_with_depth():
    n, frames = 16000, 200
    t = np.arange(n) / SR
    sine = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)[None, :]
    lfo = 0.5 + 0.5 * np.sin(2 * np.pi * 5.0 * np.arange(frames) / frames)  # 5 Hz over 1 s
    phase = tf.constant(lfo[None, :, None], tf.float32)
    gain = tf.ones([1, frames, 1])

    def pitch(depth_ms):
        delay = effects.ModDelay(center_ms=5.0, depth_ms=depth_ms, gain_scale_fn=None,
                                 phase_scale_fn=None, add_dry=False)
        out = delay(sine, gain, phase).numpy()[0]
        freq = _instantaneous_frequency(out)[1000:-1000]  # skip edges and the delay onset
        return freq

    vibrato = pitch(5.0)
    # Delay 5 + 5 sin(2 pi 5 t) ms: frequency 1000 * (1 - d'(t)), a swing of about +-157 Hz.
    assert vibrato.max() - vibrato.min() > 200
    assert abs(np.median(vibrato) - 1000.0) < 20
    steady = pitch(0.0)
    assert np.abs(steady - 1000.0).max() < 1.0


def test_mod_delay_constant_phase_is_a_pure_delay():
    impulse = np.zeros([1, 2000], np.float32)
    impulse[0, 100] = 1.0
    delay = effects.ModDelay(center_ms=15.0, depth_ms=10.0, gain_scale_fn=None,
                             phase_scale_fn=None, add_dry=True)
    out = delay(impulse, tf.fill([1, 20, 1], 0.5), tf.fill([1, 20, 1], 0.5)).numpy()[0]
    assert out[100] == pytest.approx(1.0)  # dry
    assert int(np.argmax(out[150:])) + 150 == 100 + 240  # 15 ms at 16 kHz, gain 0.5
    assert out[340] == pytest.approx(0.5, abs=1e-5)
    # phase 1 -> center + depth = 25 ms.
    out = delay(impulse, tf.ones([1, 20, 1]), tf.ones([1, 20, 1])).numpy()[0]
    assert out[100 + 400] == pytest.approx(1.0, abs=1e-5)


def test_reverb_blocks_with_carried_tail_equal_the_one_shot_reverb():
    rng = np.random.default_rng(2)
    ir = (rng.normal(0, 0.1, 300) * np.exp(-np.arange(300) / 80.0)).astype(np.float32)
    signal = rng.normal(0, 1, (1, 2000)).astype(np.float32)
    reverb = effects.Reverb(trainable=False)
    one_shot = reverb.get_signal(signal, ir[None]).numpy()
    cuts = [0, 7, 7, 300, 301, 900, 1999, 2000]  # empty, short, IR-long and long blocks
    state, blocks = None, []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        out, state = reverb.get_signal_chunk(signal[:, a:b], ir[None], state)
        blocks.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(blocks, 1), one_shot, atol=1e-5)
    assert state['tail'].shape == (1, 299)
    # Without the tail the wet part of later blocks is missing.
    alone, _ = reverb.get_signal_chunk(signal[:, 900:], ir[None])
    assert np.abs(alone.numpy() - one_shot[:, 900:]).max() > 0.1
