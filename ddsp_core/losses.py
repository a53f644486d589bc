"""Losses as Keras 3 layers: multi-scale spectral loss, CREPE embedding loss, loss groups.

A loss is called as `loss(target_audio, audio)` and returns a float32 scalar. Losses are
stateless layers (the CREPE loss holds frozen weights), so they work inside `tf.function` and
in a `tf.distribute` replica context (they return the mean over the replica's batch).
"""

from __future__ import annotations

from typing import Dict, Text

import keras
import tensorflow as tf

from ddsp_core import core, dags, spectral_ops
from ddsp_core.f0 import CREPE_FRAME_SIZE, load_crepe_model

TensorDict = Dict[Text, tf.Tensor]
LOSS_TYPES = ('L1', 'L2', 'COSINE')
_OVERLAP = 0.75  # STFT overlap of SpectralLoss's scales (the reference's)

__all__ = [
    'EmbeddingLoss', 'LOSS_TYPES', 'Loss', 'LossGroup', 'PretrainedCREPEEmbeddingLoss',
    'SpectralLoss', 'amp_loss', 'freq_loss', 'mean_difference',
]


def _check_loss_type(loss_type) -> str:
    upper = loss_type.upper() if isinstance(loss_type, str) else loss_type
    if upper not in LOSS_TYPES:
        raise ValueError(f'loss_type must be one of {LOSS_TYPES} (any case), got {loss_type!r}.')
    return upper


def mean_difference(target, value, loss_type='L1', weights=None):
    """Mean (weighted) difference between two tensors.

    Args:
      target, value: float tensors of the same (broadcastable) shape.
      loss_type: 'L1' (mean |target - value| * weights), 'L2' (mean (target - value)^2 * weights)
        or 'COSINE' (weighted mean over all but the last axis of 1 - cosine similarity of the
        last-axis vectors; 0 for parallel vectors, 2 for opposite ones). Case-insensitive.
      weights: Optional float tensor broadcastable to the difference (L1/L2) or to the
        difference without its last axis (COSINE); None weighs everything 1.

    Returns:
      float32 scalar.
    """
    loss_type = _check_loss_type(loss_type)
    target, value = core.tf_float32(target), core.tf_float32(value)
    if loss_type == 'COSINE':
        cosine = tf.reduce_sum(tf.math.l2_normalize(target, axis=-1)
                               * tf.math.l2_normalize(value, axis=-1), axis=-1)
        distance = 1.0 - cosine
        if weights is None:
            return tf.reduce_mean(distance)
        weights = tf.broadcast_to(core.tf_float32(weights), tf.shape(distance))
        return core.safe_divide(tf.reduce_sum(distance * weights), tf.reduce_sum(weights))
    difference = target - value
    error = tf.abs(difference) if loss_type == 'L1' else difference**2
    if weights is not None:
        error = error * core.tf_float32(weights)
    return tf.reduce_mean(error)


def amp_loss(amp, amp_target, loss_type='L1', weights=None, log=False, amin=1e-05):
    """Difference between amplitudes (e.g. harmonic amplitudes), optionally in log scale.

    Args:
      amp, amp_target: Amplitudes, float tensors of the same shape, e.g. [batch, n_frames, n].
      loss_type: 'L1', 'L2' or 'COSINE' (see `mean_difference`).
      weights: Optional weights broadcastable to the amplitudes.
      log: Compare base-10 logs of the amplitudes, floored at `amin` (a factor of 10 is a
        difference of 1).
      amin: Smallest amplitude in log mode.

    Returns:
      float32 scalar.
    """
    amp, amp_target = core.tf_float32(amp), core.tf_float32(amp_target)
    if log:
        amp = core.log10(tf.maximum(amp, amin))
        amp_target = core.log10(tf.maximum(amp_target, amin))
    return mean_difference(amp_target, amp, loss_type, weights=weights)


def freq_loss(f_hz, f_hz_target, loss_type='L1', weights=None):
    """Difference between frequencies, measured in (fractional) MIDI notes (semitones).

    Args:
      f_hz, f_hz_target: Frequencies in Hz, float tensors of the same shape (0 Hz maps to MIDI 0).
      loss_type: 'L1', 'L2' or 'COSINE' (see `mean_difference`).
      weights: Optional weights broadcastable to the frequencies.

    Returns:
      float32 scalar (for L1: mean absolute pitch error in semitones).
    """
    return mean_difference(core.hz_to_midi(f_hz_target), core.hz_to_midi(f_hz), loss_type,
                           weights=weights)


