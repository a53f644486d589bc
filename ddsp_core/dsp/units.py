"""Numeric helpers and unit conversions (dB, MIDI, Hz, bark, mel, ERB) and scaling functions.

All functions accept Python numbers, numpy arrays or tensors and return float32 tensors unless
noted; they are differentiable wherever the maths is.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import tensorflow as tf

Number = Union[int, float, np.ndarray, tf.Tensor]

DB_RANGE = 80.0


def tf_float32(x) -> tf.Tensor:
    """Casts a tensor, array or number to a float32 tensor."""
    if isinstance(x, tf.Tensor | tf.Variable):
        return tf.cast(x, tf.float32)
    return tf.convert_to_tensor(x, tf.float32)


def pad_axis(x, padding=(0, 0), axis=0, **pad_kwargs):
    """Pads one axis of a tensor.

    Args:
      x: Tensor of any rank.
      padding: (before, after) number of elements to add on `axis`.
      axis: Axis to pad; negative values count from the end.
      **pad_kwargs: Passed to `tf.pad` (e.g. `mode`, `constant_values`).
    """
    x = tf.convert_to_tensor(x)
    rank = len(x.shape)
    axis = axis % rank
    paddings = [[0, 0]] * axis + [list(padding)] + [[0, 0]] * (rank - axis - 1)
    return tf.pad(x, paddings, **pad_kwargs)


def diff(x, axis=-1):
    """Forward difference `x[i+1] - x[i]` along `axis` (output is one shorter on that axis)."""
    x = tf.convert_to_tensor(x)
    rank = len(x.shape)
    if not -rank <= axis < rank:
        raise ValueError(f'diff: axis {axis} is out of range for a tensor of rank {rank}.')
    axis = axis % rank
    front = [slice(None)] * rank
    back = [slice(None)] * rank
    front[axis] = slice(1, None)
    back[axis] = slice(None, -1)
    return x[tuple(front)] - x[tuple(back)]


def nan_to_num(x, value=0.0):
    """Replaces NaNs in `x` with `value`."""
    x = tf_float32(x)
    return tf.where(tf.math.is_nan(x), tf.cast(value, x.dtype) * tf.ones_like(x), x)


def safe_divide(numerator, denominator, eps=1e-07):
    """Division that replaces a zero denominator by `eps` (finite values and gradients)."""
    numerator = tf_float32(numerator)
    denominator = tf_float32(denominator)
    safe_den = tf.where(tf.equal(denominator, 0.0), eps * tf.ones_like(denominator), denominator)
    return numerator / safe_den


def safe_log(x, eps=1e-05):
    """Natural log where values <= 0 are replaced by `eps` (finite values and gradients)."""
    x = tf_float32(x)
    safe_x = tf.where(x <= 0.0, eps * tf.ones_like(x), x)
    return tf.math.log(safe_x)


def logb(x, base=2.0, eps=1e-05):
    """Logarithm of `x` in `base`, safe for non-positive `x`."""
    return safe_divide(safe_log(x, eps), safe_log(base, eps), eps)


def log10(x, eps=1e-05):
    """Base-10 logarithm, safe for non-positive `x`."""
    return logb(x, base=10.0, eps=eps)


def log_scale(x, min_x, max_x):
    """Maps `x` in [-1, 1] logarithmically onto [min_x, max_x] (both > 0)."""
    x = (tf_float32(x) + 1.0) / 2.0
    log_min = tf.math.log(tf_float32(min_x))
    log_max = tf.math.log(tf_float32(max_x))
    return tf.exp((1.0 - x) * log_min + x * log_max)


def soft_limit(x, x_min=0.0, x_max=1.0):
    """Smoothly limits `x` to [x_min, x_max] with softplus knees; gradient never vanishes fully."""
    x = tf_float32(x)
    return tf.nn.softplus(x) + x_min - tf.nn.softplus(x - (x_max - x_min))


@tf.custom_gradient
def gradient_reversal(x):
    """Identity in the forward pass; negates the gradient in the backward pass."""

    def grad(dy):
        return -1.0 * dy

    return tf.identity(x), grad


def power_to_db(power, ref_db=0.0, range_db=DB_RANGE, use_tf=True):
    """Converts power to decibels, floored at `-range_db` below `ref_db`.

    Args:
      power: Power (amplitude squared), any shape.
      ref_db: dB value that maps to 0 dB.
      range_db: Dynamic range; outputs are clipped at `-range_db`.
      use_tf: Use TensorFlow ops (differentiable) or numpy.
    """
    if use_tf:
        power = tf_float32(power)
        amin = tf.constant(10.0 ** (-range_db / 10.0), tf.float32)
        db = 10.0 * tf.math.log(tf.maximum(amin, power)) / tf.math.log(10.0)
        return tf.maximum(db - ref_db, -range_db)
    power = np.asarray(power, dtype=np.float32)
    amin = np.float32(10.0 ** (-range_db / 10.0))
    db = 10.0 * np.log10(np.maximum(amin, power))
    return np.maximum(db - ref_db, -range_db).astype(np.float32)


def amplitude_to_db(amplitude, ref_db=0.0, range_db=DB_RANGE, use_tf=True):
    """Converts amplitude to decibels (20 log10), floored at `-range_db`."""
    if use_tf:
        amplitude = tf_float32(amplitude)
    else:
        amplitude = np.asarray(amplitude, dtype=np.float32)
    return power_to_db(amplitude**2, ref_db=ref_db, range_db=range_db, use_tf=use_tf)


def db_to_power(db):
    """Converts decibels to power: 10^(db/10)."""
    return tf.pow(10.0, tf_float32(db) / 10.0)


def db_to_amplitude(db):
    """Converts decibels to amplitude: 10^(db/20)."""
    return tf.pow(10.0, tf_float32(db) / 20.0)


def midi_to_hz(notes: Number, midi_zero_silence: bool = False) -> Number:
    """MIDI note numbers to Hz (A4 = 69 = 440 Hz). With `midi_zero_silence`, note 0 maps to 0 Hz."""
    notes = tf_float32(notes)
    hz = 440.0 * tf.pow(2.0, (notes - 69.0) / 12.0)
    if midi_zero_silence:
        hz = tf.where(tf.equal(notes, 0.0), tf.zeros_like(hz), hz)
    return hz


def hz_to_midi(frequencies: Number) -> Number:
    """Hz to (fractional) MIDI note numbers; frequencies <= 0 map to 0."""
    frequencies = tf_float32(frequencies)
    notes = 12.0 * (logb(frequencies, 2.0) - np.log2(440.0)) + 69.0
    return tf.where(frequencies <= 0.0, tf.zeros_like(notes), notes)


def _float_tensor(x) -> tf.Tensor:
    """A tensor of `x` that keeps a floating dtype (float64 stays float64); other dtypes and
    Python numbers become float32."""
    if isinstance(x, tf.Tensor | tf.Variable):
        x = tf.convert_to_tensor(x)
    elif isinstance(x, np.ndarray | np.floating) and x.dtype.kind == 'f':
        x = tf.convert_to_tensor(x)
    else:
        x = tf.convert_to_tensor(x, tf.float32)
    return x if x.dtype.is_floating else tf.cast(x, tf.float32)


def unit_to_midi(unit: Number, midi_min: Number = 20.0, midi_max: Number = 90.0,
                 clip: bool = False) -> Number:
    """Maps [0, 1] linearly onto [midi_min, midi_max].

    Args:
      unit: Values in [0, 1] (values outside extrapolate unless `clip`), any shape. A float64
        input gives a float64 result (as the reference, which computes in the input's dtype);
        anything else float32.
      midi_min, midi_max: MIDI notes that 0 and 1 map to (numbers or tensors).
      clip: Clip `unit` to [0, 1] first.
    """
    unit = _float_tensor(unit)
    if clip:
        unit = tf.clip_by_value(unit, 0.0, 1.0)
    midi_min = tf.cast(midi_min, unit.dtype)
    midi_max = tf.cast(midi_max, unit.dtype)
    return midi_min + (midi_max - midi_min) * unit


def midi_to_unit(midi: Number, midi_min: Number = 20.0, midi_max: Number = 90.0,
                 clip: bool = False) -> Number:
    """Maps [midi_min, midi_max] linearly onto [0, 1] (float64 in, float64 out; else float32).

    Args:
      midi: MIDI notes, any shape.
      midi_min, midi_max: Notes that map to 0 and 1.
      clip: Clip the result to [0, 1].
    """
    midi = _float_tensor(midi)
    midi_min = tf.cast(midi_min, midi.dtype)
    midi_max = tf.cast(midi_max, midi.dtype)
    unit = (midi - midi_min) / (midi_max - midi_min)
    if clip:
        unit = tf.clip_by_value(unit, 0.0, 1.0)
    return unit


def unit_to_hz(unit: Number, hz_min: Number, hz_max: Number, clip: bool = False) -> Number:
    """Maps [0, 1] onto [hz_min, hz_max], linear in pitch (MIDI)."""
    midi = unit_to_midi(unit, midi_min=hz_to_midi(hz_min), midi_max=hz_to_midi(hz_max), clip=clip)
    return midi_to_hz(midi)


def hz_to_unit(hz: Number, hz_min: Number, hz_max: Number, clip: bool = False) -> Number:
    """Maps [hz_min, hz_max] onto [0, 1], linear in pitch (MIDI)."""
    return midi_to_unit(hz_to_midi(hz), midi_min=hz_to_midi(hz_min),
                        midi_max=hz_to_midi(hz_max), clip=clip)


def hz_to_bark(hz):
    """Hz to the Bark scale, Traunmüller (1990): 26.81 / (1 + 1960 / hz) - 0.53."""
    return 26.81 / (1.0 + 1960.0 / tf_float32(hz)) - 0.53


def bark_to_hz(bark):
    """Bark to Hz (inverse of `hz_to_bark`): 1960 / (26.81 / (bark + 0.53) - 1)."""
    return 1960.0 / (26.81 / (tf_float32(bark) + 0.53) - 1.0)


def hz_to_mel(hz):
    """Hz to mel (HTK formula with natural log)."""
    return 1127.0 * tf.math.log(1.0 + tf_float32(hz) / 700.0)


def mel_to_hz(mel):
    """Mel to Hz (inverse of `hz_to_mel`)."""
    return 700.0 * (tf.exp(tf_float32(mel) / 1127.0) - 1.0)


def hz_to_erb(hz):
    """Equivalent rectangular bandwidth (Hz) of the auditory filter centred at `hz`."""
    return 0.108 * tf_float32(hz) + 24.7


def exp_sigmoid(x, exponent=10.0, max_value=2.0, threshold=1e-07):
    """Exponentiated sigmoid: a positive, non-saturating-at-zero scaling for amplitudes.

    Computes `max_value * sigmoid(x) ** log(exponent) + threshold`.
    """
    x = tf_float32(x)
    return max_value * tf.nn.sigmoid(x) ** tf.math.log(float(exponent)) + threshold


def sym_exp_sigmoid(x, width=8.0):
    """Symmetric exp_sigmoid peaking at x=0 and falling off over `width`."""
    x = tf_float32(x)
    return exp_sigmoid(width * (tf.abs(x) / 2.0 - 1.0))


def _split_depth(freqs: tf.Tensor, depth: int) -> tf.Tensor:
    """[B, T, N * depth] -> [B, T, N, depth]; 4-D inputs are returned unchanged."""
    freqs = tf_float32(freqs)
    if len(freqs.shape) == 4:
        return freqs
    if len(freqs.shape) != 3:
        raise ValueError(f'frequencies must be [batch, time, n*depth] or [batch, time, n, depth], '
                         f'got shape {freqs.shape}.')
    n_total = int(freqs.shape[-1])
    if n_total % depth:
        raise ValueError(f'the last axis ({n_total}) is not divisible by depth={depth}.')
    shape = tf.concat([tf.shape(freqs)[:2], [n_total // depth, depth]], axis=0)
    return tf.reshape(freqs, shape)


def frequencies_softmax(freqs: tf.Tensor, depth: int = 1, hz_min: float = 20.0,
                        hz_max: float = 8000.0) -> tf.Tensor:
    """Network outputs to frequencies via a softmax over `depth` pitch bins.

    Args:
      freqs: [batch, time, n * depth] or [batch, time, n, depth] logits.
      depth: Number of bins per frequency, spread evenly in pitch over [hz_min, hz_max].

    Returns:
      [batch, time, n] frequencies in Hz (the probability-weighted mean bin, linear in pitch).
    """
    freqs = _split_depth(freqs, depth)
    depth = int(freqs.shape[-1])
    probs = tf.nn.softmax(freqs, axis=-1)
    bins = tf.linspace(0.0, 1.0, depth) if depth > 1 else tf.constant([0.5])
    unit = tf.reduce_sum(probs * bins, axis=-1)
    return unit_to_hz(unit, hz_min=hz_min, hz_max=hz_max)


def frequencies_sigmoid(freqs: tf.Tensor, depth: int = 1, hz_min: float = 0.0,
                        hz_max: float = 8000.0) -> tf.Tensor:
    """Network outputs to frequencies via sigmoids, linear in Hz.

    With depth > 1, each successive sigmoid refines the previous one by half as much (a soft
    binary fraction), which keeps coarse and fine control separate.

    Args:
      freqs: [batch, time, n * depth] or [batch, time, n, depth] logits.

    Returns:
      [batch, time, n] frequencies in Hz within [hz_min, hz_max].
    """
    freqs = _split_depth(freqs, depth)
    depth = int(freqs.shape[-1])
    weights = 0.5 ** tf.range(depth, dtype=tf.float32)
    weights /= tf.reduce_sum(weights)
    # The weights sum to one; the clip keeps float rounding from stepping past hz_max.
    unit = tf.clip_by_value(tf.reduce_sum(tf.nn.sigmoid(freqs) * weights, axis=-1), 0.0, 1.0)
    return hz_min + (hz_max - hz_min) * unit
