"""The autoencoder: preprocessing, shapes, seeded noise, trainable reverb, optional encoder."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.model.autoencoder import NOISE_SEED_KEY, Autoencoder


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


def test_shapes_and_preprocessing(tiny_resolved):
    d, m = tiny_resolved.data, tiny_resolved.model
    model = Autoencoder(m, d)
    out = model(_features(tiny_resolved))
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


def test_noise_is_a_function_of_the_seed(tiny_resolved):
    model = Autoencoder(tiny_resolved.model, tiny_resolved.data)
    f = _features(tiny_resolved)
    a = model(f)['audio_synth'].numpy()
    b = model(f)['audio_synth'].numpy()
    f[NOISE_SEED_KEY] = tf.constant([1, 3], tf.int32)
    c = model(f)['audio_synth'].numpy()
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 0


def test_optional_mfcc_encoder(tiny_resolved):
    config = tiny_resolved.with_overrides(['model.use_encoder=true'])
    model = Autoencoder(config.model, config.data)
    out = model(_features(config, batch=1))
    assert out['z'].shape == (1, config.data.n_frames, config.model.z_dims)
    assert out['audio_synth'].shape == (1, config.data.n_samples)
    no_encoder = Autoencoder(tiny_resolved.model, tiny_resolved.data)
    no_encoder(_features(tiny_resolved, batch=1))
    assert model.count_params() > no_encoder.count_params()


def test_frames_must_divide_samples(tiny_resolved):
    from trainer.model.config import ConfigError

    # A config error (a ValueError; exit code 2 from the CLI), raised before anything is built.
    with pytest.raises(ConfigError, match='data.example_secs.*whole number of frames'):
        tiny_resolved.with_overrides(['data.example_secs=0.501'])
    with pytest.raises(ConfigError, match='model.mfcc_fft_size'):
        tiny_resolved.with_overrides(['model.use_encoder=true', 'model.mfcc_fft_size=32',
                                    'data.frame_rate=100'])


def test_fast_gru_matches_keras_gru_values_and_gradients():
    import keras

    from trainer.model.autoencoder import FastGRU

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


@pytest.mark.parametrize('n_layers', [1, 3])
def test_mlp_matches_keras_dense_layernorm_leaky_relu(n_layers):
    import keras

    from trainer.model.autoencoder import MLP

    x = tf.random.stateless_normal([2, 7, 5], seed=[11, 12])
    mlp = MLP(6, n_layers)
    mlp(x)
    for i, (dense, norm) in enumerate(zip(mlp.dense_layers, mlp.norm_layers, strict=True)):
        # Non-trivial gamma/beta/bias so that every gradient term matters.
        for j, v in enumerate([dense.kernel, dense.bias, norm.gamma, norm.beta]):
            v.assign(tf.random.stateless_normal(v.shape, seed=[i, j]) * 0.7 + (j == 2))

    def reference(x):
        for dense, norm in zip(mlp.dense_layers, mlp.norm_layers, strict=True):
            x = tf.nn.leaky_relu(norm(dense(x)))
        return x

    w = tf.random.stateless_normal([2, 7, 6], seed=[13, 14])

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = fn(x)
            loss = tf.reduce_sum(out * w)
        return [out, *tape.gradient(loss, [x, *mlp.trainable_variables])]

    assert len(mlp.trainable_variables) == 4 * n_layers
    for mine, theirs in zip(grads(mlp), grads(reference), strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-5)
    # The weights still live in the Keras sub-layers, under the names and in the order of the
    # plain Keras stack, so checkpoints written before the fused computation restore.
    names = [f'mlp/dense_{i}/{w}' for i in range(n_layers) for w in ('kernel', 'bias')]
    names += [f'mlp/norm_{i}/{w}' for i in range(n_layers) for w in ('gamma', 'beta')]
    assert [v.path for v in mlp.weights] == names
    assert [tuple(v.shape) for v in mlp.dense_layers[0].weights] == [(5, 6), (6,)]
    assert isinstance(mlp.norm_layers[0], keras.layers.LayerNormalization)
    # The inference path in plain ops computes the same values (rank 3 and one frame).
    np.testing.assert_allclose(mlp.plain(x), reference(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mlp.plain(x[:, 0]), reference(x)[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('rnn_type', ['gru', 'keras_gru', 'lstm'])
def test_decoder_with_state_chunk_by_chunk_and_step_by_step_is_the_decoder(tiny_resolved,
                                                                            rnn_type):
    """The decoder's inference paths (chunks with a carried state; single loop-free steps)
    give what its training call gives on the whole sequence."""
    config = tiny_resolved.with_overrides([f'model.rnn_type={rnn_type}'])
    model = Autoencoder(config.model, config.data)
    model(model.dummy_features(1))
    decoder, n = model.decoder, 12
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[None, :, None]
    inputs = {'f0_scaled': tf.constant(0.4 + 0.2 * t), 'ld_scaled': tf.constant(1.0 - t)}
    want = decoder(inputs)
    state, chunks = decoder.initial_state(), []
    for a, b in ((0, 5), (5, 6), (6, 12)):
        # One frame of lookahead past the kept ones: the state is the one after frame b.
        out, state = decoder.call_with_state({k: v[:, a:b + 1] for k, v in inputs.items()},
                                             state, keep=b - a)
        chunks.append({k: v[:, :b - a] for k, v in out.items()})
    state, steps = decoder.initial_state(), []
    for i in range(n):
        out, state = decoder.step({k: v[:, i] for k, v in inputs.items()}, state)
        steps.append(out)
    for name in want:
        chunked = tf.concat([c[name] for c in chunks], axis=1)
        stepped = tf.stack([s[name] for s in steps], axis=1)
        np.testing.assert_allclose(chunked, want[name], atol=2e-5, err_msg=name)
        np.testing.assert_allclose(stepped, want[name], atol=2e-5, err_msg=name)


def test_mlp_in_bfloat16_matches_float32_to_bfloat16_precision():
    import keras

    from trainer.model.autoencoder import MLP

    keras.utils.set_random_seed(1)
    x = tf.random.stateless_normal([3, 20, 16], seed=[15, 16])
    full = MLP(32, 2)
    half = MLP(32, 2, dtype='mixed_bfloat16', first_dtype='float32')
    full(x)
    half(x)
    for a, b in zip(full.weights, half.weights, strict=True):
        assert b.dtype == 'float32'
        b.assign(a)
    w = tf.random.stateless_normal([3, 20, 32], seed=[17, 18])

    def run(layer, variables=None):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x)
            loss = tf.reduce_sum(tf.cast(out, tf.float32) * w)
        return out, tape.gradient(loss, [x, *(variables or layer.trainable_variables)])

    def keras_layers(x):  # the same bfloat16 policy through Keras's own Dense/LayerNorm
        for dense, norm in zip(half.dense_layers, half.norm_layers, strict=True):
            x = tf.nn.leaky_relu(norm(dense(x)))
        return x

    out_full, grads_full = run(full)
    out_half, grads_half = run(half)
    _, grads_keras = run(keras_layers, half.trainable_variables)
    assert out_half.dtype == tf.bfloat16 and out_full.dtype == tf.float32
    np.testing.assert_allclose(tf.cast(out_half, tf.float32).numpy(), out_full.numpy(), atol=0.05)
    for g_full, g_half, g_keras in zip(grads_full, grads_half, grads_keras, strict=True):
        assert g_half.dtype == tf.float32  # variables' gradients stay float32
        g_full, g_half = g_full.numpy(), tf.cast(g_half, tf.float32).numpy()
        rel = np.linalg.norm(g_half - g_full) / np.linalg.norm(g_full)
        rel_keras = np.linalg.norm(tf.cast(g_keras, tf.float32).numpy() - g_full) / np.linalg.norm(
            g_full)
        # bfloat16 keeps ~3 significant digits; the error is that of Keras's own bf16 layers.
        assert rel < 0.05 and rel <= 1.25 * rel_keras + 2e-3, (rel, rel_keras)


def test_fast_gru_in_bfloat16_matches_float32_to_bfloat16_precision():
    from trainer.model.autoencoder import FastGRU

    x = tf.random.stateless_normal([2, 50, 16], seed=[7, 8])
    full = FastGRU(8)
    half = FastGRU(8, dtype='mixed_bfloat16')
    full(x)
    half(x)
    for a, b in zip(full.weights, half.weights, strict=True):
        assert b.dtype == 'float32'  # variables stay float32
        b.assign(a)
    w = tf.random.stateless_normal([2, 50, 8], seed=[9, 10])

    def run(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x)
            loss = tf.reduce_sum(tf.cast(out, tf.float32) * w)
        return out, tape.gradient(loss, [x, *layer.trainable_variables])

    out_full, grads_full = run(full)
    out_half, grads_half = run(half)
    assert out_half.dtype == tf.bfloat16 and out_full.dtype == tf.float32
    np.testing.assert_allclose(tf.cast(out_half, tf.float32).numpy(), out_full.numpy(), atol=0.03)
    for g_full, g_half in zip(grads_full, grads_half, strict=True):
        g_full, g_half = g_full.numpy(), tf.cast(g_half, tf.float32).numpy()
        rel = np.linalg.norm(g_half - g_full) / np.linalg.norm(g_full)
        assert rel < 0.03, rel


@pytest.mark.parametrize('overrides', [
    [], ['model.mlp_layers=2'], ['model.rnn_type=keras_gru'], ['model.use_encoder=true']])
def test_bfloat16_compute_keeps_synth_controls_and_audio_in_float32(tiny_resolved, overrides):
    config = tiny_resolved.with_overrides(overrides)
    model = Autoencoder(config.model, config.data, compute_dtype='bfloat16')
    out = model(model.dummy_features(2))
    assert model.decoder.out_stack.dense_layers[-1].compute_dtype == 'bfloat16'
    assert model.decoder.rnn.compute_dtype == 'bfloat16'
    # The input features enter the network in float32 (bfloat16 would quantise f0 to ~25 cents).
    assert model.decoder.input_stacks[0].dense_layers[0].compute_dtype == 'float32'
    for key in ('amps', 'harmonic_distribution', 'noise_magnitudes', 'audio_synth'):
        assert out[key].dtype == tf.float32, key
    assert all(v.dtype == 'float32' for v in model.weights)
    with pytest.raises(ValueError, match='compute_dtype'):
        Autoencoder(config.model, config.data, compute_dtype='float16')


@pytest.mark.trains
def test_whole_step_xla_computes_the_same_step(tiny_resolved):
    # train.jit_compile=true compiles forward and backward (with the hand-written GRU, MLP and
    # spectral-loss gradients nested inside) as one XLA computation: same loss and gradients.
    # (XLA draws the filtered noise from another stream; at initialisation the noise bands sit
    # at -5 before exp_sigmoid, far below these tolerances, so this compares the rest.)
    import keras

    from trainer.training.data import synthetic_batch
    from trainer.training.loop import build_model, make_train_step

    dist = tf.distribute.get_strategy()
    batch = {k: tf.constant(v) for k, v in synthetic_batch(tiny_resolved.data, 2).items()}
    seed = tf.constant([3, 4], tf.int32)
    results = []
    for jit in (False, True):
        # The log-magnitude term is left out: on near-silent bins it amplifies float rounding
        # (XLA fuses and orders sums differently), which would hide a real mismatch.
        config = tiny_resolved.with_overrides([f'train.jit_compile={str(jit).lower()}',
                                               'model.mlp_layers=2', 'model.logmag_weight=0'])
        keras.utils.set_random_seed(0)
        model, optimizer, _ = build_model(config, dist)

        @tf.function(jit_compile=jit)
        def gradients(batch, model=model):
            with tf.GradientTape() as tape:
                features = dict(batch)
                features[NOISE_SEED_KEY] = seed
                loss = model.losses_dict(model(features, training=True))['spectral_loss']
            return tape.gradient(loss, model.trainable_variables)

        grads = [g.numpy() for g in gradients(batch)]
        metrics = make_train_step(model, optimizer, dist, config.train)(batch, seed)
        results.append((float(metrics['total_loss']), float(metrics['grad_norm']), grads))
    (loss, norm, grads), (jit_loss, jit_norm, jit_grads) = results
    assert jit_loss == pytest.approx(loss, rel=1e-4)
    assert jit_norm == pytest.approx(norm, rel=1e-3)
    for g, jit_g in zip(grads, jit_grads, strict=True):
        # Not tighter: where both spectra are ~0 the sign in the L1 gradient is set by rounding
        # (0.5% of the reverb's gradient here); a wrong gradient term would differ by O(1).
        assert np.linalg.norm(g) > 0
        assert np.linalg.norm(jit_g - g) / np.linalg.norm(g) < 1e-2


# ---- model.reverb_type=exp_decay: a room of one gain and one decay ---------------------------
def _exp_decay_model(tiny_resolved, reverb_length=8000):
    config = tiny_resolved.with_overrides(['model.reverb_type=exp_decay',
                                           f'model.reverb_length={reverb_length}'])
    model = Autoencoder(config.model, config.data)
    model(_features(config))
    return config, model


def test_exp_decay_room_learns_two_numbers_over_fixed_noise(tiny_resolved, tmp_path):
    """Only gain and decay are trained; the impulse response is the same on every call and
    after a checkpoint restore into a new model, and decays at the rate its decay sets."""
    from ddsp_core.analysis import rt60_from_ir
    from trainer.serving.streaming import learned_ir, room_of

    config, model = _exp_decay_model(tiny_resolved)
    room = room_of(model)
    trained = sorted(v.path for v in model.trainable_variables if v.path.startswith('reverb'))
    assert trained == ['reverb/decay', 'reverb/gain']
    ir = learned_ir(room)
    np.testing.assert_array_equal(ir, learned_ir(room))
    # The envelope falls by 2 + exp(decay) nepers over the IR: 60 dB is ln(1000) nepers.
    for raw_decay in (4.0, 2.5):
        room._decay.assign([raw_decay])
        expected = np.log(1000.0) / (2.0 + np.exp(raw_decay)) * 8000 / 16000
        assert rt60_from_ir(learned_ir(room), 16000) == pytest.approx(expected, rel=0.1)
    room._gain.assign([-1.0])
    ir = learned_ir(room)
    checkpoint = tf.train.Checkpoint(model=model).write(str(tmp_path / 'ckpt'))
    _, other = _exp_decay_model(tiny_resolved)
    assert not np.array_equal(learned_ir(room_of(other)), ir)
    tf.train.Checkpoint(model=other).read(checkpoint).assert_existing_objects_matched()
    np.testing.assert_array_equal(learned_ir(room_of(other)), ir)
    # The noise is a fixed seeded draw: a fresh model has the same noise under its envelope.
    np.testing.assert_array_equal(room_of(other)._noise.numpy(), room._noise.numpy())


def test_exp_decay_room_finds_a_known_rooms_decay_from_the_wet_signal():
    """Fitted by the spectral loss to dry noise bursts convolved with an exponential-decay
    room of RT60 0.3 s, the two-number room finds that RT60 (it starts at 0.09 s)."""
    from ddsp_core import losses
    from ddsp_core.analysis import exponential_decay_ir, rt60_from_ir
    from trainer.model.autoencoder import LearnedExpDecayReverb
    from trainer.serving.streaming import learned_ir

    sr, n = 16000, 16000
    rng = np.random.default_rng(0)
    dry = np.zeros((4, n), np.float32)
    for row in dry:  # two 60 ms bursts each, then silence where only the room sounds
        for start in rng.integers(0, n // 2, 2):
            row[start:start + 960] += 0.3 * rng.uniform(-1, 1, 960)
    known = exponential_decay_ir(0.3, sr, seconds=0.5, seed=3)
    wet = dry + np.stack([np.convolve(r, 0.5 * known)[:n] for r in dry]).astype(np.float32)
    room = LearnedExpDecayReverb(reverb_length=8000)
    start_rt60 = rt60_from_ir(learned_ir(room), sr)
    loss_fn = losses.SpectralLoss(fft_sizes=(1024, 512, 256, 128), loss_type='L1',
                                  mag_weight=1.0, logmag_weight=1.0)
    optimizer = tf.keras.optimizers.Adam(0.05)
    dry_t, wet_t = tf.constant(dry), tf.constant(wet)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(wet_t, room(dry_t))
        grads = tape.gradient(loss, room.trainable_variables)
        optimizer.apply_gradients(zip(grads, room.trainable_variables, strict=True))
        return loss

    first = float(step())
    for _ in range(150):
        last = float(step())
    assert last < 0.5 * first
    assert start_rt60 < 0.15
    assert rt60_from_ir(learned_ir(room), sr) == pytest.approx(0.3, rel=0.2)
