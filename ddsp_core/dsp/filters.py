"""FFT convolution, frequency-sampled and windowed-sinc filters, and variable delays."""

from __future__ import annotations

from typing import Optional, Text

import numpy as np
import scipy.fft
import tensorflow as tf

from ddsp_core.dsp.units import tf_float32


def get_fft_size(frame_size: int, ir_size: int, power_of_2: bool = True) -> int:
    """FFT length for linear (not circular) convolution of a frame with an impulse response.

    Args:
      frame_size: Samples per audio frame.
      ir_size: Samples per impulse response.
      power_of_2: Round up to a power of two; otherwise to the next size scipy's FFT is fast at.
    """
    convolved_size = int(ir_size) + int(frame_size) - 1
    if power_of_2:
        return int(2 ** np.ceil(np.log2(convolved_size)))
    return int(scipy.fft.next_fast_len(convolved_size))


def crop_and_compensate_delay(audio: tf.Tensor, audio_size: int, ir_size: int, padding: Text,
                              delay_compensation: int) -> tf.Tensor:
    """Crops a full convolution result and removes the filter's delay.

    Args:
      audio: [batch, n_convolved] full convolution output.
      audio_size: Length of the signal before convolution.
      ir_size: Length of the impulse response.
      padding: 'same' (output has audio_size samples) or 'valid' (audio_size + ir_size - 1).
      delay_compensation: Samples to drop from the front; negative means the group delay of a
        zero-phase filter centred in its window, `ir_size // 2` (the layout produced by
        `frequency_impulse_response` and `sinc_impulse_response`).
    """
    if padding == 'valid':
        crop_size = ir_size + audio_size - 1
    elif padding == 'same':
        crop_size = audio_size
    else:
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}.")
    start = ir_size // 2 if delay_compensation < 0 else int(delay_compensation)
    total = int(audio.shape[-1])
    if start + crop_size > total:
        audio = tf.pad(audio, [[0, 0], [0, start + crop_size - total]])
    return audio[:, start:start + crop_size]


def fft_convolve(audio: tf.Tensor, impulse_response: tf.Tensor, padding: Text = 'same',
                 delay_compensation: int = -1) -> tf.Tensor:
    """Convolves audio with one or a sequence of impulse responses, via the FFT.

    With several impulse responses, the audio is cut into as many equal frames; each frame is
    convolved with its own response and the results are overlap-added (a time-varying filter).

    Args:
      audio: [batch, audio_size].
      impulse_response: [batch, ir_size] or [batch, n_ir_frames, ir_size]; batch may be 1 to
        share one response across the batch, and an unbatched [ir_size] response is shared too.
      padding: 'same' or 'valid' (see `crop_and_compensate_delay`).
      delay_compensation: Samples removed from the front; -1 for `ir_size // 2`.

    Returns:
      [batch, audio_size] ('same') or [batch, audio_size + ir_size - 1] ('valid').

    Raises:
      ValueError: The response's batch is neither 1 nor the audio's, or the audio cannot be cut
        into as many equal frames as there are responses.
    """
    audio = tf_float32(audio)
    impulse_response = tf_float32(impulse_response)
    if len(audio.shape) != 2:
        raise ValueError(f'fft_convolve: audio must be [batch, n_samples], got {audio.shape}.')
    if len(impulse_response.shape) == 1:
        impulse_response = impulse_response[tf.newaxis, :]
    if len(impulse_response.shape) == 2:
        impulse_response = impulse_response[:, tf.newaxis, :]
    if len(impulse_response.shape) != 3:
        raise ValueError('fft_convolve: impulse_response must be [ir_size], [batch, ir_size] or '
                         f'[batch, n_frames, ir_size], got {impulse_response.shape}.')
    batch, ir_batch = audio.shape[0], impulse_response.shape[0]
    if batch is not None and ir_batch is not None and ir_batch not in (1, batch):
        raise ValueError(f"fft_convolve: the impulse response's batch ({ir_batch}) must be 1 or "
                         f"the audio's ({batch}).")
    audio_size = int(audio.shape[1])
    n_ir_frames = int(impulse_response.shape[1])
    ir_size = int(impulse_response.shape[2])

    frame_size = int(np.ceil(audio_size / n_ir_frames))
    n_audio_frames = int(np.ceil(audio_size / frame_size))
    if n_audio_frames != n_ir_frames:
        raise ValueError(f'fft_convolve: {audio_size} samples cannot be split into {n_ir_frames} '
                         f'equal frames to match the impulse responses.')
    frames = tf.signal.frame(audio, frame_size, frame_size, pad_end=True)  # [B, F, frame]
    output = _convolve_frames(frames, impulse_response, frame_size)
    return crop_and_compensate_delay(output, audio_size, ir_size, padding, delay_compensation)


