"""The DDSP autoencoder of Engel et al. (2020), built from ``ddsp_core``.

features -> preprocessing (f0 -> scaled MIDI, loudness -> scaled dB; or power from the audio)
         -> [optional MFCC -> GRU -> z encoder]
         -> RnnFc decoder (input MLPs, GRU, output MLP, dense to synth controls)
         -> ProcessorGroup: Harmonic + FilteredNoise -> Add -> trainable Reverb (a free
            impulse response, or an exponential decay: ``model.reverb_type``)
         -> audio, compared with the input audio by a multi-scale spectral loss.

Shapes: audio [batch, n_samples]; frame-rate features [batch, n_frames] or
[batch, n_frames, 1], at the rates of the dataset (``config.data``, filled from its manifest).
The fast GRU and MLP layers are in :mod:`trainer.model.layers`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ddsp_core import core, effects, losses, processors, spectral_ops, synths
from trainer.model.config import DataConfig, ModelConfig
from trainer.model.layers import (
    MLP,
    FastGRU,  # noqa: F401 - re-exported
    make_rnn,
    rnn_initial_state,
    rnn_step,
    rnn_with_state,
)

NOISE_SEED_KEY = 'noise_seed'
NOISE_RNG_ALG = 'philox'  # see SeededFilteredNoise
COMPUTE_DTYPES = ('float32', 'bfloat16')


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
        self.rnn = make_rnn(config.rnn_type, config.encoder_rnn_channels, 'encoder_rnn',
                            dtype=dtype)
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
        self.rnn = make_rnn(config.rnn_type, config.rnn_channels, 'decoder_rnn', dtype=dtype)
        self.out_stack = MLP(config.mlp_units, config.mlp_layers, name='out_mlp', dtype=dtype)
        # The synth controls are computed in float32 whatever the policy.
        self.dense_out = keras.layers.Dense(sum(n for _, n in self.output_splits),
                                            name='dense_out', dtype='float32')

    def _stacks(self, inputs: dict, plain: bool = False) -> list:
        """The input MLPs' outputs, in the RNN's compute dtype (``plain``: through
        :meth:`MLP.plain`, the loop-free form a per-frame runtime converts)."""
        stacked = [(stack.plain if plain else stack)(inputs[k])
                   for k, stack in zip(self.input_keys, self.input_stacks, strict=True)]
        # Under a mixed policy the stacks may end in float32 (a single float32 first layer) while
        # the RNN computes in bfloat16: concatenate in the RNN's compute dtype.
        dtype = self.rnn.compute_dtype
        return [tf.cast(part, dtype) for part in stacked]

    @staticmethod
    def _joined(stacked: list):
        """The RNN's input: the input MLPs' outputs side by side."""
        return tf.concat(stacked, axis=-1) if len(stacked) > 1 else stacked[0]

    def _head(self, stacked: list, rnn_out, plain: bool = False) -> dict:
        """concat(input MLPs, RNN) -> output MLP -> dense -> the named splits."""
        x = tf.concat([*stacked, tf.cast(rnn_out, self.rnn.compute_dtype)], axis=-1)
        out_stack = self.out_stack.plain if plain else self.out_stack
        x = self.dense_out(tf.cast(out_stack(x), tf.float32))
        sizes = [n for _, n in self.output_splits]
        parts = tf.split(x, sizes, axis=-1)
        return {name: part for (name, _), part in zip(self.output_splits, parts, strict=True)}

    def call(self, inputs: dict):
        """inputs: {key: [batch, n_frames, channels]} -> {split name: [batch, n_frames, size]}."""
        stacked = self._stacks(inputs)
        return self._head(stacked, self.rnn(self._joined(stacked)))

    # ---- inference with an explicit recurrent state (streaming, export) ---------------------
    def initial_state(self, batch_size: int = 1) -> list:
        """The RNN's zero state: [h] (GRU) or [h, c] (LSTM), float32 [batch, units] each."""
        return rnn_initial_state(self.rnn, batch_size)

    def call_with_state(self, inputs: dict, state: list, keep: int | None = None):
        """:meth:`call` from a given RNN state (inference, no gradient): how a long sequence
        is decoded chunk by chunk, each chunk starting from the state the last one left.

        Args:
            inputs: {key: [batch, n_frames, channels]}.
            state: from :meth:`initial_state` or an earlier call.
            keep: return the state after the first ``keep`` frames (default: all), so that a
                chunk can look ahead past the frames it keeps.

        Returns:
            ({split name: [batch, n_frames, size]}, the state after frame ``keep``).
        """
        stacked = self._stacks(inputs)
        rnn_out, state = rnn_with_state(self.rnn, self._joined(stacked), state, keep)
        return self._head(stacked, rnn_out), state

    def step(self, inputs: dict, state: list):
        """One frame from a given RNN state, without a loop (what a per-frame runtime such as
        the DDSP-VST plugin calls; TFLite converts it to builtin ops).

        Args:
            inputs: {key: [batch, channels]}.
            state: from :meth:`initial_state` or an earlier call.

        Returns:
            ({split name: [batch, size]}, the new state).
        """
        stacked = self._stacks(inputs, plain=True)
        rnn_out, state = rnn_step(self.rnn, self._joined(stacked), state)
        return self._head(stacked, rnn_out, plain=True), state


