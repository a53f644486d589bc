"""Processors: Keras layers that turn network outputs into controls and controls into audio.

A `Processor` is called as `processor(*inputs)`: `get_controls(*inputs)` maps raw network outputs
to synthesizer controls (e.g. `exp_sigmoid` on amplitudes) and returns them as a dict, and
`get_signal(**controls)` renders audio from them. With `return_outputs_dict=True` the call returns
`{'signal': audio, 'controls': controls}`.

A `ProcessorGroup` runs a DAG of processors (see `ddsp_core.dags`); each processor's outputs dict
is stored under its name, so later nodes read `'<processor name>/signal'` or a control such as
`'harmonic/controls/amplitudes'`.
"""

from __future__ import annotations

from typing import Any, Dict, Text

import keras
import tensorflow as tf

from ddsp_core import core, dags

TensorDict = Dict[Text, Any]

__all__ = ['Add', 'Crop', 'Mix', 'Processor', 'ProcessorGroup', 'TensorDict']


def _numbers_to_tensors(value: Any) -> Any:
    """Python int/float -> float32 tensor (Keras rejects them mixed with tensors); else as is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return tf.convert_to_tensor(value, dtype=tf.float32)
    return value


class Processor(keras.layers.Layer):
    """Abstract base class for signal processors (synthesizers and effects).

    Subclasses implement `get_controls` (returning a dict of controls keyed by the argument
    names of `get_signal`) and `get_signal`.
    """

    def __init__(self, name: Text, trainable: bool = False):
        """Creates the layer.

        Args:
          name: Layer name; a ProcessorGroup stores this processor's outputs under it.
          trainable: Whether the processor has trainable variables of its own (e.g. a learned
            reverb impulse response).
        """
        super().__init__(name=name, trainable=trainable)
        # Allow controls given as Python numbers or None positionally.
        self._allow_non_tensor_positional_args = True

    def __call__(self, *args, **kwargs):
        args = tuple(_numbers_to_tensors(a) for a in args)
        kwargs = {k: v if k == 'return_outputs_dict' else _numbers_to_tensors(v)
                  for k, v in kwargs.items()}
        return super().__call__(*args, **kwargs)

    def build(self, input_shape=None):
        """Nothing to build: processors create any variables in `__init__`, and sub-layers
        (e.g. a reverb's noise synth) build themselves when first called. (Keras's automatic
        build would otherwise trace `call` symbolically, which a `*args` signature defeats.)"""
        del input_shape

    def call(self, *args: tf.Tensor, return_outputs_dict: bool = False, **kwargs):
        """Converts inputs to controls and renders the signal.

        Args:
          *args: Raw inputs of `get_controls`, positionally.
          return_outputs_dict: Return `{'signal': signal, 'controls': controls}` instead of the
            signal.
          **kwargs: Raw inputs of `get_controls`, by name.

        Returns:
          The signal tensor, or the outputs dict.
        """
        controls = self.get_controls(*args, **kwargs)
        if not isinstance(controls, dict):
            raise TypeError(f'{type(self).__name__}.get_controls must return a dict of controls, '
                            f'got {type(controls).__name__}.')
        signal = self.get_signal(**controls)
        if return_outputs_dict:
            return {'signal': signal, 'controls': controls}
        return signal

    def get_controls(self, *args: tf.Tensor, **kwargs: tf.Tensor) -> TensorDict:
        """Maps raw inputs to a dict of controls keyed by `get_signal`'s argument names."""
        raise NotImplementedError

    def get_signal(self, *args: tf.Tensor, **kwargs: tf.Tensor) -> tf.Tensor:
        """Renders the signal from controls."""
        raise NotImplementedError