def _convolve_frames(frames: tf.Tensor, impulse_response: tf.Tensor, frame_size: int):
    """Each frame convolved with its own response (FFT), the results overlap-added.

    Args:
      frames: [batch, n_frames, frame_size] (n_frames may be known only at run time).
      impulse_response: [batch or 1, n_frames, ir_size].
      frame_size: Samples per frame (the hop of the overlap-add).

    Returns:
      [batch, (n_frames - 1) * frame_size + fft_size], fft_size = get_fft_size(frame_size,
      ir_size): the full convolution, zero-padded past its last sample.
    """
    fft_size = get_fft_size(frame_size, int(impulse_response.shape[-1]), power_of_2=True)
    convolved = tf.signal.irfft(tf.signal.rfft(frames, [fft_size])
                                * tf.signal.rfft(impulse_response, [fft_size]), [fft_size])
    if frames.shape[1] == 1:
        # One frame (e.g. a reverb): nothing to overlap. overlap_and_add's generic reshapes and
        # their gradients cost ~20 ms per training step for a 3 s impulse response.
        return convolved[:, 0, :]
    return tf.signal.overlap_and_add(convolved, frame_size)


def _centred_window(window_size: int) -> tf.Tensor:
    """Hann window of `window_size` samples whose peak (value 1) is at index window_size // 2."""
    return tf.signal.hann_window(window_size, periodic=(window_size % 2 == 0))


def apply_window_to_impulse_response(impulse_response: tf.Tensor, window_size: int = 0,
                                     causal: bool = False) -> tf.Tensor:
    """Windows a zero-phase impulse response and makes it causal.

    Args:
      impulse_response: [..., ir_size] in zero-phase form (time 0 at index 0, negative times
        wrapped to the end), as returned by an inverse real FFT; if `causal`, already causal
        and centred (it is first shifted to zero-phase form).
      window_size: Length of the Hann window; <= 0 or >= ir_size means ir_size (no cropping).
        A shorter window is rounded down to an odd length, so the cropped response is
        symmetric about its centre sample (as in the reference, whose sizes these are).

    Returns:
      [..., n] causal response, n = window_size (rounded down to odd when it crops) or
      ir_size, its zero-time sample at index n // 2.
    """
    impulse_response = tf.math.real(tf.convert_to_tensor(impulse_response))
    impulse_response = tf_float32(impulse_response)
    if causal:
        impulse_response = tf.signal.ifftshift(impulse_response, axes=-1)
    ir_size = int(impulse_response.shape[-1])
    if window_size <= 0 or window_size >= ir_size:
        window_size = ir_size
    elif window_size % 2 == 0:
        window_size -= 1
    centre = window_size // 2
    idx = (np.arange(window_size) - centre) % ir_size
    centred = tf.gather(impulse_response, idx, axis=-1)
    return centred * _centred_window(window_size)


def frequency_impulse_response(magnitudes: tf.Tensor, window_size: int = 0) -> tf.Tensor:
    """Linear-phase FIR responses from sampled magnitude responses (frequency sampling).

    Args:
      magnitudes: [batch, n_frames, n_frequencies] linear gains from 0 Hz to Nyquist, evenly
        spaced; or [batch, n_frequencies].
      window_size: Length of the Hann window (and the output); <= 0 or >= 2*(n_frequencies-1)
        means 2*(n_frequencies-1); a shorter even size is rounded down to odd (see
        `apply_window_to_impulse_response`).

    Returns:
      [batch, n_frames, n] (or [batch, n]) impulse responses, n the window size above, centred
      at index n // 2.
    """
    magnitudes = tf_float32(magnitudes)
    spectrum = tf.complex(magnitudes, tf.zeros_like(magnitudes))
    zero_phase_ir = tf.signal.irfft(spectrum)
    return apply_window_to_impulse_response(zero_phase_ir, window_size)


def impulse_response_size(n_frequencies: int, window_size: int = 0) -> int:
    """Length of `frequency_impulse_response`'s responses for `n_frequencies` magnitudes: the
    window size (rounded down to odd when it crops), or 2 * (n_frequencies - 1)."""
    ir_size = 2 * (int(n_frequencies) - 1)
    if window_size <= 0 or window_size >= ir_size:
        return ir_size
    return window_size - 1 if window_size % 2 == 0 else int(window_size)