#: Seed of the fixed noise under a learned exponential decay (``model.reverb_type='exp_decay'``).
ROOM_NOISE_SEED = (0, 20260712)
#: Initial raw gain of that room: exp_sigmoid(0) = 0.41, its reverb about 11 dB over the dry
#: signal at a 1.5 s impulse response (the reference's 2.0: 22 dB over). A room that starts
#: quiet (-2.0: 18 dB under) is left unused: the decoder learns the reverberant tail itself.
ROOM_INITIAL_GAIN = 0.0


def make_reverb(config: ModelConfig) -> effects.Reverb:
    """The autoencoder's trainable reverb (``model.reverb_type``), named ``reverb``."""
    if config.reverb_type == 'exp_decay':
        return LearnedExpDecayReverb(reverb_length=config.reverb_length)
    return effects.Reverb(trainable=True, reverb_length=config.reverb_length, add_dry=True,
                          name='reverb')


class LearnedExpDecayReverb(effects.ExpDecayReverb):
    """The trainable ``ExpDecayReverb`` of ``model.reverb_type='exp_decay'``: a room of two
    learned numbers (gain and decay) over noise drawn once from :data:`ROOM_NOISE_SEED` and kept
    as a non-trainable weight. So its impulse response is the same on every call, in training,
    streaming, transfer and every export, and a checkpoint restores it exactly. The gain starts
    at :data:`ROOM_INITIAL_GAIN`, the decay at ``ExpDecayReverb``'s 4.0.
    """

    def __init__(self, reverb_length: int, name: str = 'reverb'):
        super().__init__(trainable=True, reverb_length=reverb_length, add_dry=True, name=name)
        self._gain.assign([ROOM_INITIAL_GAIN])
        self._noise = self.add_weight(
            name='noise', shape=[self.reverb_length], dtype='float32', trainable=False,
            initializer=lambda shape, dtype=None: tf.random.stateless_uniform(
                shape, seed=ROOM_NOISE_SEED, minval=-1.0, maxval=1.0, alg=NOISE_RNG_ALG))

    def _ir_noise(self, batch_size):
        return tf.convert_to_tensor(self._noise)[tf.newaxis, :]


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


def frame_power_db(audio, sample_rate: int, frame_rate: int, frame_size: int = 1024,
                   n_frames=None):
    """The power feature of the DDSP-VST models: the RMS of each ``frame_size``-sample frame in
    dB (ref 0 dB, floored at -80 dB), frame i centred on sample ``i * hop`` (zero padding at the
    ends), as the reference's ``F0PowerPreprocessor`` computes it and the DDSP-VST plugin
    measures it (``docs/vst.md``; a full-scale sine gives -3.01 dB).

    Args:
        audio: [batch, n_samples] float32 at ``sample_rate``.
        sample_rate, frame_rate: Hz and frames per second (hop = sample_rate // frame_rate).
        frame_size: Samples per analysis frame (1024 at 16 kHz in the plugin).
        n_frames: Frames to keep (centre padding gives n_samples // hop + 1); default all.

    Returns:
        [batch, n_frames] float32, dB.
    """
    power = spectral_ops.compute_power(audio, sample_rate=sample_rate, frame_rate=frame_rate,
                                       frame_size=frame_size, padding='center')
    return power if n_frames is None else power[:, :n_frames]


