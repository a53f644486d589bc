"""The DDSP autoencoder of Engel et al. (2020), built from ``ddsp_core``.

features -> preprocessing (f0 -> scaled MIDI, loudness -> scaled dB)
         -> [optional MFCC -> GRU -> z encoder]
         -> RnnFc decoder (input MLPs, GRU, output MLP, dense to synth controls)
         -> ProcessorGroup: Harmonic + FilteredNoise -> Add -> trainable Reverb
         -> audio, compared with the input audio by a multi-scale spectral loss.

Shapes: audio [batch, n_samples]; frame-rate features [batch, n_frames] or
[batch, n_frames, 1]; 16 kHz / 250 frames per second by default.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ddsp_core import core, effects, losses, processors, spectral_ops, synths
from trainer.config import DataConfig, ModelConfig

NOISE_SEED_KEY = 'noise_seed'
NOISE_RNG_ALG = 'philox'  # see SeededFilteredNoise
COMPUTE_DTYPES = ('float32', 'bfloat16')


# Slope of tf.nn.leaky_relu (its default), used by the reference's fc stacks.
LEAKY_RELU_ALPHA = 0.2


def _normalise(a, bias, mean, rstd):
    return (tf.cast(a, tf.float32) + bias - mean) * rstd


@tf.function(jit_compile=True)
def _norm_act_forward(a, bias, gamma, beta, epsilon):
    """LayerNorm over the last axis then leaky ReLU, one XLA fusion (float32).

    Args:
        a: [rows, units] pre-activations without bias (any float dtype).
        bias, gamma, beta: [units] float32.
        epsilon: LayerNorm's variance epsilon.

    Returns:
        (y [rows, units], mean [rows, 1], rstd [rows, 1]): the output and the statistics that
        let the backward pass recompute the normalised values from ``a`` (cheaper than storing
        them: one pass less over the activations each way).
    """
    a_b = tf.cast(a, tf.float32) + bias
    mean = tf.reduce_mean(a_b, axis=-1, keepdims=True)
    rstd = tf.math.rsqrt(tf.reduce_mean(tf.square(a_b - mean), axis=-1, keepdims=True)
                         + epsilon)
    u = _normalise(a, bias, mean, rstd) * gamma + beta
    return tf.maximum(u, LEAKY_RELU_ALPHA * u), mean, rstd


@tf.function(jit_compile=True)
def _norm_act_backward(dy, a, bias, mean, rstd, gamma, beta):
    """The backward pass of :func:`_norm_act_forward`, one XLA fusion (float32).

    Returns:
        (da [rows, units], dbias [units], dgamma [units], dbeta [units]).
    """
    xhat = _normalise(a, bias, mean, rstd)
    dy = tf.cast(dy, tf.float32)
    du = tf.where(xhat * gamma + beta > 0.0, dy, LEAKY_RELU_ALPHA * dy)
    dgamma = tf.reduce_sum(du * xhat, axis=0)
    dbeta = tf.reduce_sum(du, axis=0)
    dxhat = du * gamma
    da = rstd * (dxhat - tf.reduce_mean(dxhat, axis=-1, keepdims=True)
                 - xhat * tf.reduce_mean(dxhat * xhat, axis=-1, keepdims=True))
    return da, tf.reduce_sum(da, axis=0), dgamma, dbeta


def dense_norm_act(x, kernel, bias, gamma, beta, epsilon: float = 1e-3):
    """leaky_relu(LayerNorm(x @ kernel + bias)), with a hand-written backward pass.

    The same function as ``keras.layers.Dense`` -> ``keras.layers.LayerNormalization`` (last
    axis, centre and scale) -> ``tf.nn.leaky_relu`` (slope 0.2), but the normalisation and
    activation (and their gradients, with the bias gradient) are each one XLA-fused pass over the
    activations instead of a dozen graph ops, and the matmuls stay plain oneDNN matmuls (at the
    paper's sizes a layer's forward and backward take ~16 ms instead of ~27 ms of overhead on
    top of the matmuls, measured on a 2-core CPU).

    Args:
        x: [..., channels] inputs, float32 or bfloat16 (the matmuls run in x's dtype).
        kernel: [channels, units] in x's dtype.
        bias, gamma, beta: [units] float32.
        epsilon: LayerNorm's variance epsilon.

    Returns:
        [..., units] in x's dtype (normalisation computed in float32).
    """

    @tf.custom_gradient
    def run(x, kernel, bias, gamma, beta):
        channels, units = kernel.shape[0], kernel.shape[1]
        x_2d = tf.reshape(x, [-1, channels])
        a = tf.matmul(x_2d, kernel)
        # stop_gradient: an outer tape (eager mode) must not differentiate the compiled fusion.
        a, bias, gamma, beta = (tf.stop_gradient(t) for t in (a, bias, gamma, beta))
        y, mean, rstd = _norm_act_forward(a, bias, gamma, beta, epsilon)
        y = tf.cast(y, x.dtype)
        out_shape = tf.concat([tf.shape(x)[:-1], [units]], axis=0)

        def grad(dy):
            da, dbias, dgamma, dbeta = _norm_act_backward(
                tf.stop_gradient(tf.reshape(dy, [-1, units])), a, bias, mean, rstd, gamma, beta)
            da = tf.cast(da, x.dtype)
            dx = tf.reshape(tf.matmul(da, kernel, transpose_b=True), tf.shape(x))
            dkernel = tf.matmul(x_2d, da, transpose_a=True)
            return dx, dkernel, dbias, dgamma, dbeta

        return tf.reshape(y, out_shape), grad

    return run(x, kernel, bias, gamma, beta)


class MLP(keras.layers.Layer):
    """``n_layers`` x (Dense -> LayerNorm -> leaky ReLU), applied to the last axis.

    The weights live in ``keras.layers.Dense`` / ``LayerNormalization`` sub-layers (names,
    shapes and initialisers as in the reference's fc stacks); each layer is computed by
    :func:`dense_norm_act`. ``dtype`` is the layers' dtype policy (e.g. ``'mixed_bfloat16'``);
    ``first_dtype``, if given, overrides it for the first layer (float32 keeps full precision on
    raw input features).
    """

    def __init__(self, units: int, n_layers: int, name: str = 'mlp', dtype=None,
                 first_dtype=None):
        first_dtype = first_dtype or dtype
        super().__init__(name=name, dtype=first_dtype)
        self.units = int(units)
        dtypes = [first_dtype] + [dtype] * (n_layers - 1)
        self.dense_layers = [keras.layers.Dense(units, name=f'dense_{i}', dtype=dtypes[i])
                             for i in range(n_layers)]
        self.norm_layers = [keras.layers.LayerNormalization(name=f'norm_{i}', dtype=dtypes[i])
                            for i in range(n_layers)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for dense, norm in zip(self.dense_layers, self.norm_layers, strict=True):
            dense.build(shape)
            shape = (*shape[:-1], self.units)
            norm.build(shape)
        self.built = True

    def call(self, x):
        """x: [..., channels] -> [..., units]."""
        for dense, norm in zip(self.dense_layers, self.norm_layers, strict=True):
            dtype = dense.compute_dtype
            x = dense_norm_act(tf.cast(x, dtype), tf.cast(dense.kernel, dtype),
                               tf.cast(dense.bias, tf.float32), tf.cast(norm.gamma, tf.float32),
                               tf.cast(norm.beta, tf.float32), epsilon=norm.epsilon)
        return x


@tf.function(jit_compile=True)
def _gru_forward_scan(xw, recurrent_kernel, recurrent_bias):
    """The GRU recurrence over time-major projected inputs ``xw`` [time, batch, 3 * units].

    XLA-compiled: the graph executor's per-op overhead (~a dozen ops per time step) otherwise
    costs more than the step's matmul at the paper's sizes. Each step keeps only what the
    backward pass cannot recompute cheaply outside the loop (the candidate state ``n`` is
    recomputed there, vectorised over all steps): fewer writes per step make the loop faster.

    Returns:
        (hs [time, batch, units], zrs [time, batch, 2 * units], hhs [time, batch, units]): the
        hidden states, the update and reset gates (z, r) and the recurrent candidate
        projections h U_h + b'_h.
    """
    units = recurrent_kernel.shape[0]
    batch = tf.shape(xw)[1]
    h0 = tf.zeros([batch, units], xw.dtype)

    def step(carry, xw_t):
        h = carry[0]
        hu = tf.matmul(h, recurrent_kernel) + recurrent_bias
        zr = tf.sigmoid(xw_t[:, :2 * units] + hu[:, :2 * units])
        hh = hu[:, 2 * units:]
        n = tf.tanh(xw_t[:, 2 * units:] + zr[:, units:] * hh)
        return n + zr[:, :units] * (h - n), zr, hh

    return tf.scan(step, xw, initializer=(h0, tf.zeros([batch, 2 * units], xw.dtype), h0))


@tf.function(jit_compile=True)
def _gru_backward_coefficients(xw, zrs, hhs, hs):
    """Everything the backward recurrence needs per step, in one vectorised pass.

    With g_t the gradient reaching h_t, the gradients of the recurrent projections are
    dhu_t = [g_t, g_t, g_t] * coef_t (gates z, r, h), and the input projections' candidate
    gradient is dn_t = g_t * bn_t.

    Returns:
        (coef [time, batch, 3 * units], bn [time, batch, units], h_prev [time, batch, units]).
    """
    units = hhs.shape[-1]
    z, r = zrs[..., :units], zrs[..., units:]
    n = tf.tanh(xw[..., 2 * units:] + r * hhs)
    h_prev = tf.concat([tf.zeros_like(hs[:1]), hs[:-1]], axis=0)
    bn = (1.0 - z) * (1.0 - n * n)
    coef = tf.concat([(h_prev - n) * z * (1.0 - z), bn * hhs * r * (1.0 - r), bn * r], axis=-1)
    return coef, bn, h_prev


@tf.function(jit_compile=True)
def _gru_backward_scan(dhs, zs, coef, recurrent_kernel):
    """The backward recurrence of :func:`_gru_forward_scan` (XLA-compiled, time-major).

    g_t = dh_t + g'_{t+1}, g'_t = g_t * z_t + ([g_t] * 3 * coef_t) U^T: one matmul and a few
    element-wise ops per step; everything else is computed outside the loop.

    Returns:
        gs [time, batch, units]: the total gradient reaching each hidden state.
    """
    units = recurrent_kernel.shape[0]
    # Transposed once here, not at every step.
    recurrent_kernel_t = tf.transpose(recurrent_kernel)

    def bstep(carry, inputs):
        dh_t, z, c = inputs
        g = dh_t + carry[0]
        dhu = tf.concat([g, g, g], axis=-1) * c
        return g * z + tf.matmul(dhu, recurrent_kernel_t), g

    zero = tf.zeros([tf.shape(dhs)[1], units], dhs.dtype)
    return tf.scan(bstep, (dhs, zs, coef), initializer=(zero, zero), reverse=True)[1]


@tf.function(jit_compile=True)
def _gru_projection_gradients(gs, coef, bn):
    """(dhus, dxws) [time, batch, 3 * units]: gradients of the recurrent and input projections."""
    units = gs.shape[-1]
    dhus = tf.concat([gs, gs, gs], axis=-1) * coef
    dxws = tf.concat([dhus[..., :2 * units], gs * bn], axis=-1)
    return dhus, dxws


def gru_sequence(x, kernel, recurrent_kernel, bias):
    """A GRU over a whole sequence with a hand-written backward pass (fast on CPU).

    Same equations, gate order (z, r, h) and weight layout as ``keras.layers.GRU`` with
    ``reset_after=True``: z = σ(x Wz + bz + h Uz + b'z), r = σ(...), n = tanh(x Wh + bh +
    r * (h Uh + b'h)), h' = z * h + (1 - z) * n; zero initial state. Autodiff through a
    1000-step while loop is dominated by per-step bookkeeping; here the input projections and
    every weight gradient are single large matmuls outside the loop, the two recurrences
    (forward, and the backward written out by hand) are XLA-compiled loops of one matmul and a
    few fused element-wise ops per step, and the rest of the backward is vectorised over time.

    Args:
        x: [batch, time, channels] inputs, float32 or bfloat16.
        kernel: [channels, 3 * units] input weights, in x's dtype (the input projection and
            its gradients are computed in that dtype).
        recurrent_kernel: [units, 3 * units] recurrent weights, float32.
        bias: [2, 3 * units] input and recurrent biases, float32.

    Returns:
        [batch, time, units] hidden states in x's dtype (computed in float32).
    """

    @tf.custom_gradient
    def run(x, kernel, recurrent_kernel, bias):
        # Time-major 2-D views, so that every projection is one plain matmul.
        n_batch, n_time, channels = tf.shape(x)[0], tf.shape(x)[1], kernel.shape[0]
        units = recurrent_kernel.shape[0]
        x_2d = tf.reshape(tf.transpose(x, [1, 0, 2]), [-1, channels])
        xw = tf.cast(tf.matmul(x_2d, kernel), tf.float32) + bias[0]
        xw = tf.reshape(xw, [n_time, n_batch, -1])
        # The gradient is ``grad`` below; stop_gradient keeps an outer tape (eager mode) from
        # differentiating the compiled loops themselves, which XLA cannot export.
        hs, zrs, hhs = _gru_forward_scan(*(tf.stop_gradient(t) for t in (
            xw, recurrent_kernel, bias[1])))
        out = tf.cast(tf.transpose(hs, [1, 0, 2]), x.dtype)

        def grad(dout):
            dhs = tf.transpose(tf.cast(dout, tf.float32), [1, 0, 2])
            coef, bn, h_prev = _gru_backward_coefficients(*(tf.stop_gradient(t) for t in (
                xw, zrs, hhs, hs)))
            gs = _gru_backward_scan(*(tf.stop_gradient(t) for t in (
                dhs, zrs[..., :units], coef, recurrent_kernel)))
            dhus, dxws = _gru_projection_gradients(gs, coef, bn)
            dhus = tf.reshape(dhus, [-1, 3 * units])
            dxws = tf.reshape(dxws, [-1, 3 * units])
            d_rec = tf.matmul(tf.reshape(h_prev, [-1, units]), dhus, transpose_a=True)
            dxws_c = tf.cast(dxws, x.dtype)
            d_kernel = tf.matmul(x_2d, dxws_c, transpose_a=True)
            d_x = tf.matmul(dxws_c, kernel, transpose_b=True)
            d_x = tf.transpose(tf.reshape(d_x, [n_time, n_batch, channels]), [1, 0, 2])
            d_bias = tf.stack([tf.reduce_sum(dxws, 0), tf.reduce_sum(dhus, 0)])
            return d_x, d_kernel, d_rec, d_bias

        return out, grad

    return run(x, kernel, recurrent_kernel, bias)


class FastGRU(keras.layers.Layer):
    """``keras.layers.GRU(units, return_sequences=True)`` computed by :func:`gru_sequence`.

    Same weights (``kernel``, ``recurrent_kernel``, ``bias`` [2, 3 * units]) and initialisers
    as the Keras layer; call with [batch, time, channels] -> [batch, time, units].
    """

    def __init__(self, units: int, name: str = 'gru', dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.units = int(units)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.kernel = self.add_weight(shape=(channels, 3 * self.units), name='kernel',
                                      initializer='glorot_uniform')
        self.recurrent_kernel = self.add_weight(shape=(self.units, 3 * self.units),
                                                name='recurrent_kernel',
                                                initializer='orthogonal')
        self.bias = self.add_weight(shape=(2, 3 * self.units), name='bias', initializer='zeros')

    def call(self, x):
        # Under a mixed policy the input projections run in the compute dtype (bfloat16); the
        # recurrence itself always runs in float32.
        dtype = self.compute_dtype
        return gru_sequence(tf.cast(x, dtype), tf.cast(self.kernel, dtype),
                            tf.cast(self.recurrent_kernel, tf.float32),
                            tf.cast(self.bias, tf.float32))


def _rnn(rnn_type: str, units: int, name: str, dtype=None):
    if rnn_type == 'gru':
        return FastGRU(units, name=name, dtype=dtype)
    if rnn_type == 'keras_gru':
        return keras.layers.GRU(units, return_sequences=True, name=name, dtype=dtype)
    if rnn_type == 'lstm':
        return keras.layers.LSTM(units, return_sequences=True, name=name, dtype=dtype)
    raise ValueError(f"model.rnn_type must be 'gru', 'keras_gru' or 'lstm', got {rnn_type!r}")


class MfccRnnEncoder(keras.layers.Layer):
    """Audio -> MFCC -> LayerNorm -> GRU -> Dense: a time-distributed latent z."""

    def __init__(self, config: ModelConfig, data_config: DataConfig, name: str = 'encoder',
                 dtype=None):
        super().__init__(name=name)  # float32: the MFCCs are computed in full precision
        self.n_frames = data_config.n_frames
        self.sample_rate = data_config.sample_rate
        self.fft_size = config.mfcc_fft_size
        self.mfcc_bins = config.mfcc_bins
        hop = data_config.n_samples // data_config.n_frames
        if hop <= 0 or hop > self.fft_size:
            raise ValueError(f'model.mfcc_fft_size={self.fft_size} must be >= the hop of '
                             f'{hop} samples per frame')
        self.overlap = 1.0 - hop / self.fft_size
        self.norm = keras.layers.LayerNormalization(name='mfcc_norm')
        self.rnn = _rnn(config.rnn_type, config.encoder_rnn_channels, 'encoder_rnn', dtype=dtype)
        self.dense_z = keras.layers.Dense(config.z_dims, name='dense_z')

    def call(self, audio):
        """audio: [batch, n_samples] -> z: [batch, n_frames, z_dims]."""
        mfcc = spectral_ops.compute_mfcc(
            audio, lo_hz=20.0, hi_hz=self.sample_rate / 2, fft_size=self.fft_size,
            mel_bins=128, mfcc_bins=self.mfcc_bins, overlap=self.overlap, pad_end=True,
            sample_rate=self.sample_rate)
        if mfcc.shape[1] != self.n_frames:
            mfcc = core.resample(mfcc, self.n_frames)
        return self.dense_z(tf.cast(self.rnn(self.norm(mfcc)), tf.float32))


class RnnFcDecoder(keras.layers.Layer):
    """Per-input MLP stacks -> concat -> RNN -> concat(inputs, rnn) -> MLP -> Dense -> splits."""

    def __init__(self, config: ModelConfig, input_keys: tuple[str, ...],
                 output_splits: tuple[tuple[str, int], ...], name: str = 'decoder',
                 dtype=None):
        super().__init__(name=name)  # float32: inputs are not cast
        self.input_keys = tuple(input_keys)
        self.output_splits = tuple(output_splits)
        self.input_stacks = [MLP(config.mlp_units, config.mlp_layers, name=f'in_{k}', dtype=dtype,
                                 first_dtype='float32')
                             for k in self.input_keys]
        self.rnn = _rnn(config.rnn_type, config.rnn_channels, 'decoder_rnn', dtype=dtype)
        self.out_stack = MLP(config.mlp_units, config.mlp_layers, name='out_mlp', dtype=dtype)
        # The synth controls are computed in float32 whatever the policy.
        self.dense_out = keras.layers.Dense(sum(n for _, n in self.output_splits),
                                            name='dense_out', dtype='float32')

    def call(self, inputs: dict):
        """inputs: {key: [batch, n_frames, channels]} -> {split name: [batch, n_frames, size]}."""
        stacked = [stack(inputs[k]) for k, stack in zip(self.input_keys, self.input_stacks,
                                                        strict=True)]
        # Under a mixed policy the stacks may end in float32 (a single float32 first layer) while
        # the RNN computes in bfloat16: concatenate in the RNN's compute dtype.
        dtype = self.rnn.compute_dtype
        stacked = [tf.cast(part, dtype) for part in stacked]
        x = tf.concat(stacked, axis=-1) if len(stacked) > 1 else stacked[0]
        x = tf.concat([*stacked, tf.cast(self.rnn(x), dtype)], axis=-1)
        x = self.dense_out(tf.cast(self.out_stack(x), tf.float32))
        sizes = [n for _, n in self.output_splits]
        parts = tf.split(x, sizes, axis=-1)
        return {name: part for (name, _), part in zip(self.output_splits, parts, strict=True)}


class SeededFilteredNoise(synths.FilteredNoise):
    """FilteredNoise whose white noise is a pure function of a seed tensor.

    The noise is ``tf.random.stateless_uniform`` of shape [global_batch, n_samples] seeded by
    ``noise_seed`` (shape [2], int32), sliced to this replica's examples. So a training step is
    a pure function of (weights, batch, seed): resuming from a checkpoint replays exactly, and a
    step under MirroredStrategy draws the same noise as the same global batch on one device.
    The generator is named (Philox, TensorFlow's current default) so that a change of default
    cannot break an exact resume. Under XLA (``train.jit_compile``) the same seed gives a
    different stream: such runs are reproducible among themselves, not with non-XLA runs.
    """

    def get_controls(self, magnitudes, noise_seed=None):
        """magnitudes: [batch, n_frames, n_bands] raw; noise_seed: [2] int32 or None (random)."""
        controls = super().get_controls(magnitudes)
        if noise_seed is None:
            noise_seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        controls['noise_seed'] = tf.cast(noise_seed, tf.int32)
        return controls

    def get_signal(self, magnitudes, noise_seed=None):
        """magnitudes: [batch, n_frames, n_bands] linear gains -> audio [batch, n_samples]."""
        if noise_seed is None:
            return super().get_signal(magnitudes)
        local_batch = magnitudes.shape[0]
        ctx = tf.distribute.get_replica_context()
        n_replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        if local_batch is None or n_replicas == 1:
            noise = tf.random.stateless_uniform(
                [tf.shape(magnitudes)[0], self.n_samples], seed=noise_seed, minval=-1.0,
                maxval=1.0, alg=NOISE_RNG_ALG)
        else:
            noise = tf.random.stateless_uniform(
                [local_batch * n_replicas, self.n_samples], seed=noise_seed, minval=-1.0,
                maxval=1.0, alg=NOISE_RNG_ALG)
            start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * local_batch
            noise = noise[start:start + local_batch]
            noise = tf.ensure_shape(noise, [local_batch, self.n_samples])
        return core.frequency_filter(noise, magnitudes, window_size=self.window_size)


def _frames(x):
    """[batch, n_frames] -> [batch, n_frames, 1] float32; 3-D passes through."""
    x = tf.convert_to_tensor(x, tf.float32)
    return x[..., tf.newaxis] if x.shape.rank == 2 else x


class Autoencoder(keras.Model):
    """The DDSP autoencoder: features -> decoder -> synthesizers -> audio.

    Call with a dict of features: ``audio`` [batch, n_samples], ``f0_hz`` and ``loudness_db``
    [batch, n_frames] (or [..., 1]), optionally ``noise_seed`` [2] int32. Returns a dict with the
    inputs, the preprocessed features (``f0_scaled``, ``ld_scaled``, optionally ``z``), the
    decoder outputs and ``audio_synth`` [batch, n_samples].
    """

    def __init__(self, config: ModelConfig, data_config: DataConfig, name: str = 'autoencoder',
                 compute_dtype: str = 'float32'):
        super().__init__(name=name)
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f'compute_dtype must be one of {", ".join(COMPUTE_DTYPES)}, got '
                             f'{compute_dtype!r}')
        self.compute_dtype_name = compute_dtype
        # Variables stay float32; 'bfloat16' runs the networks' large matmuls in bfloat16.
        policy = 'mixed_bfloat16' if compute_dtype == 'bfloat16' else 'float32'
        self.model_config = config
        self.data_config = data_config
        n_samples, sr = data_config.n_samples, data_config.sample_rate
        if n_samples % data_config.n_frames:
            raise ValueError(f'data: n_samples={n_samples} is not a multiple of '
                             f'n_frames={data_config.n_frames}; choose example_secs so that '
                             'frames have an integer number of samples')
        self.encoder = (MfccRnnEncoder(config, data_config, dtype=policy)
                        if config.use_encoder else None)
        input_keys = ('ld_scaled', 'f0_scaled') + (('z',) if config.use_encoder else ())
        self.decoder = RnnFcDecoder(
            config, input_keys,
            (('amps', 1), ('harmonic_distribution', config.n_harmonics),
             ('noise_magnitudes', config.n_noise_bands)), dtype=policy)
        harmonic = synths.Harmonic(n_samples=n_samples, sample_rate=sr, name='harmonic')
        noise = SeededFilteredNoise(n_samples=n_samples, window_size=config.noise_window_size,
                                    initial_bias=-5.0, name='filtered_noise')
        dag = [
            (harmonic, ['amps', 'harmonic_distribution', 'f0_hz']),
            (noise, ['noise_magnitudes', NOISE_SEED_KEY]),
            (processors.Add(name='add'), ['filtered_noise/signal', 'harmonic/signal']),
        ]
        if config.use_reverb:
            dag.append((effects.Reverb(trainable=True, reverb_length=config.reverb_length,
                                       add_dry=True, name='reverb'), ['add/signal']))
        self.processor_group = processors.ProcessorGroup(dag, name='processor_group')
        self.spectral_loss = losses.SpectralLoss(
            fft_sizes=tuple(config.fft_sizes), loss_type='L1', mag_weight=config.mag_weight,
            logmag_weight=config.logmag_weight, name='spectral_loss')

    def build(self, input_shape=None):
        # Sub-layers create their variables on the first call (see ``dummy_features``).
        self.built = True

    def preprocess(self, features: dict) -> dict:
        """Adds ``f0_scaled`` = hz_to_midi(f0_hz) / F0_RANGE and ``ld_scaled`` =
        loudness_db / DB_RANGE + 1 (both [batch, n_frames, 1]); f0_hz/loudness_db become 3-D."""
        f0_hz = _frames(features['f0_hz'])
        loudness_db = _frames(features['loudness_db'])
        out = dict(features)
        out['f0_hz'] = f0_hz
        out['loudness_db'] = loudness_db
        out['f0_scaled'] = core.hz_to_midi(f0_hz) / spectral_ops.F0_RANGE
        out['ld_scaled'] = loudness_db / core.DB_RANGE + 1.0
        return out

    def call(self, features: dict, training: bool = False) -> dict:
        outputs = self.preprocess(features)
        if self.encoder is not None:
            outputs['z'] = self.encoder(outputs['audio'])
        outputs.update(self.decoder(outputs))
        if NOISE_SEED_KEY not in outputs:
            outputs[NOISE_SEED_KEY] = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        group_out = self.processor_group(outputs, return_outputs_dict=True)
        outputs['audio_synth'] = group_out['out']['signal']
        return outputs

    def losses_dict(self, outputs: dict) -> dict[str, tf.Tensor]:
        """{'spectral_loss': scalar} comparing ``audio`` with ``audio_synth`` (batch mean)."""
        return {'spectral_loss': self.spectral_loss(outputs['audio'], outputs['audio_synth'])}

    def dummy_features(self, batch_size: int = 1) -> dict[str, tf.Tensor]:
        """Zero features of the right shapes (to create the variables before training)."""
        d = self.data_config
        return {
            'audio': tf.zeros([batch_size, d.n_samples]),
            'f0_hz': tf.fill([batch_size, d.n_frames], 220.0),
            'f0_confidence': tf.ones([batch_size, d.n_frames]),
            'loudness_db': tf.fill([batch_size, d.n_frames], -40.0),
            NOISE_SEED_KEY: tf.constant([0, 0], tf.int32),
        }
