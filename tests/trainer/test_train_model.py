"""The autoencoder: preprocessing, shapes, seeded noise, trainable reverb, optional encoder."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.model import NOISE_SEED_KEY, Autoencoder


def _features(config, batch=2):
    d = config.data
    t = np.arange(d.n_samples) / d.sample_rate
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440.0 * t)] * batch).astype(np.float32)
    return {
        'audio': tf.constant(audio),
        'f0_hz': tf.fill([batch, d.n_frames], 440.0),
        'f0_confidence': tf.ones([batch, d.n_frames]),
        'loudness_db': tf.fill([batch, d.n_frames], -40.0),
        NOISE_SEED_KEY: tf.constant([1, 2], tf.int32),
    }


def test_shapes_and_preprocessing(tiny_config):
    d, m = tiny_config.data, tiny_config.model
    model = Autoencoder(m, d)
    out = model(_features(tiny_config))
    assert out['audio_synth'].shape == (2, d.n_samples)
    assert out['amps'].shape == (2, d.n_frames, 1)
    assert out['harmonic_distribution'].shape == (2, d.n_frames, m.n_harmonics)
    assert out['noise_magnitudes'].shape == (2, d.n_frames, m.n_noise_bands)
    # 440 Hz is MIDI 69; scaled by F0_RANGE = 127. -40 dB / 80 + 1 = 0.5.
    np.testing.assert_allclose(out['f0_scaled'].numpy(), 69.0 / 127.0, rtol=1e-5)
    np.testing.assert_allclose(out['ld_scaled'].numpy(), 0.5, rtol=1e-6)
    assert np.all(np.isfinite(out['audio_synth'].numpy()))
    loss = model.losses_dict(out)['spectral_loss']
    assert loss.shape == () and float(loss) > 0
    names = [v.path if hasattr(v, 'path') else v.name for v in model.trainable_variables]
    assert any('reverb' in n for n in names), names  # the reverb impulse response is learned


def test_noise_is_a_function_of_the_seed(tiny_config):
    model = Autoencoder(tiny_config.model, tiny_config.data)
    f = _features(tiny_config)
    a = model(f)['audio_synth'].numpy()
    b = model(f)['audio_synth'].numpy()
    f[NOISE_SEED_KEY] = tf.constant([1, 3], tf.int32)
    c = model(f)['audio_synth'].numpy()
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 0


def test_optional_mfcc_encoder(tiny_config):
    config = tiny_config.with_overrides(['model.use_encoder=true'])
    model = Autoencoder(config.model, config.data)
    out = model(_features(config, batch=1))
    assert out['z'].shape == (1, config.data.n_frames, config.model.z_dims)
    assert out['audio_synth'].shape == (1, config.data.n_samples)
    no_encoder = Autoencoder(tiny_config.model, tiny_config.data)
    no_encoder(_features(tiny_config, batch=1))
    assert model.count_params() > no_encoder.count_params()


def test_frames_must_divide_samples(tiny_config):
    config = tiny_config.with_overrides(['data.example_secs=0.501'])
    with pytest.raises(ValueError, match='n_frames'):
        Autoencoder(config.model, config.data)


def test_fast_gru_matches_keras_gru_values_and_gradients():
    import keras

    from trainer.model import FastGRU

    x = tf.random.stateless_normal([2, 9, 5], seed=[1, 2])
    reference = keras.layers.GRU(4, return_sequences=True)
    reference(x)
    fast = FastGRU(4)
    fast(x)
    for mine, theirs in zip(fast.weights, reference.weights, strict=True):
        assert tuple(mine.shape) == tuple(theirs.shape)
        theirs.assign(tf.random.stateless_normal(theirs.shape, seed=[3, 4]) * 0.5)
        mine.assign(theirs)
    w = tf.random.stateless_normal([2, 9, 4], seed=[5, 6])

    def grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * w)
        return [loss, *tape.gradient(loss, [x, *layer.trainable_variables])]

    for a, b in zip(grads(reference), grads(fast), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