class Loss(keras.layers.Layer):
    """Base class: a Keras layer whose `call(target_audio, audio, ...)` returns a scalar loss."""

    def __init__(self, name=None, **kwargs):
        super().__init__(name=name, **kwargs)

    def build(self, input_shape=None):
        del input_shape
        self.built = True

    def get_losses_dict(self, *args, **kwargs):
        """{self.name: loss} for the loss of these inputs."""
        return {self.name: self(*args, **kwargs)}


class SpectralLoss(Loss):
    """Multi-scale spectrogram loss between two batches of audio.

    For each FFT size (Hann window, overlap 0.75) it compares magnitude spectrograms and any of
    their time differences, frequency differences, cumulative sums over frequency and logs, plus
    (once, not per scale) the A-weighted loudness, each term scaled by its weight (0 turns it
    off) and summed.
    """

    def __init__(self, fft_sizes=(2048, 1024, 512, 256, 128, 64), loss_type='L1',
                 mag_weight=1.0, delta_time_weight=0.0, delta_freq_weight=0.0,
                 cumsum_freq_weight=0.0, logmag_weight=0.0, loudness_weight=0.0,
                 name='spectral_loss'):
        """Args:
          fft_sizes: FFT (and window) sizes of the scales, in samples.
          loss_type: 'L1', 'L2' or 'COSINE' (see `mean_difference`).
          mag_weight: Weight of |STFT| differences.
          delta_time_weight: Weight of differences of |STFT| between consecutive frames.
          delta_freq_weight: Weight of differences of |STFT| between consecutive bins.
          cumsum_freq_weight: Weight of the cumulative sum of |STFT| over frequency (an
            earth-mover-like distance between spectra).
          logmag_weight: Weight of log |STFT| differences.
          loudness_weight: Weight of A-weighted loudness differences (dB, 250 frames/s,
            n_fft 2048).
          name: Layer name (key of this loss in loss dicts).
        """
        super().__init__(name=name)
        fft_sizes = tuple(int(size) for size in fft_sizes)
        if not fft_sizes or min(fft_sizes) < 4:
            raise ValueError(f'SpectralLoss: fft_sizes must be a non-empty list of sizes >= 4, '
                             f'got {fft_sizes}.')
        self.fft_sizes = fft_sizes
        self.loss_type = _check_loss_type(loss_type)
        self.mag_weight = float(mag_weight)
        self.delta_time_weight = float(delta_time_weight)
        self.delta_freq_weight = float(delta_freq_weight)
        self.cumsum_freq_weight = float(cumsum_freq_weight)
        self.logmag_weight = float(logmag_weight)
        self.loudness_weight = float(loudness_weight)

    def get_config(self):
        config = super().get_config()
        config.update(fft_sizes=self.fft_sizes, loss_type=self.loss_type,
                      mag_weight=self.mag_weight, delta_time_weight=self.delta_time_weight,
                      delta_freq_weight=self.delta_freq_weight,
                      cumsum_freq_weight=self.cumsum_freq_weight,
                      logmag_weight=self.logmag_weight, loudness_weight=self.loudness_weight)
        return config

    def call(self, target_audio, audio, weights=None):
        """Loss between target and generated audio.

        Args:
          target_audio: float32 [batch, n_samples].
          audio: float32 [batch, n_samples] (same shape).
          weights: Optional weights broadcastable to each compared spectrogram
            [batch, n_frames, n_bins] (and its differences); None weighs everything 1.

        Returns:
          float32 scalar.
        """
        target_audio, audio = core.tf_float32(target_audio), core.tf_float32(audio)
        if self._fast_path_applies(target_audio, audio, weights):
            # Like the generic path, a term with a weight <= 0 is left out.
            return _l1_mag_logmag_loss(target_audio, audio, self.fft_sizes,
                                       max(self.mag_weight, 0.0), max(self.logmag_weight, 0.0))
        loss = tf.constant(0.0)

        def term(weight, target, value):
            return weight * mean_difference(target, value, self.loss_type, weights=weights)

        for size in self.fft_sizes:
            target_mag = spectral_ops.compute_mag(target_audio, size=size, overlap=_OVERLAP)
            value_mag = spectral_ops.compute_mag(audio, size=size, overlap=_OVERLAP)
            if self.mag_weight > 0:
                loss += term(self.mag_weight, target_mag, value_mag)
            if self.delta_time_weight > 0:
                loss += term(self.delta_time_weight, core.diff(target_mag, axis=1),
                             core.diff(value_mag, axis=1))
            if self.delta_freq_weight > 0:
                loss += term(self.delta_freq_weight, core.diff(target_mag, axis=2),
                             core.diff(value_mag, axis=2))
            if self.cumsum_freq_weight > 0:
                loss += term(self.cumsum_freq_weight, tf.cumsum(target_mag, axis=2),
                             tf.cumsum(value_mag, axis=2))
            if self.logmag_weight > 0:
                loss += term(self.logmag_weight, core.safe_log(target_mag),
                             core.safe_log(value_mag))
        if self.loudness_weight > 0:
            target = spectral_ops.compute_loudness(target_audio, n_fft=2048, use_tf=True)
            value = spectral_ops.compute_loudness(audio, n_fft=2048, use_tf=True)
            loss += term(self.loudness_weight, target, value)
        return loss

    def _fast_path_applies(self, target_audio, audio, weights) -> bool:
        """Whether :func:`_l1_mag_logmag_loss` computes this loss (the paper's configuration:
        L1 on magnitudes and log magnitudes only, unweighted, static [batch, n_samples])."""
        return (self.loss_type == 'L1' and weights is None
                and self.delta_time_weight <= 0 and self.delta_freq_weight <= 0
                and self.cumsum_freq_weight <= 0 and self.loudness_weight <= 0
                and audio.shape.rank == 2 and audio.shape.is_fully_defined()
                and target_audio.shape == audio.shape)