def next_power_of_2(n: tf.Tensor) -> tf.Tensor:
    """Smallest power of two >= n, for an int32 tensor n >= 1 known only at run time (integer
    ops: exact, and convertible to TFLite)."""
    n = n - 1
    for shift in (1, 2, 4, 8, 16):
        n = tf.bitwise.bitwise_or(n, tf.bitwise.right_shift(n, shift))
    return n + 1


def frequency_filter_frames(audio: tf.Tensor, magnitudes: tf.Tensor, hop: int,
                            window_size: int = 0, tail: Optional[tf.Tensor] = None):
    """`frequency_filter` of consecutive blocks of a longer signal, the filters' tails carried.

    Each `hop`-sample frame of the block is convolved with its own frame's response and the
    results are overlap-added; what reaches past the block is returned as the next block's
    `tail`. The output is not delay-compensated: sample t of a block is sample t - ir_size // 2
    of the whole signal's `frequency_filter` (ir_size from `impulse_response_size`), so the
    first ir_size // 2 samples of a signal's first block precede it, and the first
    ir_size // 2 samples of the last block's tail complete it. The number of frames may be
    known only at run time; a single block (zero tail) is the one-shot filter.

    Args:
      audio: [batch, n_frames * hop].
      magnitudes: [batch, n_frames, n_frequencies] linear gains from 0 Hz to Nyquist.
      hop: Samples per frame.
      window_size: Filter length (see `frequency_impulse_response`).
      tail: [batch, fft_size - hop] from the previous block, or None (zeros), with fft_size =
        get_fft_size(hop, ir_size).

    Returns:
      (filtered [batch, n_frames * hop], tail [batch, fft_size - hop]).
    """
    audio = tf_float32(audio)
    impulse_response = frequency_impulse_response(magnitudes, window_size=window_size)
    batch = tf.shape(impulse_response)[0]
    n_frames = (int(impulse_response.shape[1]) if impulse_response.shape[1] is not None
                else tf.shape(impulse_response)[1])
    frames = tf.reshape(audio, [batch, n_frames, hop])
    full = _convolve_frames(frames, impulse_response, hop)  # [batch, (n_frames-1)*hop + fft]
    if tail is not None:
        full += tf.pad(tf_float32(tail), [[0, 0], [0, n_frames * hop]])
    return full[:, :n_frames * hop], full[:, n_frames * hop:]


def convolve_block(audio: tf.Tensor, impulse_response: tf.Tensor,
                   tail: Optional[tf.Tensor] = None):
    """Convolution of a block of a longer signal with a fixed response, its tail carried
    (overlap-add; computed in float64, so that any blocking gives the same sums).

    Args:
      audio: [batch, n] (n may be known only at run time).
      impulse_response: [batch or 1, ir_size].
      tail: [batch, ir_size - 1] float64 from the previous block, or None (zeros).

    Returns:
      (the full convolution's samples at the block's positions [batch, n] float32, tail
      [batch, ir_size - 1] float64).
    """
    audio = tf.cast(tf_float32(audio), tf.float64)
    impulse_response = tf.cast(tf_float32(impulse_response), tf.float64)
    ir_size = int(impulse_response.shape[-1])
    n = int(audio.shape[1]) if audio.shape[1] is not None else tf.shape(audio)[1]
    fft_size = next_power_of_2(tf.convert_to_tensor(n + ir_size - 1, tf.int32))
    # Padded here, not by rfft's fft_length: TensorFlow's rfft of an empty block is not zero.
    padded = tf.pad(audio, [[0, 0], [0, fft_size - n]])
    full = tf.signal.irfft(tf.signal.rfft(padded)
                           * tf.signal.rfft(impulse_response, [fft_size]), [fft_size])
    full = full[:, :n + ir_size - 1]
    if tail is not None:
        full += tf.pad(tail, [[0, 0], [0, n]])
    return tf.cast(full[:, :n], tf.float32), full[:, n:]


def sinc(x, threshold=1e-20):
    """Normalised sinc, sin(pi x) / (pi x), with sinc(0) = 1."""
    x = tf_float32(x)
    x = tf.where(tf.abs(x) < threshold, threshold * tf.ones_like(x), x)
    x = np.pi * x
    return tf.sin(x) / x


