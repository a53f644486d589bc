"""Effects: processors that transform audio (reverbs, a time-varying FIR filter, a modulated delay).

Audio is float32 [batch, n_samples]; frame-rate controls are [batch, n_frames, channels].

Trainable effects (`Reverb(trainable=True)` and its subclasses) create their variables when they
are constructed, so a model built under a `tf.distribute` strategy's scope gets distributed
variables, and the variables exist (for checkpoints and optimizers) before the first call.
"""

from __future__ import annotations

from typing import Callable, Optional, Text

import numpy as np
import tensorflow as tf

from ddsp_core import core, processors, synths
from ddsp_core.dsp import filters

TensorDict = processors.TensorDict

__all__ = ['ExpDecayReverb', 'FIRFilter', 'FilteredNoiseReverb', 'ModDelay', 'Reverb']


def _audio(audio, processor: Text) -> tf.Tensor:
    audio = core.tf_float32(audio)
    if len(audio.shape) != 2:
        raise ValueError(f'{processor}: audio must be [batch, n_samples], got shape '
                         f'{audio.shape}.')
    return audio


def _batch_column(x, name: Text, processor: Text) -> tf.Tensor:
    """A per-example scalar control as [batch, 1]: accepts (), [batch], [batch, 1], [b, 1, 1]."""
    x = core.tf_float32(x)
    rank = len(x.shape)
    if rank == 0:
        return tf.reshape(x, [1, 1])
    if rank == 1:
        return x[:, tf.newaxis]
    if rank == 2 and x.shape[1] == 1:
        return x
    if rank == 3 and x.shape[1] == 1 and x.shape[2] == 1:
        return x[:, :, 0]
    raise ValueError(f'{processor}: {name} must be one value per example ([batch, 1]), got shape '
                     f'{x.shape}.')


def _audio_rate_control(control: tf.Tensor, n_samples: int) -> tf.Tensor:
    """[batch, n_frames, 1] / [batch, n_frames] / scalar control -> broadcastable to
    [batch, n_samples] (resampled linearly when 1 < n_frames != n_samples)."""
    control = core.tf_float32(control)
    rank = len(control.shape)
    if rank == 3:
        if control.shape[-1] != 1:
            raise ValueError(f'a time-varying gain must be [batch, n_frames, 1], got '
                             f'{control.shape}.')
        control = control[..., 0]
        rank = 2
    if rank == 2:
        n_frames = control.shape[1]
        if n_frames is not None and n_frames not in (1, n_samples):
            control = core.resample(control, n_samples)
        return control
    if rank <= 1:
        return tf.reshape(control, [-1, 1]) if rank == 1 else control
    raise ValueError(f'control must be a scalar, [batch, n_frames] or [batch, n_frames, 1], got '
                     f'shape {control.shape}.')


def _decaying_noise(shape, dtype=None):
    """Initial learned impulse response: quiet Gaussian noise decaying by ~43 dB over its length."""
    length = int(shape[-1])
    envelope = np.exp(-5.0 * np.arange(length) / max(length, 1)).astype(np.float32)
    return 1e-3 * tf.random.normal(shape, dtype=tf.float32) * envelope