@tf.function(jit_compile=True)
def _mag_logmag_terms(target_stft, stft, mag_weight, logmag_weight):
    """mag_weight * mean|Δ|S|| + logmag_weight * mean|Δ safe_log|S||, one XLA fusion."""
    target_mag, mag = tf.abs(target_stft), tf.abs(stft)
    count = tf.cast(tf.size(mag), tf.float32)
    return (mag_weight * tf.reduce_sum(tf.abs(target_mag - mag))
            + logmag_weight * tf.reduce_sum(tf.abs(core.safe_log(target_mag)
                                                   - core.safe_log(mag)))
            ) / count


@tf.function(jit_compile=True)
def _mag_logmag_stft_gradients(target_stft, stft, mag_weight, logmag_weight, upstream, fft_size):
    """Gradients of :func:`_mag_logmag_terms` w.r.t. both STFTs, pre-scaled for the rfft adjoint
    (`fft_size` is the FFT length, `spectral_ops.fft_length` of the frame size).

    Same conventions as TensorFlow's autodiff of the generic path: d|x|/dx = sign(x) with
    sign(0) = 0, no gradient through safe_log's floor, d|S|/dS = S / |S| and 0 at S = 0. Each
    returned complex gradient is multiplied by fft_size * [1, 1/2, ..., 1/2, 1] (1 at the
    Nyquist bin only for even sizes), so that ``irfft(g)`` is the gradient w.r.t. the
    windowed frames (the adjoint of ``rfft``).
    """
    target_mag, mag = tf.abs(target_stft), tf.abs(stft)
    count = tf.cast(tf.size(mag), tf.float32)
    scale = upstream / count
    mag_sign = tf.sign(mag - target_mag)
    log_sign = tf.sign(core.safe_log(mag) - core.safe_log(target_mag))

    def inverse(m):  # d safe_log(m) / dm
        return tf.where(m > 0.0, 1.0 / tf.where(m > 0.0, m, 1.0), 0.0)

    d_mag = scale * (mag_weight * mag_sign + logmag_weight * log_sign * inverse(mag))
    d_target_mag = -scale * (mag_weight * mag_sign + logmag_weight * log_sign * inverse(target_mag))

    n_bins = stft.shape[-1]
    adjoint = tf.concat([[1.0], tf.fill([n_bins - 2], 0.5),
                         [1.0 if fft_size % 2 == 0 else 0.5]], axis=0) * float(fft_size)

    def to_complex(d, own_stft, own_mag):
        # d * S / |S|, with the phase S / |S| (bounded by 1) formed first: d holds 1 / |S| from
        # the log term, and d / |S| would overflow for |S| below ~1e-19.
        factor = d * adjoint
        return tf.complex(tf.math.divide_no_nan(tf.math.real(own_stft), own_mag) * factor,
                          tf.math.divide_no_nan(tf.math.imag(own_stft), own_mag) * factor)

    return to_complex(d_target_mag, target_stft, target_mag), to_complex(d_mag, stft, mag)


