"""Synthesizers: processors that render audio from frame-rate controls.

Conventions: frame-rate controls are [batch, n_frames, channels] (a [batch, n_frames] control
is read as one channel); audio is float32 [batch, n_samples]; frequencies are in Hz.
"""

from __future__ import annotations

from typing import Callable, Optional, Text

import numpy as np
import tensorflow as tf

from ddsp_core import core, processors
from ddsp_core.dsp import filters, oscillators

TensorDict = processors.TensorDict

__all__ = ['FilteredNoise', 'Harmonic', 'NoiseStream', 'Sinusoidal', 'TensorToAudio',
           'Wavetable']


def _frames(x, name: Text, processor: Text) -> tf.Tensor:
    """float32 [batch, n_frames, channels]; a [batch, n_frames] tensor gains a channel axis."""
    x = core.tf_float32(x)
    if len(x.shape) == 2:
        x = x[..., tf.newaxis]
    if len(x.shape) != 3:
        raise ValueError(f'{processor}: {name} must be [batch, n_frames, channels] (or '
                         f'[batch, n_frames]), got shape {x.shape}.')
    return x


def _scale(scale_fn: Optional[Callable], x: tf.Tensor) -> tf.Tensor:
    return scale_fn(x) if scale_fn is not None else x


class TensorToAudio(processors.Processor):
    """Passes a tensor of samples through as audio (e.g. a network that outputs waveforms)."""

    def __init__(self, name: Text = 'tensor_to_audio'):
        super().__init__(name=name)

    def get_controls(self, samples: tf.Tensor) -> TensorDict:
        """Args: samples: [batch, n_samples] or [batch, n_samples, 1] audio."""
        return {'samples': samples}

    def get_signal(self, samples: tf.Tensor) -> tf.Tensor:
        """Returns [batch, n_samples] float32 audio (a trailing channel of 1 is removed)."""
        samples = core.tf_float32(samples)
        if len(samples.shape) == 3:
            if samples.shape[-1] != 1:
                raise ValueError(f'TensorToAudio: samples must be [batch, n_samples] or '
                                 f'[batch, n_samples, 1], got shape {samples.shape}.')
            samples = samples[..., 0]
        return samples


class _Pitched(processors.Processor):
    """A synthesizer played at a fundamental frequency with an overall amplitude (the bases of
    :class:`Harmonic` and :class:`Wavetable`): their length, rate, scaling and frames."""

    def __init__(self, n_samples: int, sample_rate: int, scale_fn: Optional[Callable],
                 name: Text):
        super().__init__(name=name)
        self.n_samples = int(n_samples)
        self.sample_rate = int(sample_rate)
        self.scale_fn = scale_fn

    def _amplitudes_f0(self, amplitudes, f0_hz, scale: bool = False):
        """``(amplitudes, f0_hz)`` as float32 [batch, n_frames, channels] frames, the
        amplitudes passed through ``scale_fn`` when ``scale`` (raw network outputs)."""
        amplitudes = _frames(amplitudes, 'amplitudes', self.name)
        if scale:
            amplitudes = _scale(self.scale_fn, amplitudes)
        return amplitudes, _frames(f0_hz, 'f0_hz', self.name)


