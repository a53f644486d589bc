"""Fast recurrent and fully connected layers for the DDSP networks, with hand-written gradients.

- :class:`MLP`: the reference's fc stacks (Dense -> LayerNorm -> leaky ReLU, n times). The
  weights live in Keras ``Dense`` / ``LayerNormalization`` sub-layers (checkpoints are those of
  the plain Keras stack); the normalisation and activation, forward and backward, are each one
  XLA fusion (:func:`dense_norm_act`).
- :class:`FastGRU`: ``keras.layers.GRU`` (same weights, equations, initialisers), with XLA-compiled
  time loops and a hand-written backward pass (:func:`gru_sequence`).

Tests check values and gradients against the Keras layers. Second-order gradients are not
provided (they come out as None).
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ['FastGRU', 'LEAKY_RELU_ALPHA', 'MLP', 'dense_norm_act', 'gru_sequence', 'make_rnn',
           'rnn_initial_state', 'rnn_step', 'rnn_with_state']

# Slope of tf.nn.leaky_relu (its default), used by the reference's fc stacks.
LEAKY_RELU_ALPHA = 0.2


def _normalise(a, bias, mean, rstd):
    return (tf.cast(a, tf.float32) + bias - mean) * rstd


def _norm_act(a, bias, gamma, beta, epsilon):
    """LayerNorm over the last axis of ``a + bias`` then leaky ReLU, in float32, in plain
    TensorFlow ops: the training path compiles it into one XLA fusion
    (:func:`_norm_act_forward`), the builtin-ops path (:meth:`MLP.plain`, TFLite) runs it as is.

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
    return tf.nn.leaky_relu(u, alpha=LEAKY_RELU_ALPHA), mean, rstd


_norm_act_forward = tf.function(_norm_act, jit_compile=True)


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

    def _weights(self):
        """Per layer: (compute dtype, kernel in it, float32 bias, gamma, beta, epsilon)."""
        for dense, norm in zip(self.dense_layers, self.norm_layers, strict=True):
            dtype = dense.compute_dtype
            yield (dtype, tf.cast(dense.kernel, dtype), tf.cast(dense.bias, tf.float32),
                   tf.cast(norm.gamma, tf.float32), tf.cast(norm.beta, tf.float32), norm.epsilon)

    def call(self, x):
        """x: [..., channels] -> [..., units]."""
        for dtype, kernel, bias, gamma, beta, epsilon in self._weights():
            x = dense_norm_act(tf.cast(x, dtype), kernel, bias, gamma, beta, epsilon=epsilon)
        return x

    def plain(self, x):
        """:meth:`call` in plain TensorFlow ops (no XLA fusion, no custom gradient; inference):
        what a runtime with builtin ops only (TFLite) can run. x: [..., channels]."""
        for dtype, kernel, bias, gamma, beta, epsilon in self._weights():
            x = tf.cast(x, dtype)
            if x.shape.rank == 2:
                a = tf.matmul(x, kernel)
            else:
                a = tf.reshape(tf.matmul(tf.reshape(x, [-1, kernel.shape[0]]), kernel),
                               tf.concat([tf.shape(x)[:-1], [kernel.shape[1]]], axis=0))
            x = tf.cast(_norm_act(a, bias, gamma, beta, epsilon)[0], dtype)
        return x


def _gru_cell(h, xw_t, recurrent_kernel, recurrent_bias):
    """One step of the GRU (Keras' ``reset_after`` form) from the hidden state ``h``
    [batch, units] and the step's projected inputs ``xw_t`` [batch, 3 * units] (gates z, r,
    candidate). Rank-2 builtin ops only: the training scan, the chunked inference scan and the
    single step (TFLite) all run it.

    Returns:
        (the new state [batch, units], the gates z, r [batch, 2 * units], the recurrent
        candidate projection h U_h + b'_h [batch, units]).
    """
    units = recurrent_kernel.shape[0]
    hu = tf.matmul(h, recurrent_kernel) + recurrent_bias
    xw_zr, xw_h = tf.split(xw_t, [2 * units, units], axis=-1)
    hu_zr, hh = tf.split(hu, [2 * units, units], axis=-1)
    zr = tf.sigmoid(xw_zr + hu_zr)
    z, r = tf.split(zr, 2, axis=-1)
    n = tf.tanh(xw_h + r * hh)
    return n + z * (h - n), zr, hh


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
        return _gru_cell(carry[0], xw_t, recurrent_kernel, recurrent_bias)

    return tf.scan(step, xw, initializer=(h0, tf.zeros([batch, 2 * units], xw.dtype), h0))


