"""Changing the time resolution of control signals (frame rate <-> audio rate)."""

from __future__ import annotations

from typing import Text

import tensorflow as tf

from ddsp_core.dsp.units import tf_float32


def _as_3d(inputs: tf.Tensor):
    """Returns (x as [batch, time, channels], function restoring the original rank)."""
    rank = len(inputs.shape)
    if rank == 1:
        return inputs[tf.newaxis, :, tf.newaxis], lambda y: y[0, :, 0]
    if rank == 2:
        return inputs[:, :, tf.newaxis], lambda y: y[:, :, 0]
    if rank == 3:
        return inputs, lambda y: y
    if rank == 4:
        shape = tf.shape(inputs)
        x = tf.reshape(tf.transpose(inputs, [0, 2, 1, 3]), [-1, shape[1], shape[3]])

        def restore(y):
            y = tf.reshape(y, [shape[0], shape[2], tf.shape(y)[1], shape[3]])
            return tf.transpose(y, [0, 2, 1, 3])

        return x, restore
    raise ValueError(
        f'resample: inputs must have rank 1-4 with time on axis 1, got {inputs.shape}.')


def _source_positions(n_in, n_out: int, add_endpoint: bool) -> tf.Tensor:
    """Fractional input index of every output sample (tf.compat.v1 resize semantics)."""
    n_in_f = tf.cast(n_in, tf.float32)
    t = tf.range(n_out, dtype=tf.float32)
    if add_endpoint:
        # Frame i sits at output sample i * n_out / n_in; the last frame is held to the end.
        return t * (n_in_f / float(n_out))
    # First and last frames land exactly on the first and last output samples.
    return t * ((n_in_f - 1.0) / max(float(n_out - 1), 1.0))


def _linear(x: tf.Tensor, n_timesteps: int, add_endpoint: bool) -> tf.Tensor:
    n_in = tf.shape(x)[1]
    pos = _source_positions(n_in, n_timesteps, add_endpoint)
    i0 = tf.minimum(tf.cast(tf.floor(pos), tf.int32), n_in - 1)
    i1 = tf.minimum(i0 + 1, n_in - 1)
    frac = (pos - tf.cast(i0, tf.float32))[tf.newaxis, :, tf.newaxis]
    x0 = tf.gather(x, i0, axis=1)
    x1 = tf.gather(x, i1, axis=1)
    return x0 + frac * (x1 - x0)


def _nearest(x: tf.Tensor, n_timesteps: int, add_endpoint: bool) -> tf.Tensor:
    n_in = tf.shape(x)[1]
    pos = _source_positions(n_in, n_timesteps, add_endpoint)
    idx = tf.floor(pos) if add_endpoint else tf.round(pos)
    idx = tf.minimum(tf.cast(idx, tf.int32), n_in - 1)
    return tf.gather(x, idx, axis=1)


def _cubic(x: tf.Tensor, n_timesteps: int, add_endpoint: bool) -> tf.Tensor:
    """Keys cubic convolution (a = -0.75, as `tf.compat.v1.image.resize` bicubic) with edge
    clamping; exact weights (the legacy resize looks them up in a 1024-step table)."""
    n_in = tf.shape(x)[1]
    pos = _source_positions(n_in, n_timesteps, add_endpoint)
    i1 = tf.cast(tf.floor(pos), tf.int32)
    s = (pos - tf.cast(i1, tf.float32))[tf.newaxis, :, tf.newaxis]

    def take(offset):
        return tf.gather(x, tf.clip_by_value(i1 + offset, 0, n_in - 1), axis=1)

    p0, p1, p2, p3 = take(-1), take(0), take(1), take(2)
    a = -0.75  # the kernel of the (legacy) image resize the reference uses
    w0 = a * s**3 - 2 * a * s**2 + a * s
    w1 = (a + 2) * s**3 - (a + 3) * s**2 + 1
    w2 = -(a + 2) * s**3 + (2 * a + 3) * s**2 - a * s
    w3 = -a * s**3 + a * s**2
    return w0 * p0 + w1 * p1 + w2 * p2 + w3 * p3