class Harmonic(_Pitched):
    """Additive synthesizer of harmonics of a fundamental frequency."""

    def __init__(self, n_samples: int = 64000, sample_rate: int = 16000,
                 scale_fn: Optional[Callable] = core.exp_sigmoid,
                 normalize_below_nyquist: bool = True, amp_resample_method: Text = 'window',
                 use_angular_cumsum: bool = False, name: Text = 'harmonic'):
        """Args:
          n_samples: Output length in samples.
          sample_rate: Hz.
          scale_fn: Applied to the raw amplitudes and harmonic distribution (None: use as is).
          normalize_below_nyquist: Zero harmonics at or above Nyquist before normalising the
            distribution, so that it sums to one over the audible harmonics.
          amp_resample_method: 'window', 'linear', 'cubic' or 'nearest'; how amplitudes are
            upsampled to audio rate.
          use_angular_cumsum: Accumulate phase in float32 chunks (see `core.angular_cumsum`).
        """
        super().__init__(n_samples, sample_rate, scale_fn, name)
        self.normalize_below_nyquist = normalize_below_nyquist
        self.amp_resample_method = amp_resample_method
        self.use_angular_cumsum = use_angular_cumsum

    def get_controls(self, amplitudes: tf.Tensor, harmonic_distribution: tf.Tensor,
                     f0_hz: tf.Tensor) -> TensorDict:
        """Scales the network outputs and normalises the harmonic distribution.

        Args:
          amplitudes: [batch, n_frames, 1] raw overall amplitude.
          harmonic_distribution: [batch, n_frames, n_harmonics] raw harmonic weights.
          f0_hz: [batch, n_frames, 1] fundamental frequency in Hz.

        Returns:
          {'amplitudes': [batch, n_frames, 1], 'harmonic_distribution': [batch, n_frames,
          n_harmonics] summing to 1 (over harmonics below Nyquist), 'f0_hz': [batch, n_frames,
          1]}.
        """
        amplitudes, f0_hz = self._amplitudes_f0(amplitudes, f0_hz, scale=True)
        harmonic_distribution = _scale(
            self.scale_fn, _frames(harmonic_distribution, 'harmonic_distribution', self.name))
        sample_rate = self.sample_rate if self.normalize_below_nyquist else None
        harmonic_distribution = core.normalize_harmonics(harmonic_distribution, f0_hz,
                                                         sample_rate)
        return {'amplitudes': amplitudes, 'harmonic_distribution': harmonic_distribution,
                'f0_hz': f0_hz}

    def get_signal(self, amplitudes: tf.Tensor, harmonic_distribution: tf.Tensor,
                   f0_hz: tf.Tensor) -> tf.Tensor:
        """Renders the harmonics.

        Args:
          amplitudes: [batch, n_frames, 1] linear amplitude.
          harmonic_distribution: [batch, n_frames, n_harmonics] relative harmonic amplitudes.
          f0_hz: [batch, n_frames, 1] Hz.

        Returns:
          [batch, n_samples] audio.
        """
        amplitudes, f0_hz = self._amplitudes_f0(amplitudes, f0_hz)
        return core.harmonic_synthesis(
            frequencies=f0_hz, amplitudes=amplitudes,
            harmonic_distribution=_frames(harmonic_distribution, 'harmonic_distribution',
                                          self.name),
            n_samples=self.n_samples, sample_rate=self.sample_rate,
            amp_resample_method=self.amp_resample_method,
            use_angular_cumsum=self.use_angular_cumsum)

    def initial_state(self, batch_size: int = 1) -> TensorDict:
        """The state before a signal's first block (:meth:`get_signal_chunk`): phase 0."""
        return {'phase': tf.zeros([batch_size, 1], tf.float64)}

    def get_signal_chunk(self, amplitudes: tf.Tensor, harmonic_distribution: tf.Tensor,
                         f0_hz: tf.Tensor, hop: int, state: Optional[TensorDict] = None):
        """Renders one block of a longer signal (stateful, any length: streaming).

        The block's frames sit every `hop` samples; the controls have one row more than the
        block has frames: the next block's first frame (at a signal's end, the last one again),
        towards which the last interval moves. The oscillator's phase is carried in float64, so
        blocks rendered one after another from each other's state join without a seam, and a
        single block of a whole signal (zero state, last frame repeated) is its one-shot
        rendering (`get_signal` with n_samples = n_frames * hop, up to float rounding).

        Args:
          amplitudes: [batch, n + 1, 1] linear amplitude (the scaled controls).
          harmonic_distribution: [batch, n + 1, n_harmonics].
          f0_hz: [batch, n + 1, 1] Hz.
          hop: Samples per frame.
          state: {'phase': [batch, 1] float64} from the previous block, or None (phase 0).

        Returns:
          (audio [batch, n * hop], the state after the block).
        """
        amplitudes, f0_hz = self._amplitudes_f0(amplitudes, f0_hz)
        harmonic_amplitudes = amplitudes * _frames(harmonic_distribution,
                                                   'harmonic_distribution', self.name)
        audio, phase = oscillators.harmonic_frames(
            f0_hz, harmonic_amplitudes, hop,
            sample_rate=self.sample_rate, amp_resample_method=self.amp_resample_method,
            initial_phase=None if state is None else state['phase'])
        return audio, {'phase': phase}