class Reverb(processors.Processor):
    """Convolution reverb with a given or learned impulse response (IR).

    The IR's first sample is zeroed: the direct ("dry") path is added separately when
    `add_dry`, so the IR models only the reflections.
    """

    # Subclasses that build the IR from other variables set this to False.
    _LEARNS_IR = True

    def __init__(self, trainable: bool = False, reverb_length: int = 48000, add_dry: bool = True,
                 name: Text = 'reverb'):
        """Args:
          trainable: Learn the IR as a variable of `reverb_length` samples (initialised as quiet
            decaying noise) instead of taking it as an input.
          reverb_length: IR length in samples (used when trainable).
          add_dry: Return dry + wet (True) or only the wet signal.
        """
        super().__init__(name=name, trainable=trainable)
        if int(reverb_length) < 2:
            raise ValueError(f'{type(self).__name__}: reverb_length must be >= 2 samples, got '
                             f'{reverb_length}.')
        self._reverb_length = int(reverb_length)
        self._add_dry = bool(add_dry)
        if self.trainable and self._LEARNS_IR:
            self._ir = self.add_weight(name='ir', shape=[self._reverb_length],
                                       initializer=_decaying_noise, dtype='float32',
                                       trainable=True)

    @property
    def reverb_length(self) -> int:
        return self._reverb_length

    @property
    def add_dry(self) -> bool:
        return self._add_dry

    def _mask_dry_ir(self, ir: tf.Tensor) -> tf.Tensor:
        """Zeroes the first sample of [batch, ir_size] impulse responses."""
        return tf.concat([tf.zeros_like(ir[:, :1]), ir[:, 1:]], axis=1)

    def _match_dimensions(self, audio: tf.Tensor, ir: tf.Tensor) -> tf.Tensor:
        """IR as [batch or 1, ir_size] float32; [ir_size] and [batch, ir_size, 1] are accepted."""
        ir = core.tf_float32(ir)
        if len(ir.shape) == 1:
            ir = ir[tf.newaxis, :]
        elif len(ir.shape) == 3 and ir.shape[-1] == 1:
            ir = ir[..., 0]
        if len(ir.shape) != 2:
            raise ValueError(f'{type(self).__name__}: ir must be [batch, ir_size] (or [ir_size]), '
                             f'got shape {ir.shape}.')
        ir_batch, audio_batch = ir.shape[0], audio.shape[0]
        if ir_batch not in (1, None) and audio_batch is not None and ir_batch != audio_batch:
            raise ValueError(f'{type(self).__name__}: ir batch ({ir_batch}) must be 1 or match '
                             f'the audio batch ({audio_batch}).')
        return ir

    def get_controls(self, audio: tf.Tensor, ir: Optional[tf.Tensor] = None) -> TensorDict:
        """Args:
          audio: [batch, n_samples] dry audio.
          ir: [batch, ir_size] impulse response; required unless trainable, and not accepted
            when trainable (the learned IR is used).

        Returns:
          {'audio': [batch, n_samples], 'ir': [batch or 1, ir_size]}.
        """
        if self.trainable:
            if ir is not None:
                raise ValueError(f'{type(self).__name__} ({self.name!r}) is trainable and uses '
                                 f'its learned impulse response; do not pass `ir`.')
            ir = tf.convert_to_tensor(self._ir)[tf.newaxis, :]
        elif ir is None:
            raise ValueError(f'{type(self).__name__} ({self.name!r}) is not trainable, so it '
                             f'needs an impulse response: call it with (audio, ir).')
        return {'audio': audio, 'ir': ir}

    def get_signal(self, audio: tf.Tensor, ir: tf.Tensor) -> tf.Tensor:
        """Convolves the audio with the IR (first sample zeroed).

        Args:
          audio: [batch, n_samples] dry audio.
          ir: [batch or 1, ir_size] impulse response.

        Returns:
          [batch, n_samples]: wet (+ dry when add_dry), wet cropped to the audio length with no
          delay compensation (the IR starts at time 0).
        """
        audio = _audio(audio, type(self).__name__)
        ir = self._mask_dry_ir(self._match_dimensions(audio, ir))
        wet = core.fft_convolve(audio, ir, padding='same', delay_compensation=0)
        return wet + audio if self._add_dry else wet

    def initial_state(self, ir_size: int, batch_size: int = 1) -> TensorDict:
        """The state before a signal's first block (:meth:`get_signal_chunk`): no tail."""
        return {'tail': tf.zeros([batch_size, int(ir_size) - 1], tf.float64)}

    def get_signal_chunk(self, audio: tf.Tensor, ir: tf.Tensor,
                         state: Optional[TensorDict] = None):
        """Reverberates one block of a longer signal (stateful, any length: streaming).

        The convolution's tail beyond the block is carried (float64) into the next block, so
        blocks processed one after another equal `get_signal` of the whole signal (whose wet
        part is cropped to its length) up to float rounding; a single block is `get_signal`.

        Args:
          audio: [batch, n] dry audio (n may be known only at run time).
          ir: [batch or 1, ir_size] impulse response (first sample zeroed here, as in
            `get_signal`).
          state: {'tail': [batch, ir_size - 1] float64} from the previous block, or None.

        Returns:
          ([batch, n] wet (+ dry when add_dry), the state after the block).
        """
        audio = _audio(audio, type(self).__name__)
        ir = self._mask_dry_ir(self._match_dimensions(audio, ir))
        wet, tail = filters.convolve_block(audio, ir, None if state is None else state['tail'])
        return (wet + audio if self._add_dry else wet), {'tail': tail}