def resample(inputs: tf.Tensor, n_timesteps: int, method: Text = 'linear',
             add_endpoint: bool = True) -> tf.Tensor:
    """Interpolates a signal along its time axis (axis 1, or axis 0 for 1-D input).

    Args:
      inputs: [n_frames], [batch, n_frames], [batch, n_frames, channels] or
        [batch, n_frames, height, channels].
      n_timesteps: Number of output time steps.
      method: 'nearest', 'linear', 'cubic' or 'window' (overlapping Hann windows; smooth
        amplitude envelopes, needs `n_timesteps` divisible by the number of intervals).
      add_endpoint: If True, frame i is placed at sample i * n_timesteps / n_frames and the
        last frame is held to the end (the layout of frame-rate features computed with a hop).
        If False, the first and last frames land on the first and last output samples.

    Returns:
      The input resampled to `n_timesteps` on the time axis, same rank as `inputs`.
    """
    inputs = tf_float32(inputs)
    x, restore = _as_3d(inputs)
    if method == 'linear':
        y = _linear(x, n_timesteps, add_endpoint)
    elif method == 'nearest':
        y = _nearest(x, n_timesteps, add_endpoint)
    elif method == 'cubic':
        y = _cubic(x, n_timesteps, add_endpoint)
    elif method == 'window':
        y = upsample_with_windows(x, n_timesteps, add_endpoint)
    else:
        raise ValueError(f"resample: method must be 'nearest', 'linear', 'cubic' or 'window', "
                         f"got {method!r}.")
    return restore(y)


def window_upsampling_plan(n_frames: int, n_timesteps: int, add_endpoint: bool = True):
    """Checks the sizes for Hann-window upsampling and returns (hop_size, n_intervals)."""
    n_points = n_frames + 1 if add_endpoint else n_frames
    n_intervals = n_points - 1
    if n_intervals < 1 or n_points >= n_timesteps:
        raise ValueError(f'upsample_with_windows: cannot upsample {n_frames} frames to '
                         f'{n_timesteps} samples; the output must be longer than the input.')
    if n_timesteps % n_intervals:
        extra = '' if add_endpoint else ' - 1'
        raise ValueError(f'upsample_with_windows: n_timesteps ({n_timesteps}) must be divisible '
                         f'by the number of input frames{extra} ({n_intervals}), '
                         f'add_endpoint={add_endpoint}.')
    return n_timesteps // n_intervals, n_intervals


def window_weights(hop_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Hann cross-fade weights within one hop: (weight of frame m, weight of frame m+1).

    Both are [hop_size]; they sum to one at every sample.
    """
    window = tf.signal.hann_window(2 * hop_size)  # periodic Hann: w[r] + w[r + hop] = 1
    return window[hop_size:], window[:hop_size]


def upsample_with_windows(inputs: tf.Tensor, n_timesteps: int,
                          add_endpoint: bool = True) -> tf.Tensor:
    """Upsamples frames with 50%-overlapping Hann windows (smooth, no overshoot).

    Equivalent to windowing every frame with a Hann window of two hops and overlap-adding, but
    computed as a cross-fade between neighbouring frames, without materialising the windows.

    Args:
      inputs: [batch, n_frames, channels].
      n_timesteps: Output length; must be divisible by n_frames (add_endpoint=True) or
        n_frames - 1 (add_endpoint=False).
      add_endpoint: Hold the last frame for a final interval (True), or end on it (False).

    Returns:
      [batch, n_timesteps, channels].
    """
    inputs = tf_float32(inputs)
    if len(inputs.shape) != 3:
        raise ValueError(f'upsample_with_windows: inputs must be [batch, n_frames, channels], '
                         f'got shape {inputs.shape}.')
    n_frames = int(inputs.shape[1])
    hop, n_intervals = window_upsampling_plan(n_frames, n_timesteps, add_endpoint)
    if add_endpoint:
        inputs = tf.concat([inputs, inputs[:, -1:, :]], axis=1)
    w_start, w_end = window_weights(hop)
    start = inputs[:, :-1, tf.newaxis, :]  # [B, n_intervals, 1, C]
    end = inputs[:, 1:, tf.newaxis, :]
    y = start * w_start[:, tf.newaxis] + end * w_end[:, tf.newaxis]  # [B, n_intervals, hop, C]
    shape = tf.shape(inputs)
    return tf.reshape(y, [shape[0], n_intervals * hop, shape[2]])


def center_crop(audio, frame_size):
    """Removes `frame_size // 2` samples from both ends of [batch, n_samples] audio."""
    pad_amount = int(frame_size // 2)
    if pad_amount == 0:
        return audio
    return audio[:, pad_amount:-pad_amount]