class NoiseStream:
    """The white noise of `tf.random.stateless_uniform([1, n], seed, -1.0, 1.0,
    alg='philox')`, read block by block from any sample on.

    Philox is counter based: four float32 samples per counter step, so a block starting at
    sample s reads from the seed's counter plus s // 4, skipping s % 4 samples. A stream of any
    length can so be drawn in pieces, each equal to that stretch of the one-shot draw.
    """

    ALGORITHM = 1  # tf.random.Algorithm.PHILOX

    def __init__(self, seed):
        """Args: seed: [2] int32, as `tf.random.stateless_uniform`'s."""
        key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(
            seed=tf.constant(np.asarray(seed, np.int32)))
        self.key = key.numpy()
        self.counter = counter.numpy()

    @staticmethod
    def offset_counter(counter: np.ndarray, steps: int) -> np.ndarray:
        """`counter` (128 bits, little-endian [low, high] uint64) plus `steps`."""
        low = int(counter[0]) + int(steps)
        high = (int(counter[1]) + (low >> 64)) % (1 << 64)
        return np.array([low % (1 << 64), high], np.uint64)

    def position(self, start: int) -> tuple[np.ndarray, int]:
        """(counter, skip) of sample `start`, for :meth:`read`."""
        return self.offset_counter(self.counter, int(start) // 4), int(start) % 4

    @classmethod
    def read(cls, key, counter, skip, n_samples) -> tf.Tensor:
        """[1, n_samples] samples in [-1, 1) from a :meth:`position` (graph-safe: the
        arguments may be tensors)."""
        uniform = tf.raw_ops.StatelessRandomUniformV2(
            shape=[1, n_samples + 3], key=key, counter=counter, alg=cls.ALGORITHM)
        return uniform[:, skip:skip + n_samples] * 2.0 - 1.0

    def block(self, start: int, n_samples: int) -> tf.Tensor:
        """Samples [start, start + n_samples) of the stream, [1, n_samples]."""
        counter, skip = self.position(start)
        return self.read(tf.constant(self.key), tf.constant(counter), skip, n_samples)


class FilteredNoise(processors.Processor):
    """White noise shaped by a time-varying linear-phase filter (subtractive synthesis)."""

    def __init__(self, n_samples: int = 64000, window_size: int = 257,
                 scale_fn: Optional[Callable] = core.exp_sigmoid, initial_bias: float = -5.0,
                 name: Text = 'filtered_noise'):
        """Args:
          n_samples: Output length; must split into n_frames equal frames.
          window_size: Length of each frame's FIR filter (samples).
          scale_fn: Applied to the raw magnitudes (None: use as is).
          initial_bias: Added to the raw magnitudes before `scale_fn` (quiet noise at start).
        """
        super().__init__(name=name)
        self.n_samples = int(n_samples)
        self.window_size = int(window_size)
        self.scale_fn = scale_fn
        self.initial_bias = initial_bias

    def get_controls(self, magnitudes: tf.Tensor) -> TensorDict:
        """Args:
          magnitudes: [batch, n_frames, n_filter_banks] raw filter magnitudes, banks spaced
            evenly from 0 Hz to Nyquist.

        Returns:
          {'magnitudes': scale_fn(magnitudes + initial_bias)}, same shape (linear gains).
        """
        magnitudes = _frames(magnitudes, 'magnitudes', self.name)
        return {'magnitudes': _scale(self.scale_fn, magnitudes + self.initial_bias)}

    def get_signal(self, magnitudes: tf.Tensor) -> tf.Tensor:
        """Filters uniform noise in [-1, 1].

        Args:
          magnitudes: [batch, n_frames, n_filter_banks] linear gains from 0 Hz to Nyquist.

        Returns:
          [batch, n_samples] audio.
        """
        magnitudes = _frames(magnitudes, 'magnitudes', self.name)
        batch = tf.shape(magnitudes)[0]
        noise = tf.random.uniform([batch, self.n_samples], minval=-1.0, maxval=1.0)
        noise = tf.ensure_shape(noise, [magnitudes.shape[0], self.n_samples])
        return core.frequency_filter(noise, magnitudes, window_size=self.window_size)

    def latency(self, n_filter_banks: int) -> int:
        """Samples by which :meth:`get_signal_chunk`'s output lags the signal: the filters'
        centring delay, half their length."""
        return filters.impulse_response_size(n_filter_banks, self.window_size) // 2

    def initial_state(self, n_filter_banks: int, hop: int, batch_size: int = 1) -> TensorDict:
        """The state before a signal's first block (:meth:`get_signal_chunk`): no tail."""
        ir_size = filters.impulse_response_size(n_filter_banks, self.window_size)
        fft_size = filters.get_fft_size(hop, ir_size, power_of_2=True)
        return {'tail': tf.zeros([batch_size, fft_size - hop], tf.float32)}

    def get_signal_chunk(self, magnitudes: tf.Tensor, noise: tf.Tensor, hop: int,
                         state: Optional[TensorDict] = None):
        """Filters one block of a longer signal's noise (stateful, any length: streaming).

        Each `hop`-sample frame of `noise` is filtered by its frame's response; the
        convolution tails that reach past the block are carried in the state. The output lags
        by :meth:`latency` samples (the filters are centred on their frame): a signal's first
        block begins with that many samples before the signal, and the first that many samples
        of the last block's state `'tail'` end it. A single block of a whole signal, so
        cropped, is `core.frequency_filter(noise, magnitudes, window_size)` (`get_signal` with
        that noise).

        Args:
          magnitudes: [batch, n, n_filter_banks] linear gains (the scaled controls).
          noise: [batch, n * hop] white noise (e.g. from a :class:`NoiseStream`).
          hop: Samples per frame.
          state: {'tail': [batch, fft_size - hop]} from the previous block, or None.

        Returns:
          (audio [batch, n * hop], the state after the block).
        """
        audio, tail = filters.frequency_filter_frames(
            noise, _frames(magnitudes, 'magnitudes', self.name), hop,
            window_size=self.window_size, tail=None if state is None else state['tail'])
        return audio, {'tail': tail}


class Wavetable(_Pitched):
    """Synthesizer that reads one (possibly time-varying) wavetable at the given pitch."""

    def __init__(self, n_samples: int = 64000, sample_rate: int = 16000,
                 scale_fn: Optional[Callable] = core.exp_sigmoid, name: Text = 'wavetable'):
        """Args:
          n_samples: Output length in samples.
          sample_rate: Hz.
          scale_fn: Applied to the raw amplitudes (None: use as is).
        """
        super().__init__(n_samples, sample_rate, scale_fn, name)

    def get_controls(self, amplitudes: tf.Tensor, wavetables: tf.Tensor,
                     f0_hz: tf.Tensor) -> TensorDict:
        """Args:
          amplitudes: [batch, n_frames, 1] raw amplitude.
          wavetables: [batch, n_frames, n_wavetable] or [batch, n_wavetable], one period each.
          f0_hz: [batch, n_frames, 1] Hz.

        Returns:
          {'amplitudes': scaled, 'wavetables': as given (float32), 'f0_hz': [batch, n_frames, 1]}.
        """
        amplitudes, f0_hz = self._amplitudes_f0(amplitudes, f0_hz, scale=True)
        return {'amplitudes': amplitudes, 'wavetables': core.tf_float32(wavetables),
                'f0_hz': f0_hz}

    def get_signal(self, amplitudes: tf.Tensor, wavetables: tf.Tensor,
                   f0_hz: tf.Tensor) -> tf.Tensor:
        """Args:
          amplitudes: [batch, n_frames, 1] linear amplitude.
          wavetables: [batch, n_frames, n_wavetable] or [batch, n_wavetable].
          f0_hz: [batch, n_frames, 1] Hz.

        Returns:
          [batch, n_samples] audio.
        """
        amplitudes, f0_hz = self._amplitudes_f0(amplitudes, f0_hz)
        return core.wavetable_synthesis(
            frequencies=f0_hz, amplitudes=amplitudes, wavetables=wavetables,
            n_samples=self.n_samples, sample_rate=self.sample_rate)


class Sinusoidal(processors.Processor):
    """Additive synthesizer of freely moving sinusoids."""

    def __init__(self, n_samples: int = 64000, sample_rate: int = 16000,
                 amp_scale_fn: Optional[Callable] = core.exp_sigmoid,
                 amp_resample_method: Text = 'window',
                 freq_scale_fn: Optional[Callable] = core.frequencies_sigmoid,
                 name: Text = 'sinusoidal'):
        """Args:
          n_samples: Output length in samples.
          sample_rate: Hz.
          amp_scale_fn: Applied to the raw amplitudes (None: use as is).
          amp_resample_method: How amplitudes reach audio rate ('window', 'linear', 'cubic',
            'nearest'); frequencies are always interpolated linearly.
          freq_scale_fn: Maps raw frequencies to Hz (None: they are already Hz).
        """
        super().__init__(name=name)
        self.n_samples = int(n_samples)
        self.sample_rate = int(sample_rate)
        self.amp_scale_fn = amp_scale_fn
        self.amp_resample_method = amp_resample_method
        self.freq_scale_fn = freq_scale_fn

    def get_controls(self, amplitudes: tf.Tensor, frequencies: tf.Tensor) -> TensorDict:
        """Args:
          amplitudes: [batch, n_frames, n_sinusoids] raw amplitudes.
          frequencies: [batch, n_frames, n_sinusoids] raw frequencies (Hz if freq_scale_fn is
            None), or whatever freq_scale_fn takes, e.g. [batch, n_frames, n_sinusoids, depth]
            for `core.frequencies_sigmoid(..., depth=depth)`.

        Returns:
          {'amplitudes': [batch, n_frames, n_sinusoids] linear, zero at or above Nyquist,
           'frequencies': [batch, n_frames, n_sinusoids] Hz}.
        """
        amplitudes = _scale(self.amp_scale_fn, _frames(amplitudes, 'amplitudes', self.name))
        if self.freq_scale_fn is not None:
            # The scale function may take [batch, n_frames, n_sinusoids, depth] (e.g.
            # frequencies_sigmoid with depth > 1) and must return [batch, n_frames, n].
            frequencies = self.freq_scale_fn(core.tf_float32(frequencies))
        frequencies = _frames(frequencies, 'frequencies', self.name)
        amplitudes = core.remove_above_nyquist(frequencies, amplitudes, self.sample_rate)
        return {'amplitudes': amplitudes, 'frequencies': frequencies}

    def get_signal(self, amplitudes: tf.Tensor, frequencies: tf.Tensor) -> tf.Tensor:
        """Args:
          amplitudes: [batch, n_frames, n_sinusoids] linear.
          frequencies: [batch, n_frames, n_sinusoids] Hz.

        Returns:
          [batch, n_samples] audio.
        """
        amplitudes = _frames(amplitudes, 'amplitudes', self.name)
        frequencies = _frames(frequencies, 'frequencies', self.name)
        amplitude_envelopes = core.resample(amplitudes, self.n_samples,
                                            method=self.amp_resample_method)
        frequency_envelopes = core.resample(frequencies, self.n_samples, method='linear')
        return core.oscillator_bank(frequency_envelopes, amplitude_envelopes,
                                    sample_rate=self.sample_rate)