class ExpDecayReverb(Reverb):
    """Reverb whose IR is noise under an exponentially decaying envelope.

    IR = scale_fn(gain) * exp(-(2 + exp(decay)) * t) * noise, with t running from 0 to 1 over
    the IR and noise uniform in [-1, 1] (drawn anew each call). So the amplitude falls by
    (2 + exp(decay)) nepers over `reverb_length` samples.
    """

    _LEARNS_IR = False

    def __init__(self, trainable: bool = False, reverb_length: int = 48000,
                 scale_fn: Optional[Callable] = core.exp_sigmoid, add_dry: bool = True,
                 name: Text = 'exp_decay_reverb'):
        """Args:
          trainable: Learn `gain` and `decay` as variables (initial raw values 2.0 and 4.0).
          reverb_length: IR length in samples.
          scale_fn: Maps the raw gain to a linear gain (None: use as is).
          add_dry: Return dry + wet (True) or only wet.
        """
        super().__init__(trainable=trainable, reverb_length=reverb_length, add_dry=add_dry,
                         name=name)
        self._scale_fn = scale_fn
        if self.trainable:
            self._gain = self.add_weight(name='gain', shape=[1], dtype='float32',
                                         initializer=lambda shape, dtype=None: tf.fill(shape, 2.0))
            self._decay = self.add_weight(name='decay', shape=[1], dtype='float32',
                                          initializer=lambda shape, dtype=None: tf.fill(shape, 4.0))

    def _get_ir(self, gain: tf.Tensor, decay: tf.Tensor) -> tf.Tensor:
        """gain, decay: [batch, 1] raw values -> [batch, reverb_length] IR."""
        gain = self._scale_fn(gain) if self._scale_fn is not None else gain
        decay_exponent = 2.0 + tf.exp(decay)
        time = tf.linspace(0.0, 1.0, self._reverb_length)[tf.newaxis, :]
        return gain * tf.exp(-decay_exponent * time) * self._ir_noise(tf.shape(gain)[0])

    def _ir_noise(self, batch_size: tf.Tensor) -> tf.Tensor:
        """[batch_size or 1, reverb_length] noise in [-1, 1] under the envelope: drawn anew on
        each call (a subclass may hold it fixed)."""
        return tf.random.uniform([batch_size, self._reverb_length], -1.0, 1.0)

    def get_controls(self, audio: tf.Tensor, gain: Optional[tf.Tensor] = None,
                     decay: Optional[tf.Tensor] = None) -> TensorDict:
        """Args:
          audio: [batch, n_samples] dry audio.
          gain: [batch, 1] raw gain (before scale_fn); required unless trainable.
          decay: [batch, 1] raw decay; the envelope falls by 2 + exp(decay) nepers over the IR.

        Returns:
          {'audio': [batch, n_samples], 'ir': [batch or 1, reverb_length]}.
        """
        name = type(self).__name__
        if self.trainable:
            if gain is not None or decay is not None:
                raise ValueError(f'{name} ({self.name!r}) is trainable and uses its learned gain '
                                 f'and decay; do not pass them.')
            gain = tf.convert_to_tensor(self._gain)[tf.newaxis, :]
            decay = tf.convert_to_tensor(self._decay)[tf.newaxis, :]
        elif gain is None or decay is None:
            raise ValueError(f'{name} ({self.name!r}) is not trainable, so it needs `gain` and '
                             f'`decay`: call it with (audio, gain, decay).')
        gain = _batch_column(gain, 'gain', name)
        decay = _batch_column(decay, 'decay', name)
        return {'audio': audio, 'ir': self._get_ir(gain, decay)}