class ProcessorGroup(dags.DAGLayer):
    """Runs a DAG of processors and returns the last node's signal.

    Example:
    ```python
    harmonic = synths.Harmonic(n_samples=64000)
    noise = synths.FilteredNoise(n_samples=64000)
    group = ProcessorGroup([
        (harmonic, ['amps', 'harmonic_distribution', 'f0_hz']),
        (noise, ['noise_magnitudes']),
        (processors.Add(), ['harmonic/signal', 'filtered_noise/signal']),
    ])
    audio = group({'amps': ..., 'harmonic_distribution': ..., 'f0_hz': ..., ...})
    ```
    Processors are called with `return_outputs_dict=True`, so `outputs['<name>']` is
    `{'signal': ..., 'controls': {...}}` ('harmonic/signal', 'harmonic/controls/f0_hz'), and
    `outputs['out']` is the last node's. `group(inputs, return_outputs_dict=True)` returns
    `{'signal': final signal, 'controls': outputs}`, like any processor. The group is a Keras
    layer: it works eagerly, inside `tf.function`, inside a `keras.Model`, and under
    `tf.distribute`, and its processors' variables appear in its (and its model's)
    `trainable_variables`.
    """

    def __init__(self, dag: dags.DAG, **kwarg_processors):
        """Builds the group.

        Args:
          dag: List of `(processor, ['input_key', ...])` nodes (see `ddsp_core.dags` for all
            node forms); a key is a name in the inputs dict or `'<processor name>/<output>'`.
          **kwarg_processors: Processors that nodes may name by string; `name` sets the
            group's layer name (default 'processor_group').
        """
        kwarg_processors.setdefault('name', 'processor_group')
        super().__init__(dag, **kwarg_processors)

    @property
    def processor_names(self):
        """Names under which each node's outputs are stored, in node order."""
        return self.module_names

    @property
    def processors(self):
        """The DAG's processors (and other modules), in node order."""
        return self.modules

    def call(self, inputs: TensorDict, return_outputs_dict: bool = False, **kwargs):
        """Runs the DAG.

        Args:
          inputs: Dict of tensors (frame-rate controls [batch, n_frames, channels], audio
            [batch, n_samples], ...) read by the DAG's input keys.
          return_outputs_dict: Return `{'signal': signal, 'controls': outputs}`, where
            `outputs` is the DAG's outputs dict (see `get_controls`), instead of the signal.
          **kwargs: Passed to every processor call.

        Returns:
          The last node's signal, [batch, n_samples] for audio processors; or the dict above.
        """
        outputs = self.get_controls(inputs, **kwargs)
        signal = self.get_signal(outputs)
        if return_outputs_dict:
            return {'signal': signal, 'controls': outputs}
        return signal

    def get_controls(self, inputs: TensorDict, **kwargs) -> TensorDict:
        """Runs the DAG and returns its outputs dict: the inputs (also under 'inputs'), every
        node's outputs under its name, and the last node's again under 'out' (so the final
        signal is 'out/signal').

        Args:
          inputs: See `call`.
          **kwargs: Passed to every processor call.
        """
        outputs = self.run_dag(inputs, **kwargs)
        last = outputs[dags.OUT_KEY]
        if isinstance(last, dict) and 'signal' not in last:
            raise ValueError(f"ProcessorGroup ({self.name!r}): the last node "
                             f"{self.module_names[-1]!r} returned a dict without a 'signal' key "
                             f"(keys {sorted(last)}); the last node must produce a signal.")
        return outputs

    def get_signal(self, outputs: TensorDict) -> tf.Tensor:
        """The final signal of an outputs dict from `get_controls` ('out/signal'; a last node
        that is a plain layer returning a tensor gives that tensor)."""
        last = outputs[dags.OUT_KEY]
        return last['signal'] if isinstance(last, dict) else last


class Add(Processor):
    """Sums two signals of the same shape."""

    def __init__(self, name: Text = 'add'):
        super().__init__(name=name)

    def get_controls(self, signal_one: tf.Tensor, signal_two: tf.Tensor) -> TensorDict:
        """Args: signal_one, signal_two: [batch, n_samples] (or any equal shapes)."""
        return {'signal_one': signal_one, 'signal_two': signal_two}

    def get_signal(self, signal_one: tf.Tensor, signal_two: tf.Tensor) -> tf.Tensor:
        """Returns signal_one + signal_two."""
        return core.tf_float32(signal_one) + core.tf_float32(signal_two)


def _match_signals(signal_one: tf.Tensor, signal_two: tf.Tensor):
    """Two float32 signals [batch, n_time] or [batch, n_time, channels] of one length and rank.

    A [batch, n_time, 1] signal paired with a [batch, n_time] one loses its channel axis.
    """
    signal_one, signal_two = core.tf_float32(signal_one), core.tf_float32(signal_two)
    for signal in (signal_one, signal_two):
        if len(signal.shape) not in (2, 3):
            raise ValueError(f'Mix: signals must be [batch, n_time] or [batch, n_time, channels], '
                             f'got shape {signal.shape}.')
    if len(signal_one.shape) != len(signal_two.shape):
        three_d = signal_one if len(signal_one.shape) == 3 else signal_two
        if three_d.shape[-1] != 1:
            raise ValueError(f'Mix: cannot mix signals of shapes {signal_one.shape} and '
                             f'{signal_two.shape}; give both the same rank.')
        signal_one = signal_one[..., 0] if len(signal_one.shape) == 3 else signal_one
        signal_two = signal_two[..., 0] if len(signal_two.shape) == 3 else signal_two
    n_one, n_two = signal_one.shape[1], signal_two.shape[1]
    if n_one is not None and n_two is not None and n_one != n_two:
        raise ValueError(f'Mix: the two signals must have the same length, got {n_one} and '
                         f'{n_two} time steps.')
    return signal_one, signal_two