@tf.function(jit_compile=True)
def _gru_forward_from(xw, recurrent_kernel, recurrent_bias, h0):
    """The GRU recurrence of :func:`_gru_forward_scan` from the state ``h0`` [batch, units],
    forward only (inference): hs [time, batch, units], the hidden state after each step."""
    def step(h, xw_t):
        return _gru_cell(h, xw_t, recurrent_kernel, recurrent_bias)[0]

    return tf.scan(step, xw, initializer=h0)


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

    def run_from(self, x, initial_state=None):
        """The layer's output from a given state, and its final state (inference only: no
        gradient): how a long sequence is processed in chunks, each starting where the last
        ended.

        Args:
            x: [batch, time, channels] inputs.
            initial_state: [batch, units] float32 hidden state before the first step, or None
                (zeros, as :meth:`call`).

        Returns:
            (outputs [batch, time, units] in the compute dtype, the hidden state after each step
            float32 [batch, time, units]); the state after step t is ``states[:, t]``.
        """
        dtype = self.compute_dtype
        x = tf.convert_to_tensor(x)
        n_batch, n_time = tf.shape(x)[0], tf.shape(x)[1]
        if initial_state is None:
            initial_state = tf.zeros([n_batch, self.units], tf.float32)
        kernel = tf.cast(self.kernel, dtype)
        bias = tf.cast(self.bias, tf.float32)
        x_2d = tf.reshape(tf.transpose(tf.cast(x, dtype), [1, 0, 2]), [-1, kernel.shape[0]])
        xw = tf.cast(tf.matmul(x_2d, kernel), tf.float32) + bias[0]
        xw = tf.reshape(xw, [n_time, n_batch, -1])
        hs = _gru_forward_from(xw, tf.cast(self.recurrent_kernel, tf.float32), bias[1],
                               tf.cast(initial_state, tf.float32))
        states = tf.transpose(hs, [1, 0, 2])
        return tf.cast(states, dtype), states

    def step(self, x, state):
        """One time step from ``state`` (inference: no loop, rank-2 ops only, so that TFLite's
        builtin ops run it): x [batch, channels], state [batch, units] float32 -> the new
        state [batch, units] float32 (also the output)."""
        dtype = self.compute_dtype
        bias = tf.cast(self.bias, tf.float32)
        xw = tf.cast(tf.matmul(tf.cast(x, dtype), tf.cast(self.kernel, dtype)), tf.float32)
        xw += bias[0]
        return _gru_cell(state, xw, tf.cast(self.recurrent_kernel, tf.float32), bias[1])[0]


def rnn_initial_state(layer, batch_size: int = 1) -> list:
    """The zero state of a decoder/encoder RNN (:func:`make_rnn`) as a list of float32
    [batch, units] tensors: [h] for a GRU, [h, c] for an LSTM."""
    units = int(layer.units)
    n = 2 if isinstance(layer, keras.layers.LSTM) else 1
    return [tf.zeros([batch_size, units], tf.float32) for _ in range(n)]


def rnn_with_state(layer, x, state: list, keep: int | None = None):
    """Run a decoder/encoder RNN (:func:`make_rnn`) over ``x`` from ``state`` (inference).

    Args:
        layer: a :class:`FastGRU`, ``keras.layers.GRU`` or ``keras.layers.LSTM``.
        x: [batch, time, channels] inputs (time may be known only at run time when ``keep`` is
            None).
        state: from :func:`rnn_initial_state` or an earlier call.
        keep: return the state after the first ``keep`` steps (default: all of them), so that
            a chunk can look ahead past the steps it keeps.

    Returns:
        (outputs [batch, time, units], state after step ``keep``).
    """
    if isinstance(layer, FastGRU):
        outputs, states = layer.run_from(x, state[0])
        return outputs, [states[:, -1] if keep is None else states[:, keep - 1]]
    # Keras RNNs: the inner loop returns the states; run the kept steps first, then the rest.
    dtype = layer.cell.compute_dtype
    x = tf.convert_to_tensor(x)
    init = [tf.cast(s, dtype) for s in state]
    _, head, kept = layer.inner_loop(sequences=tf.cast(x[:, :keep], dtype), initial_state=init,
                                     mask=None)
    kept = [tf.cast(s, tf.float32) for s in (kept if isinstance(kept, (list, tuple))
                                             else [kept])]
    outputs = head
    if keep is not None and keep < int(x.shape[1]):
        _, tail, _ = layer.inner_loop(sequences=tf.cast(x[:, keep:], dtype),
                                      initial_state=[tf.cast(s, dtype) for s in kept], mask=None)
        outputs = tf.concat([head, tail], axis=1)
    return tf.cast(outputs, layer.compute_dtype), kept


def rnn_step(layer, x, state: list):
    """One step of a decoder/encoder RNN (:func:`make_rnn`) from ``state`` (inference, no
    loop: the layer's cell for the Keras RNNs, :meth:`FastGRU.step` for the fast GRU).

    Args:
        x: [batch, channels] one frame's inputs.
        state: from :func:`rnn_initial_state` or an earlier call.

    Returns:
        (output [batch, units], the new state).
    """
    if isinstance(layer, FastGRU):
        h = layer.step(x, tf.cast(state[0], tf.float32))
        return h, [h]
    dtype = layer.cell.compute_dtype
    out, new = layer.cell(tf.cast(x, dtype), [tf.cast(s, dtype) for s in state])
    new = new if isinstance(new, (list, tuple)) else [new]
    return tf.cast(out, tf.float32), [tf.cast(s, tf.float32) for s in new]


def make_rnn(rnn_type: str, units: int, name: str, dtype=None):
    """The decoder/encoder RNN by ``model.rnn_type``: 'gru' (:class:`FastGRU`), 'keras_gru' or
    'lstm' (the Keras layers); all return sequences."""
    if rnn_type == 'gru':
        return FastGRU(units, name=name, dtype=dtype)
    if rnn_type == 'keras_gru':
        return keras.layers.GRU(units, return_sequences=True, name=name, dtype=dtype)
    if rnn_type == 'lstm':
        return keras.layers.LSTM(units, return_sequences=True, name=name, dtype=dtype)
    raise ValueError(f"model.rnn_type must be 'gru', 'keras_gru' or 'lstm', got {rnn_type!r}")