class FilteredNoiseReverb(Reverb):
    """Reverb whose IR is filtered noise with a time-varying spectrum (frequency-dependent
    decay)."""

    _LEARNS_IR = False

    def __init__(self, trainable: bool = False, reverb_length: int = 48000,
                 window_size: int = 257, n_frames: int = 1000, n_filter_banks: int = 16,
                 scale_fn: Optional[Callable] = core.exp_sigmoid, initial_bias: float = -3.0,
                 add_dry: bool = True, name: Text = 'filtered_noise_reverb'):
        """Args:
          trainable: Learn the [n_frames, n_filter_banks] magnitudes as a variable.
          reverb_length: IR length in samples; must split into n_frames equal frames.
          window_size: FIR length of each frame's filter.
          n_frames: Time frames of the IR's magnitudes.
          n_filter_banks: Frequency bands of the magnitudes, from 0 Hz to Nyquist.
          scale_fn: Applied to magnitudes + initial_bias (None: use as is).
          initial_bias: Added to the raw magnitudes.
          add_dry: Return dry + wet (True) or only wet.
        """
        super().__init__(trainable=trainable, reverb_length=reverb_length, add_dry=add_dry,
                         name=name)
        n_frames = int(n_frames)
        frame_size = int(np.ceil(self._reverb_length / max(n_frames, 1)))
        if n_frames < 1 or int(np.ceil(self._reverb_length / frame_size)) != n_frames:
            raise ValueError(f'FilteredNoiseReverb: reverb_length ({reverb_length}) cannot be '
                             f'split into n_frames ({n_frames}) equal frames; choose n_frames '
                             f'dividing reverb_length.')
        self._n_frames = n_frames
        self._n_filter_banks = int(n_filter_banks)
        self._synth = synths.FilteredNoise(n_samples=self._reverb_length, window_size=window_size,
                                           scale_fn=scale_fn, initial_bias=initial_bias,
                                           name=f'{name}_noise')
        if self.trainable:
            self._magnitudes = self.add_weight(
                name='magnitudes', shape=[n_frames, self._n_filter_banks], dtype='float32',
                initializer=lambda shape, dtype=None: 0.5 * tf.random.normal(shape))

    def get_controls(self, audio: tf.Tensor, magnitudes: Optional[tf.Tensor] = None) -> TensorDict:
        """Args:
          audio: [batch, n_samples] dry audio.
          magnitudes: [batch, n_frames, n_filter_banks] raw IR magnitudes (before initial_bias
            and scale_fn); required unless trainable.

        Returns:
          {'audio': [batch, n_samples], 'ir': [batch or 1, reverb_length]}.
        """
        name = type(self).__name__
        if self.trainable:
            if magnitudes is not None:
                raise ValueError(f'{name} ({self.name!r}) is trainable and uses its learned '
                                 f'magnitudes; do not pass them.')
            magnitudes = tf.convert_to_tensor(self._magnitudes)[tf.newaxis]
        elif magnitudes is None:
            raise ValueError(f'{name} ({self.name!r}) is not trainable, so it needs '
                             f'`magnitudes`: call it with (audio, magnitudes).')
        return {'audio': audio, 'ir': self._synth(magnitudes)}


class FIRFilter(processors.Processor):
    """Time-varying linear-phase FIR filter given by frame-wise magnitude responses."""

    def __init__(self, window_size: int = 257, scale_fn: Optional[Callable] = core.exp_sigmoid,
                 name: Text = 'fir_filter'):
        """Args:
          window_size: Filter length in samples (frequency resolution vs. time resolution).
          scale_fn: Applied to the raw magnitudes (None: use as is).
        """
        super().__init__(name=name)
        self.window_size = int(window_size)
        self.scale_fn = scale_fn

    def get_controls(self, audio: tf.Tensor, magnitudes: tf.Tensor) -> TensorDict:
        """Args:
          audio: [batch, n_samples].
          magnitudes: [batch, n_frames, n_filter_banks] raw magnitudes, banks from 0 Hz to
            Nyquist.

        Returns:
          {'audio': audio, 'magnitudes': scale_fn(magnitudes)} (linear gains).
        """
        magnitudes = core.tf_float32(magnitudes)
        if self.scale_fn is not None:
            magnitudes = self.scale_fn(magnitudes)
        return {'audio': audio, 'magnitudes': magnitudes}

    def get_signal(self, audio: tf.Tensor, magnitudes: tf.Tensor) -> tf.Tensor:
        """Args:
          audio: [batch, n_samples]; must split into n_frames equal frames.
          magnitudes: [batch, n_frames, n_filter_banks] linear gains from 0 Hz to Nyquist.

        Returns:
          [batch, n_samples] filtered audio (delay-compensated, zero-phase).
        """
        audio = _audio(audio, 'FIRFilter')
        magnitudes = core.tf_float32(magnitudes)
        if len(magnitudes.shape) != 3:
            raise ValueError(f'FIRFilter: magnitudes must be [batch, n_frames, n_filter_banks], '
                             f'got shape {magnitudes.shape}.')
        return core.frequency_filter(audio, magnitudes, window_size=self.window_size)