def _l1_mag_logmag_loss(target_audio, audio, fft_sizes, mag_weight, logmag_weight):
    """SpectralLoss for L1 magnitude + log-magnitude terms, with a hand-written gradient.

    Equal (to float32 round-off) to the generic path in value and gradient. TensorFlow's
    autodiff through framing (a gather, whose gradient is a segment sum), the window, the rfft,
    |.|, the log and the L1 takes about twice as long as this: per scale one fused pass computes
    the gradient w.r.t. each STFT bin, then the adjoint of the STFT is an irfft, the window and
    an overlap-add (measured on a 2-core CPU at batch 8 x 4 s: 150 -> 93 ms for the six scales,
    forward and backward). No second-order gradients.

    Args:
      target_audio, audio: float32 [batch, n_samples].

    Returns:
      float32 scalar.
    """

    @tf.custom_gradient
    def run(target_audio, audio):
        n_samples = audio.shape[-1]
        loss = tf.constant(0.0)
        stfts = []
        for size in fft_sizes:
            target_stft = spectral_ops.stft(target_audio, frame_size=size, overlap=_OVERLAP)
            stft = spectral_ops.stft(audio, frame_size=size, overlap=_OVERLAP)
            loss += _mag_logmag_terms(target_stft, stft, mag_weight, logmag_weight)
            stfts.append((size, target_stft, stft))

        def grad(upstream):
            grads = [tf.zeros_like(target_audio), tf.zeros_like(audio)]
            for size, target_stft, stft in stfts:
                hop = spectral_ops._hop_from_overlap(size, _OVERLAP, 'SpectralLoss')
                n_fft = spectral_ops.fft_length(size)  # frames are zero-padded to n_fft
                window = tf.signal.hann_window(size, periodic=True)
                bins_grads = _mag_logmag_stft_gradients(target_stft, stft, mag_weight,
                                                        logmag_weight, upstream, n_fft)
                for i, bins_grad in enumerate(bins_grads):
                    frames_grad = tf.signal.irfft(bins_grad, [n_fft])[..., :size] * window
                    # Adjoint of framing the end-padded signal: overlap-add, then crop the pad.
                    grads[i] += tf.signal.overlap_and_add(frames_grad, hop)[:, :n_samples]
            return grads[0], grads[1]

        return loss, grad

    return run(target_audio, audio)


class EmbeddingLoss(Loss):
    """Distance between embeddings of target and generated audio under a fixed model.

    Subclasses set `self.pretrained_model`: a callable mapping audio [batch, n_samples] to an
    embedding [batch, ...].
    """

    def __init__(self, weight=1.0, loss_type='L1', pretrained_model=None,
                 name='embedding_loss'):
        super().__init__(name=name)
        self.weight = float(weight)
        self.loss_type = _check_loss_type(loss_type)
        self.pretrained_model = pretrained_model

    def call(self, target_audio, audio):
        """Args: target_audio, audio: float32 [batch, n_samples]. Returns a float32 scalar."""
        if self.pretrained_model is None:
            raise ValueError(f'{type(self).__name__} ({self.name!r}) has no pretrained_model.')
        target_audio, audio = core.tf_float32(target_audio), core.tf_float32(audio)
        target_emb = self.pretrained_model(target_audio)
        synth_emb = self.pretrained_model(audio)
        return self.weight * mean_difference(target_emb, synth_emb, self.loss_type)