def sinc_impulse_response(cutoff_frequency, window_size=512, sample_rate=None, high_pass=False):
    """Windowed-sinc low-pass (or high-pass) impulse responses (symmetric Hamming window).

    Args:
      cutoff_frequency: Cutoff in Hz if `sample_rate` is given, otherwise as a fraction of
        Nyquist in [0, 1] (clipped to that range); [batch, n_frames, 1], [..., 1], or a
        scalar.
      window_size: Response length; rounded up to an odd number, 2 * (window_size // 2) + 1,
        so the filter is symmetric.
      sample_rate: Hz, or None for normalised cutoffs.
      high_pass: Return the complementary high-pass response (a unit impulse minus the
        low-pass).

    Returns:
      [..., 2 * (window_size // 2) + 1] responses (the cutoff's shape with its last axis
      replaced; [n] for a scalar cutoff) centred at window_size // 2, unity gain in the pass
      band. A cutoff of 0 gives a silent low-pass (an all-pass high-pass).
    """
    cutoff = tf_float32(cutoff_frequency)
    if sample_rate is not None:
        cutoff = cutoff / (sample_rate / 2.0)
    cutoff = tf.clip_by_value(cutoff, 0.0, 1.0)
    half = int(window_size) // 2
    n = tf.range(-half, half + 1, dtype=tf.float32)
    ir = cutoff * sinc(cutoff * n)
    ir *= tf.signal.hamming_window(2 * half + 1, periodic=False)
    ir = ir / tf.maximum(tf.reduce_sum(ir, axis=-1, keepdims=True), 1e-12)
    if high_pass:
        delta = tf.one_hot(half, 2 * half + 1)
        ir = delta - ir
    return ir


def frequency_filter(audio: tf.Tensor, magnitudes: tf.Tensor, window_size: int = 0,
                     padding: Text = 'same') -> tf.Tensor:
    """Time-varying linear-phase filter given by frame-wise magnitude responses.

    Args:
      audio: [batch, n_samples].
      magnitudes: [batch, n_frames, n_frequencies] linear gains from 0 Hz to Nyquist; n_samples
        must split into n_frames equal frames (last one may be shorter).
      window_size: Filter length (see `frequency_impulse_response`).
      padding: 'same' or 'valid'.

    Returns:
      Filtered audio, delay-compensated.
    """
    impulse_response = frequency_impulse_response(magnitudes, window_size=window_size)
    return fft_convolve(audio, impulse_response, padding=padding)


def sinc_filter(audio: tf.Tensor, cutoff_frequency: tf.Tensor, window_size: int = 512,
                sample_rate: Optional[int] = None, padding: Text = 'same',
                high_pass: bool = False) -> tf.Tensor:
    """Time-varying windowed-sinc low/high-pass filter.

    Args:
      audio: [batch, n_samples].
      cutoff_frequency: [batch, n_frames, 1] (or [batch, n_frames]) cutoff in Hz if
        `sample_rate` is given, else normalised to Nyquist; a scalar is one fixed cutoff for
        the whole batch.
      window_size: Filter length (see `sinc_impulse_response`).
      sample_rate: Hz, or None for normalised cutoffs.
      padding: 'same' or 'valid'.
      high_pass: High-pass instead of low-pass.

    Returns:
      Filtered audio, delay-compensated: [batch, n_samples] ('same').
    """
    cutoff_frequency = tf_float32(cutoff_frequency)
    if len(cutoff_frequency.shape) == 2:
        cutoff_frequency = cutoff_frequency[..., tf.newaxis]
    impulse_response = sinc_impulse_response(cutoff_frequency, window_size=window_size,
                                             sample_rate=sample_rate, high_pass=high_pass)
    return fft_convolve(audio, impulse_response, padding=padding)


def variable_length_delay(phase: tf.Tensor, audio: tf.Tensor, max_length: int = 512) -> tf.Tensor:
    """Delays audio by a time-varying, fractional number of samples (linear interpolation).

    Args:
      phase: [batch, n_samples, 1] or [batch, n_samples] delay as a fraction of `max_length`, in
        [0, 1].
      audio: [batch, n_samples].
      max_length: Longest delay in samples.

    Returns:
      [batch, n_samples]: out[t] = audio[t - phase[t] * max_length] (zero before the start).
    """
    audio = tf_float32(audio)
    phase = tf_float32(phase)
    if len(phase.shape) == 3:
        phase = phase[..., 0]
    n_samples = tf.shape(audio)[1]
    delay = tf.clip_by_value(phase, 0.0, 1.0) * float(max_length)
    lead = max_length + 1
    padded = tf.pad(audio, [[0, 0], [lead, 0]])
    position = tf.cast(tf.range(n_samples), tf.float32) + float(lead) - delay
    lower = tf.floor(position)
    frac = position - lower
    lower = tf.cast(lower, tf.int32)
    upper = tf.minimum(lower + 1, n_samples + lead - 1)
    a = tf.gather(padded, lower, batch_dims=1)
    b = tf.gather(padded, upper, batch_dims=1)
    return a + frac * (b - a)