class ModDelay(processors.Processor):
    """Modulated delay line: chorus, flanger and vibrato.

    The delay is `center_ms + depth_ms * (2 * phase - 1)` milliseconds (clipped at 0), so a phase
    in [0, 1] sweeps it over center ± depth. Typical settings: chorus, center ~25 ms, depth ~5 ms,
    add_dry; flanger, center ~3 ms, depth ~2 ms, add_dry; vibrato, center ~depth ~5 ms, no dry
    and a periodic phase (e.g. an LFO of a few Hz).
    """

    def __init__(self, center_ms: float = 15.0, depth_ms: float = 10.0, sample_rate: int = 16000,
                 gain_scale_fn: Optional[Callable] = core.exp_sigmoid,
                 phase_scale_fn: Optional[Callable] = tf.nn.sigmoid, add_dry: bool = True,
                 name: Text = 'mod_delay'):
        """Args:
          center_ms: Delay at phase 0.5, in milliseconds.
          depth_ms: Largest deviation from the centre delay, in milliseconds.
          sample_rate: Hz.
          gain_scale_fn: Maps the raw wet gain to a linear gain (None: use as is).
          phase_scale_fn: Maps the raw phase to [0, 1] (None: use as is).
          add_dry: Return dry + wet (True) or only wet.
        """
        super().__init__(name=name)
        if center_ms < 0 or depth_ms < 0 or center_ms + depth_ms <= 0:
            raise ValueError(f'ModDelay: center_ms and depth_ms must be >= 0 with a positive sum, '
                             f'got center_ms={center_ms}, depth_ms={depth_ms}.')
        self.center_ms = float(center_ms)
        self.depth_ms = float(depth_ms)
        self.sample_rate = int(sample_rate)
        self.gain_scale_fn = gain_scale_fn
        self.phase_scale_fn = phase_scale_fn
        self.add_dry = bool(add_dry)

    def get_controls(self, audio: tf.Tensor, gain: tf.Tensor, phase: tf.Tensor) -> TensorDict:
        """Args:
          audio: [batch, n_samples].
          gain: [batch, n_frames, 1] raw wet gain.
          phase: [batch, n_frames, 1] raw delay phase.

        Returns:
          {'audio': audio, 'gain': scaled gain, 'phase': phase in [0, 1]}.
        """
        gain = core.tf_float32(gain)
        phase = core.tf_float32(phase)
        if self.gain_scale_fn is not None:
            gain = self.gain_scale_fn(gain)
        if self.phase_scale_fn is not None:
            phase = self.phase_scale_fn(phase)
        return {'audio': audio, 'gain': gain, 'phase': phase}

    def get_signal(self, audio: tf.Tensor, gain: tf.Tensor, phase: tf.Tensor) -> tf.Tensor:
        """Args:
          audio: [batch, n_samples].
          gain: [batch, n_frames, 1] linear wet gain (n_frames may equal n_samples).
          phase: [batch, n_frames, 1] in [0, 1]; the delay is center_ms + depth_ms * (2*phase-1).
            Frame-rate controls are interpolated linearly to audio rate.

        Returns:
          [batch, n_samples] delayed audio times gain (+ dry when add_dry).
        """
        audio = _audio(audio, 'ModDelay')
        n_samples = int(audio.shape[1])
        gain = _audio_rate_control(gain, n_samples)
        phase = _audio_rate_control(phase, n_samples)
        max_delay_ms = self.center_ms + self.depth_ms
        max_length = max(int(round(self.sample_rate * max_delay_ms / 1000.0)), 1)
        delay_ms = self.center_ms + self.depth_ms * (2.0 * phase - 1.0)
        delay_fraction = tf.clip_by_value(delay_ms / max_delay_ms, 0.0, 1.0)
        delay_fraction = tf.broadcast_to(delay_fraction, tf.shape(audio))
        wet = core.variable_length_delay(delay_fraction, audio, max_length=max_length) * gain
        return wet + audio if self.add_dry else wet