def _frames(x):
    """[batch, n_frames] -> [batch, n_frames, 1] float32; 3-D passes through."""
    x = tf.convert_to_tensor(x, tf.float32)
    return x[..., tf.newaxis] if x.shape.rank == 2 else x


class Autoencoder(keras.Model):
    """The DDSP autoencoder: features -> decoder -> synthesizers -> audio.

    Call with a dict of features: ``audio`` [batch, n_samples], ``f0_hz`` and ``loudness_db``
    [batch, n_frames] (or [..., 1]), optionally ``power_db`` [batch, n_frames] (computed from
    the audio when the decoder takes power and it is not given) and ``noise_seed`` [2] int32.
    Returns a dict with the inputs, the preprocessed features (``f0_scaled``, ``ld_scaled`` or
    ``pw_scaled``, optionally ``z``), the decoder outputs and ``audio_synth`` [batch, n_samples].
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
        input_keys = tuple(config.decoder_inputs) + (('z',) if config.use_encoder else ())
        self.decoder = RnnFcDecoder(
            config, input_keys,
            (('amps', 1), ('harmonic_distribution', config.n_harmonics),
             ('noise_magnitudes', config.n_noise_bands)), dtype=policy)
        harmonic = synths.Harmonic(n_samples=n_samples, sample_rate=sr,
                                   amp_resample_method=config.amp_resample_method,
                                   name='harmonic')
        noise = SeededFilteredNoise(n_samples=n_samples, window_size=config.noise_window_size,
                                    initial_bias=-5.0, name='filtered_noise')
        dag = [
            (harmonic, ['amps', 'harmonic_distribution', 'f0_hz']),
            (noise, ['noise_magnitudes', NOISE_SEED_KEY]),
            (processors.Add(name='add'), ['filtered_noise/signal', 'harmonic/signal']),
        ]
        if config.use_reverb:
            dag.append((make_reverb(config), ['add/signal']))
        self.processor_group = processors.ProcessorGroup(dag, name='processor_group')
        self.spectral_loss = losses.SpectralLoss(
            fft_sizes=tuple(config.fft_sizes), loss_type='L1', mag_weight=config.mag_weight,
            logmag_weight=config.logmag_weight, name='spectral_loss')

    def build(self, input_shape=None):
        # Sub-layers create their variables on the first call (see ``dummy_features``).
        self.built = True

    def preprocess(self, features: dict) -> dict:
        """Adds ``f0_scaled`` = hz_to_midi(f0_hz) / F0_RANGE and ``ld_scaled`` =
        loudness_db / DB_RANGE + 1 (both [batch, n_frames, 1]); f0_hz/loudness_db become 3-D.

        When the decoder takes ``pw_scaled`` (``model.decoder_inputs``), also ``power_db``
        [batch, n_frames, 1] and ``pw_scaled`` = power_db / DB_RANGE + 1. ``power_db`` is taken
        from the features if given, else computed from ``audio`` by :func:`frame_power_db`.
        """
        f0_hz = _frames(features['f0_hz'])
        out = dict(features)
        out['f0_hz'] = f0_hz
        out['f0_scaled'] = core.hz_to_midi(f0_hz) / spectral_ops.F0_RANGE
        if 'loudness_db' in features:
            loudness_db = _frames(features['loudness_db'])
            out['loudness_db'] = loudness_db
            out['ld_scaled'] = loudness_db / core.DB_RANGE + 1.0
        if 'pw_scaled' in self.decoder.input_keys:
            if 'power_db' in features:
                power_db = _frames(features['power_db'])
            else:
                d = self.data_config
                power_db = frame_power_db(features['audio'], d.sample_rate, d.frame_rate,
                                          self.model_config.power_frame_size,
                                          n_frames=f0_hz.shape[1])[..., tf.newaxis]
            out['power_db'] = power_db
            out['pw_scaled'] = power_db / core.DB_RANGE + 1.0
        return out

    def call(self, features: dict, training: bool = False) -> dict:
        outputs = self.preprocess(features)
        if self.encoder is not None:
            outputs['z'] = self.encoder(outputs['audio'])
        outputs.update(self.decoder(outputs))
        if NOISE_SEED_KEY not in outputs:
            outputs[NOISE_SEED_KEY] = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        group_out = self.processor_group(outputs, return_outputs_dict=True)
        outputs['audio_synth'] = group_out['signal']
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
