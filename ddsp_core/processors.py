"""Processors: Keras layers that turn network outputs into controls and controls into audio.

A `Processor` is called as `processor(*inputs)`: `get_controls(*inputs)` maps raw network outputs
to synthesizer controls (e.g. `exp_sigmoid` on amplitudes) and returns them as a dict, and
`get_signal(**controls)` renders audio from them. With `return_outputs_dict=True` the call returns
`{'signal': audio, **controls}`.

A `ProcessorGroup` runs a DAG of processors (see `ddsp_core.dags`); each processor's outputs dict
is stored under its name, so later nodes read `'<processor name>/signal'` or a control such as
`'harmonic/amplitudes'`.
"""

from __future__ import annotations

from typing import Any, Dict, Text

import keras
import tensorflow as tf

from ddsp_core import core, dags

TensorDict = Dict[Text, Any]

__all__ = ["Add", "Crop", "Mix", "Processor", "ProcessorGroup", "TensorDict"]


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
        kwargs = {k: v if k == "return_outputs_dict" else _numbers_to_tensors(v)
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
          return_outputs_dict: Return `{'signal': signal, **controls}` instead of the signal.
          **kwargs: Raw inputs of `get_controls`, by name.

        Returns:
          The signal tensor, or the outputs dict.
        """
        controls = self.get_controls(*args, **kwargs)
        if not isinstance(controls, dict):
            raise TypeError(f"{type(self).__name__}.get_controls must return a dict of controls, "
                            f"got {type(controls).__name__}.")
        signal = self.get_signal(**controls)
        if return_outputs_dict:
            outputs = dict(controls)
            outputs["signal"] = signal
            return outputs
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
    Processors are called with `return_outputs_dict=True`, so `outputs['<name>']` holds the
    processor's controls and its 'signal'. The group is a Keras layer: it works eagerly, inside
    `tf.function`, inside a `keras.Model`, and under `tf.distribute`, and its processors'
    variables appear in its (and its model's) `trainable_variables`.
    """

    def __init__(self, dag: dags.DAG, **kwarg_processors):
        """Builds the group.

        Args:
          dag: List of `(processor, ['input_key', ...])` nodes (see `ddsp_core.dags` for all
            node forms); a key is a name in the inputs dict or `'<processor name>/<output>'`.
          **kwarg_processors: Processors that nodes may name by string; `name` sets the
            group's layer name (default 'processor_group').
        """
        kwarg_processors.setdefault("name", "processor_group")
        super().__init__(dag, **kwarg_processors)

    def call_module(self, module: Any, *inputs, **kwargs):
        if isinstance(module, Processor):
            return module(*inputs, return_outputs_dict=True, **kwargs)
        return module(*inputs, **kwargs)

    def call(self, inputs: TensorDict, return_outputs_dict: bool = False, **kwargs):
        """Runs the DAG.

        Args:
          inputs: Dict of tensors (frame-rate controls [batch, n_frames, channels], audio
            [batch, n_samples], ...) read by the DAG's input keys.
          return_outputs_dict: Return the whole outputs dict (inputs, every node's outputs, and
            `'out': {'signal': signal}`) instead of the signal.
          **kwargs: Passed to every processor call.

        Returns:
          The last node's signal, [batch, n_samples] for audio processors; or the outputs dict.
        """
        outputs = self.get_controls(inputs, **kwargs)
        signal = self.get_signal(outputs)
        return outputs if return_outputs_dict else signal

    def get_controls(self, inputs: TensorDict, **kwargs) -> TensorDict:
        """Runs the DAG and returns the outputs dict, with the final signal under 'out/signal'.

        Args:
          inputs: See `call`.
          **kwargs: Passed to every processor call.
        """
        outputs = self.run_dag(inputs, **kwargs)
        last = outputs[self.module_names[-1]]
        signal = last["signal"] if isinstance(last, dict) and "signal" in last else last
        if isinstance(signal, dict):
            raise ValueError(f"ProcessorGroup ({self.name!r}): the last node "
                             f"{self.module_names[-1]!r} returned a dict without a 'signal' key "
                             f"(keys {sorted(signal)}); the last node must produce a signal.")
        outputs["out"] = {"signal": signal}
        return outputs

    def get_signal(self, outputs: TensorDict) -> tf.Tensor:
        """The final signal of an outputs dict from `get_controls` ('out/signal')."""
        return core.nested_lookup("out/signal", outputs)


class Add(Processor):
    """Sums two signals of the same shape."""

    def __init__(self, name: Text = "add"):
        super().__init__(name=name)

    def get_controls(self, signal_one: tf.Tensor, signal_two: tf.Tensor) -> TensorDict:
        """Args: signal_one, signal_two: [batch, n_samples] (or any equal shapes)."""
        return {"signal_one": signal_one, "signal_two": signal_two}

    def get_signal(self, signal_one: tf.Tensor, signal_two: tf.Tensor) -> tf.Tensor:
        """Returns signal_one + signal_two."""
        return core.tf_float32(signal_one) + core.tf_float32(signal_two)


def _match_time_axis(control: tf.Tensor, n_samples: int) -> tf.Tensor:
    """[batch, n_frames, 1] / [batch, n_frames] / scalar control -> broadcastable to
    [batch, n_samples] (resampled linearly when 1 < n_frames != n_samples)."""
    control = core.tf_float32(control)
    rank = len(control.shape)
    if rank == 3:
        if control.shape[-1] != 1:
            raise ValueError(f"a time-varying gain must be [batch, n_frames, 1], got "
                             f"{control.shape}.")
        control = control[..., 0]
        rank = 2
    if rank == 2:
        n_frames = control.shape[1]
        if n_frames is not None and n_frames not in (1, n_samples):
            control = core.resample(control, n_samples)
        return control
    if rank <= 1:
        return tf.reshape(control, [-1, 1]) if rank == 1 else control
    raise ValueError(f"control must be a scalar, [batch, n_frames] or [batch, n_frames, 1], got "
                     f"shape {control.shape}.")


class Mix(Processor):
    """Cross-fades two signals: mix_level * signal_one + (1 - mix_level) * signal_two."""

    def __init__(self, name: Text = "mix"):
        super().__init__(name=name)

    def get_controls(self, signal_one: tf.Tensor, signal_two: tf.Tensor,
                     nn_out_mix_level: tf.Tensor) -> TensorDict:
        """Maps the raw mix level through a sigmoid to [0, 1].

        Args:
          signal_one, signal_two: [batch, n_samples] signals.
          nn_out_mix_level: [batch, n_frames, 1] raw mix level (any real value).
        """
        return {"signal_one": signal_one, "signal_two": signal_two,
                "mix_level": tf.nn.sigmoid(core.tf_float32(nn_out_mix_level))}

    def get_signal(self, signal_one: tf.Tensor, signal_two: tf.Tensor,
                   mix_level: tf.Tensor) -> tf.Tensor:
        """Args:
          signal_one, signal_two: [batch, n_samples].
          mix_level: [batch, n_frames, 1] weight of signal_one in [0, 1]; resampled to audio rate
            (linear) when n_frames != n_samples.

        Returns:
          [batch, n_samples] mix.
        """
        signal_one = core.tf_float32(signal_one)
        signal_two = core.tf_float32(signal_two)
        mix_level = _match_time_axis(mix_level, int(signal_one.shape[1]))
        return mix_level * signal_one + (1.0 - mix_level) * signal_two


class Crop(Processor):
    """Removes `frame_size` samples from the front, the back or both ends (half each)."""

    _LOCATIONS = ("front", "back", "center")

    def __init__(self, frame_size: int, crop_location: Text = "back", name: Text = "crop"):
        """Args:
          frame_size: Samples to remove in total.
          crop_location: 'front', 'back' or 'center' (frame_size // 2 from each end).
        """
        super().__init__(name=name)
        if crop_location not in self._LOCATIONS:
            raise ValueError(f"Crop: crop_location must be one of {self._LOCATIONS}, got "
                             f"{crop_location!r}.")
        if int(frame_size) < 0:
            raise ValueError(f"Crop: frame_size must be >= 0, got {frame_size}.")
        self.frame_size = int(frame_size)
        self.crop_location = crop_location

    def get_controls(self, audio: tf.Tensor) -> TensorDict:
        """Args: audio: [batch, n_samples]."""
        return {"audio": audio}

    def get_signal(self, audio: tf.Tensor) -> tf.Tensor:
        """Returns [batch, n_samples - frame_size] ('center': minus 2 * (frame_size // 2))."""
        audio = core.tf_float32(audio)
        if self.frame_size == 0:
            return audio
        if self.crop_location == "front":
            return audio[:, self.frame_size:]
        if self.crop_location == "back":
            return audio[:, :-self.frame_size]
        return core.center_crop(audio, self.frame_size)