def _mix_level_like(mix_level: tf.Tensor, signal: tf.Tensor) -> tf.Tensor:
    """A mix level (scalar, [batch], [batch, n_frames] or [batch, n_frames, 1]) broadcastable to
    `signal` ([batch, n_time] or [batch, n_time, channels]); resampled linearly to n_time when
    1 < n_frames != n_time."""
    level = core.tf_float32(mix_level)
    rank = len(level.shape)
    if rank == 0:
        return level
    if rank == 1:
        level = level[:, tf.newaxis, tf.newaxis]
    elif rank == 2:
        level = level[..., tf.newaxis]
    elif rank != 3:
        raise ValueError(f'Mix: mix_level must be a scalar, [batch], [batch, n_frames] or '
                         f'[batch, n_frames, 1], got shape {level.shape}.')
    n_time, n_frames = signal.shape[1], level.shape[1]
    if n_frames is not None and n_time is not None and n_frames not in (1, n_time):
        level = core.resample(level, int(n_time), method='linear')
    if len(signal.shape) == 2:
        if level.shape[-1] != 1:
            raise ValueError(f'Mix: a mix_level for [batch, n_time] signals must have one '
                             f'channel, got shape {level.shape}.')
        level = level[..., 0]
    return level


class Mix(Processor):
    """Constant-power crossfade between two signals.

    out = sqrt(m) * signal_one + sqrt(1 - m) * signal_two for a mix level m in [0, 1], so the
    two gains' squares always sum to one: m = 1 is signal_one alone, m = 0 signal_two alone,
    m = 0.5 both at -3 dB (uncorrelated signals keep their power through the fade).
    """

    def __init__(self, name: Text = 'mix'):
        super().__init__(name=name)

    def get_controls(self, signal_one: tf.Tensor, signal_two: tf.Tensor,
                     nn_out_mix_level: tf.Tensor) -> TensorDict:
        """Maps the raw mix level through a sigmoid to [0, 1] and to the signals' time steps.

        Args:
          signal_one, signal_two: [batch, n_time] audio or [batch, n_time, channels] (e.g.
            frame-rate controls), of the same length.
          nn_out_mix_level: [batch, n_frames, 1] (or [batch, n_frames]) raw mix level, any real
            value; frame rate or already n_time.

        Returns:
          {'signal_one', 'signal_two', 'mix_level': sigmoid(nn_out_mix_level) resampled
          (linearly) to n_time, broadcastable to the signals}.

        Raises:
          ValueError: The signals differ in length.
        """
        signal_one, signal_two = _match_signals(signal_one, signal_two)
        mix_level = tf.nn.sigmoid(core.tf_float32(nn_out_mix_level))
        return {'signal_one': signal_one, 'signal_two': signal_two,
                'mix_level': _mix_level_like(mix_level, signal_one)}

    def get_signal(self, signal_one: tf.Tensor, signal_two: tf.Tensor,
                   mix_level: tf.Tensor) -> tf.Tensor:
        """Args:
          signal_one, signal_two: [batch, n_time] or [batch, n_time, channels].
          mix_level: Weight of signal_one, in [0, 1] (values outside are clipped):
            [batch, n_time(, 1)], or at a frame rate (resampled linearly to n_time), or a
            scalar.

        Returns:
          The mix, shaped like the signals.
        """
        signal_one, signal_two = _match_signals(signal_one, signal_two)
        level = tf.clip_by_value(_mix_level_like(mix_level, signal_one), 0.0, 1.0)
        # sqrt has an infinite slope at 0; the floor keeps gradients finite at m = 0 or 1.
        gain_one = tf.sqrt(tf.maximum(level, 1e-12))
        gain_two = tf.sqrt(tf.maximum(1.0 - level, 1e-12))
        return gain_one * signal_one + gain_two * signal_two


class Crop(Processor):
    """Removes the padding that centred framing adds: `2 * (frame_size // 2)` samples, from the
    front, the back, or `frame_size // 2` from each end ('center')."""

    _LOCATIONS = ('front', 'back', 'center')

    def __init__(self, frame_size: int, crop_location: Text = 'back', name: Text = 'crop'):
        """Args:
          frame_size: Frame size whose centring padding to remove (`frame_size // 2` samples
            each side, so an odd frame size removes frame_size - 1 samples in all).
          crop_location: 'front', 'back' or 'center' (frame_size // 2 from each end).
        """
        super().__init__(name=name)
        if crop_location not in self._LOCATIONS:
            raise ValueError(f'Crop: crop_location must be one of {self._LOCATIONS}, got '
                             f'{crop_location!r}.')
        if int(frame_size) < 0:
            raise ValueError(f'Crop: frame_size must be >= 0, got {frame_size}.')
        self.frame_size = int(frame_size)
        self.crop_location = crop_location

    def get_controls(self, audio: tf.Tensor) -> TensorDict:
        """Args: audio: [batch, n_samples]."""
        return {'audio': audio}

    def get_signal(self, audio: tf.Tensor) -> tf.Tensor:
        """Returns [batch, n_samples - 2 * (frame_size // 2)]."""
        audio = core.tf_float32(audio)
        half = self.frame_size // 2
        if half == 0:
            return audio
        if self.crop_location == 'front':
            return audio[:, 2 * half:]
        if self.crop_location == 'back':
            return audio[:, :-2 * half]
        return core.center_crop(audio, self.frame_size)