class PretrainedCREPE(keras.layers.Layer):
    """Frozen CREPE as a differentiable audio embedding.

    Frames 16 kHz audio [batch, n_samples] into 1024-sample windows every `hop_size` samples
    ('center' padding), normalises each frame as CREPE does (zero mean, unit standard deviation)
    and returns the output of CREPE layer `activation_layer`: [batch, n_frames, ...] (for
    'classifier', the 360 pitch-bin activations). Gradients flow to the audio; CREPE's weights
    are not trainable.
    """

    def __init__(self, model_capacity='tiny', activation_layer='classifier', hop_size=256,
                 name='pretrained_crepe'):
        super().__init__(name=name, trainable=False)
        crepe_model = load_crepe_model(model_capacity)
        layer_names = [layer.name for layer in crepe_model.layers]
        if activation_layer not in layer_names:
            raise ValueError(f'activation_layer={activation_layer!r} is not a layer of CREPE '
                             f'{model_capacity!r}; choose one of {layer_names}.')
        if int(hop_size) < 1:
            raise ValueError(f'hop_size must be a positive number of samples, got {hop_size!r}.')
        self.model_capacity = model_capacity
        self.activation_layer = activation_layer
        self.hop_size = int(hop_size)
        self.embedding_model = keras.Model(
            inputs=crepe_model.inputs,
            outputs=crepe_model.get_layer(activation_layer).output,
            name=f'crepe_{model_capacity}_{activation_layer}'.replace('-', '_'))
        self.embedding_model.trainable = False

    def build(self, input_shape=None):
        del input_shape
        self.built = True

    def call(self, audio):
        """Args: audio: float32 [batch, n_samples] at 16 kHz. Returns [batch, n_frames, ...]."""
        audio = core.tf_float32(audio)
        if audio.shape.rank == 1:
            audio = audio[tf.newaxis]
        audio = spectral_ops.pad(audio, CREPE_FRAME_SIZE, self.hop_size, padding='center')
        frames = tf.signal.frame(audio, CREPE_FRAME_SIZE, self.hop_size)  # [b, t, 1024]
        frames = frames - tf.reduce_mean(frames, axis=-1, keepdims=True)
        variance = tf.reduce_mean(frames**2, axis=-1, keepdims=True)
        # crepe divides by max(std, 1e-8); flooring the variance keeps the gradient finite.
        frames = frames / tf.sqrt(tf.maximum(variance, 1e-16))
        batch_frames = tf.shape(frames)[:2]
        flat = tf.reshape(frames, [-1, CREPE_FRAME_SIZE])
        embedding = self.embedding_model(flat, training=False)
        out_shape = tf.concat([batch_frames, tf.shape(embedding)[1:]], axis=0)
        return tf.reshape(embedding, out_shape)


class PretrainedCREPEEmbeddingLoss(EmbeddingLoss):
    """Distance between frozen-CREPE embeddings (pitch-bin activations by default) of target and
    generated 16 kHz audio; differentiable w.r.t. the audio."""

    def __init__(self, weight=1.0, loss_type='L1', model_capacity='tiny',
                 activation_layer='classifier', name='pretrained_crepe_embedding_loss',
                 hop_size=256):
        """Args:
          weight: Scale of the loss.
          loss_type: 'L1', 'L2' or 'COSINE' (see `mean_difference`).
          model_capacity: CREPE size whose weights are installed ('tiny' or 'full' here).
          activation_layer: Name of the CREPE layer whose output is the embedding, e.g.
            'classifier' (360 sigmoid pitch activations) or 'conv6-maxpool'.
          name: Layer name.
          hop_size: Samples between CREPE frames (256 = 62.5 frames/s at 16 kHz).
        """
        pretrained = PretrainedCREPE(model_capacity=model_capacity,
                                     activation_layer=activation_layer, hop_size=hop_size,
                                     name=f'{name}_crepe')
        super().__init__(weight=weight, loss_type=loss_type, pretrained_model=pretrained,
                         name=name)


class LossGroup(dags.DAGLayer):
    """Runs a DAG of losses over a dict of tensors and returns the named losses.

    Each node is `(loss, ['input_key', ...])` (see `ddsp_core.dags`): the loss's
    `get_losses_dict` is called on the looked-up inputs, e.g.
    `(SpectralLoss(), ['audio', 'audio_synth'])`, and the group returns all those dicts merged
    (so a nested LossGroup contributes each of its losses). Losses can also be functions
    (`amp_loss`, `freq_loss`: their scalar is stored under their name), and can be passed by
    keyword and named by string in the DAG.
    """

    def __init__(self, dag: dags.DAG, **kwarg_losses):
        super().__init__(dag, **kwarg_losses)

    @property
    def loss_names(self):
        """Names of the losses, in DAG order (the keys of the returned dict)."""
        return self.module_names

    def call(self, outputs: TensorDict, **kwargs) -> Dict[Text, tf.Tensor]:
        """Args: outputs: dict of (possibly nested) tensors the DAG's keys refer to.
        **kwargs: passed to every loss. Returns {loss name: float32 scalar}."""
        results = self.run_dag(outputs, **kwargs)
        named = {}
        for name in self.module_names:
            # A loss layer (or a nested LossGroup) stores its get_losses_dict(); a plain
            # function its scalar.
            result = results[name]
            named.update(result if isinstance(result, dict) else {name: result})
        return named

    def get_losses_dict(self, outputs, **kwargs):
        """{loss name: float32 scalar} for every loss in the DAG (same as calling the group)."""
        return self(outputs, **kwargs)
