"""Oscillators: phase accumulation, sinusoid banks, harmonic and wavetable synthesis."""

from __future__ import annotations

from typing import Optional, Text

import numpy as np
import tensorflow as tf

from ddsp_core.dsp import resampling
from ddsp_core.dsp.units import safe_divide, tf_float32

TWO_PI = 2.0 * np.pi


def wrap_phase(phase: tf.Tensor) -> tf.Tensor:
    """Wraps phases to [0, 2*pi) with an identity gradient."""
    return phase - TWO_PI * tf.stop_gradient(tf.floor(phase / TWO_PI))


def accumulate_phase(angular_frequency: tf.Tensor) -> tf.Tensor:
    """Cumulative sum of per-sample phase increments along axis 1, wrapped to [0, 2*pi).

    Accumulates in float64 so that long signals keep their phase accurate (a float32 running sum
    drifts by radians over a few seconds at high frequencies), then returns float32.

    Args:
      angular_frequency: [batch, n_samples, ...] radians per sample.
    """
    omega = tf.cast(angular_frequency, tf.float64)
    phase = tf.cumsum(omega, axis=1)
    return tf.cast(wrap_phase(phase), tf.float32)


def _phase(frequency_hz: tf.Tensor, sample_rate: int, use_angular_cumsum: bool) -> tf.Tensor:
    """Phase in radians of sinusoids at `frequency_hz` ([batch, n_samples, n])."""
    if use_angular_cumsum:
        return angular_cumsum(frequency_hz * (TWO_PI / float(sample_rate)))
    omega = tf.cast(frequency_hz, tf.float64) * (TWO_PI / float(sample_rate))
    return accumulate_phase(omega)


def angular_cumsum(angular_frequency, chunk_size=1000):
    """Phase accumulation that stays precise in float32 by wrapping every `chunk_size` samples.

    Args:
      angular_frequency: [batch, n_samples, channels] radians per sample.
      chunk_size: Samples summed before wrapping to [0, 2*pi).

    Returns:
      [batch, n_samples, channels] accumulated phase, wrapped to [0, 2*pi) at chunk ends.
    """
    omega = tf_float32(angular_frequency)
    n_samples = int(omega.shape[1])
    chunk_size = int(chunk_size)
    pad = (-n_samples) % chunk_size
    if pad:
        omega = tf.pad(omega, [[0, 0], [0, pad], [0, 0]])
    shape = tf.shape(omega)
    n_chunks = (n_samples + pad) // chunk_size
    chunks = tf.reshape(omega, [shape[0], n_chunks, chunk_size, shape[2]])
    omega = wrap_phase(chunks)  # increments themselves may exceed 2 pi
    within = tf.cumsum(omega, axis=2)
    # Phase at each chunk's start: wrapped running sum of wrapped chunk totals.
    totals = wrap_phase(within[:, :, -1, :])
    starts = tf.cumsum(totals, axis=1, exclusive=True)
    starts = wrap_phase(starts)
    phase = wrap_phase(within + starts[:, :, tf.newaxis, :])
    phase = tf.reshape(phase, [shape[0], n_chunks * chunk_size, shape[2]])
    return phase[:, :n_samples, :]


def get_harmonic_frequencies(frequencies: tf.Tensor, n_harmonics: int) -> tf.Tensor:
    """Integer multiples of a fundamental.

    Args:
      frequencies: [batch, time, 1] fundamental in Hz.
      n_harmonics: Number of harmonics (including the fundamental).

    Returns:
      [batch, time, n_harmonics] frequencies in Hz.
    """
    frequencies = tf_float32(frequencies)
    multipliers = tf.linspace(1.0, float(n_harmonics), int(n_harmonics))
    return frequencies * multipliers


def remove_above_nyquist(frequency_envelopes: tf.Tensor, amplitude_envelopes: tf.Tensor,
                         sample_rate: int = 16000) -> tf.Tensor:
    """Zeroes the amplitude of every sinusoid at or above the Nyquist frequency.

    Args:
      frequency_envelopes: [batch, time, n_sinusoids] Hz.
      amplitude_envelopes: [batch, time, n_sinusoids].
      sample_rate: Hz.

    Returns:
      [batch, time, n_sinusoids] amplitudes.
    """
    frequency_envelopes = tf_float32(frequency_envelopes)
    amplitude_envelopes = tf_float32(amplitude_envelopes)
    return tf.where(frequency_envelopes >= sample_rate / 2.0,
                    tf.zeros_like(amplitude_envelopes), amplitude_envelopes)


def normalize_harmonics(harmonic_distribution, f0_hz=None, sample_rate=None):
    """Normalises a harmonic distribution to sum to one, after removing harmonics above Nyquist.

    Args:
      harmonic_distribution: [batch, time, n_harmonics] non-negative weights.
      f0_hz: [batch, time, 1] fundamental in Hz; with `sample_rate`, harmonics at or above
        Nyquist are zeroed before normalising.
      sample_rate: Hz, or None to skip the Nyquist check.
    """
    harmonic_distribution = tf_float32(harmonic_distribution)
    if sample_rate is not None and f0_hz is not None:
        n_harmonics = int(harmonic_distribution.shape[-1])
        harmonic_frequencies = get_harmonic_frequencies(f0_hz, n_harmonics)
        harmonic_distribution = remove_above_nyquist(harmonic_frequencies,
                                                     harmonic_distribution, sample_rate)
    total = tf.reduce_sum(harmonic_distribution, axis=-1, keepdims=True)
    return safe_divide(harmonic_distribution, total)


def oscillator_bank(frequency_envelopes: tf.Tensor, amplitude_envelopes: tf.Tensor,
                    sample_rate: int = 16000, sum_sinusoids: bool = True,
                    use_angular_cumsum: bool = False) -> tf.Tensor:
    """Renders a bank of sinusoids from audio-rate frequency and amplitude envelopes.

    Args:
      frequency_envelopes: [batch, n_samples, n_sinusoids] Hz.
      amplitude_envelopes: [batch, n_samples, n_sinusoids] linear amplitude.
      sample_rate: Hz.
      sum_sinusoids: Return the mix [batch, n_samples] (True) or every sinusoid
        [batch, n_samples, n_sinusoids] (False).
      use_angular_cumsum: Accumulate phase with `angular_cumsum` (chunked float32) instead of a
        float64 running sum.

    Returns:
      Audio, [batch, n_samples] or [batch, n_samples, n_sinusoids].
    """
    frequency_envelopes = tf_float32(frequency_envelopes)
    amplitude_envelopes = remove_above_nyquist(frequency_envelopes, amplitude_envelopes,
                                               sample_rate)
    phases = _phase(frequency_envelopes, sample_rate, use_angular_cumsum)
    audio = amplitude_envelopes * tf.sin(phases)
    if sum_sinusoids:
        audio = tf.reduce_sum(audio, axis=-1)
    return audio


def harmonic_oscillator_bank(frequency: tf.Tensor, amplitude_envelopes: tf.Tensor,
                             initial_phase: Optional[tf.Tensor] = None, sample_rate: int = 16000,
                             use_angular_cumsum: bool = True):
    """Renders harmonics of one audio-rate fundamental, accumulating a single phase.

    For streaming: pass the returned final phase as the next block's `initial_phase` and the
    blocks join without a discontinuity.

    Args:
      frequency: [batch, n_samples, 1] fundamental in Hz.
      amplitude_envelopes: [batch, n_samples, n_harmonics] amplitude of each harmonic
        (harmonics at or above Nyquist are silenced sample by sample).
      initial_phase: [batch, 1, 1] phase of the fundamental before the first sample, in
        radians, or None (0).
      sample_rate: Hz.
      use_angular_cumsum: Chunked float32 accumulation (True) or float64 running sum (False).

    Returns:
      (audio [batch, n_samples], final_phase [batch, 1, 1]): the fundamental's phase at the
      last sample, wrapped to [0, 2*pi).
    """
    frequency = tf_float32(frequency)
    amplitude_envelopes = tf_float32(amplitude_envelopes)
    n_harmonics = int(amplitude_envelopes.shape[-1])
    harmonic_frequencies = get_harmonic_frequencies(frequency, n_harmonics)
    amplitude_envelopes = remove_above_nyquist(harmonic_frequencies, amplitude_envelopes,
                                               sample_rate)
    phase = _phase(frequency, sample_rate, use_angular_cumsum)
    if initial_phase is not None:
        phase = wrap_phase(phase + tf_float32(initial_phase))
    harmonics = tf.linspace(1.0, float(n_harmonics), n_harmonics)
    audio = tf.reduce_sum(amplitude_envelopes * tf.sin(phase * harmonics), axis=-1)
    return audio, phase[:, -1:, :1]


def _length(x: tf.Tensor):
    """x's axis 1: a Python int when known while tracing (static shapes stay static), else a
    tensor."""
    return int(x.shape[1]) if x.shape[1] is not None else tf.shape(x)[1]


def _fast_harmonic_synthesis(f0_hz: tf.Tensor, harmonic_amplitudes: tf.Tensor, n_samples: int,
                             sample_rate: int, amp_resample_method: str,
                             use_angular_cumsum: bool) -> tf.Tensor:
    """Harmonic synthesis of a whole signal of n_samples = n_frames * hop: one block of
    `harmonic_frames` from phase 0, the last frame held for the final interval."""
    hop = n_samples // int(harmonic_amplitudes.shape[1])
    audio, _ = harmonic_frames(tf.concat([f0_hz, f0_hz[:, -1:]], axis=1),
                               tf.concat([harmonic_amplitudes, harmonic_amplitudes[:, -1:]],
                                         axis=1),
                               hop, sample_rate, amp_resample_method,
                               use_angular_cumsum=use_angular_cumsum)
    return audio


def harmonic_frames(f0_hz: tf.Tensor, harmonic_amplitudes: tf.Tensor, hop: int,
                    sample_rate: int = 16000, amp_resample_method: Text = 'window',
                    initial_phase: Optional[tf.Tensor] = None, use_angular_cumsum: bool = False):
    """Harmonic synthesis of consecutive frames from a carried phase: a block of a longer
    signal, or (zero phase, the last frame repeated) a whole one.

    Frame i sits at sample i * hop; over the interval to the next frame f0 moves linearly and
    the amplitudes are cross-faded ('window': Hann, 'linear'), as `harmonic_synthesis` renders
    when n_samples is a multiple of n_frames (it calls this). Harmonics are integer multiples
    of one fundamental, so a single phase is accumulated (float64) and harmonic k uses k times
    it. Instead of upsampling every harmonic's amplitude to audio rate, the per-sample sinusoids
    of one hop are contracted with the two bounding frames' amplitudes by one batched matmul;
    harmonics that cross Nyquist within a hop are rendered separately, sample by sample, so the
    per-sample Nyquist mask never has to be built over [batch, n_samples, n_harmonics]. Blocks
    joined by their phases equal the whole signal's synthesis up to float rounding. The number
    of frames may be known only at run time.

    Args:
      f0_hz: [batch, n + 1, 1] Hz: the block's n frames and the frame after them (the next
        block's first; at a signal's end, the last frame again).
      harmonic_amplitudes: [batch, n + 1, n_harmonics] linear amplitude of each harmonic.
      hop: Samples per frame.
      sample_rate: Hz.
      amp_resample_method: 'window' or 'linear'.
      initial_phase: [batch, 1] float64 phase of the fundamental before the block's first
        sample (the previous block's final phase), or None (0).
      use_angular_cumsum: Accumulate the phase with `angular_cumsum` (float32 chunks; the
        block's length must be known when tracing, and an `initial_phase` is refused).

    Returns:
      (audio [batch, n * hop] float32, final phase [batch, 1] float64 in [0, 2*pi)).
    """
    if amp_resample_method not in ('window', 'linear'):
        raise ValueError("harmonic_frames: amp_resample_method must be 'window' or 'linear', "
                         f'got {amp_resample_method!r}.')
    f0_all, amps_all = tf_float32(f0_hz), tf_float32(harmonic_amplitudes)
    f0_hz, f0_next = f0_all[:, :-1], f0_all[:, 1:]
    harmonic_amplitudes, amps_next = amps_all[:, :-1], amps_all[:, 1:]
    batch, n_frames = tf.shape(f0_hz)[0], _length(f0_hz)
    n_harmonics = int(harmonic_amplitudes.shape[-1])
    frac = tf.range(hop, dtype=tf.float32) / float(hop)
    f0_audio = tf.reshape(f0_hz + frac * (f0_next - f0_hz), [batch, n_frames * hop, 1])
    if use_angular_cumsum:
        if initial_phase is not None:
            raise ValueError('harmonic_frames: initial_phase is carried in float64, which the '
                             'angular cumsum does not accumulate in; use '
                             'use_angular_cumsum=False to carry phase between chunks.')
        phase = angular_cumsum(f0_audio * (TWO_PI / float(sample_rate)))
        final_phase = tf.cast(phase[:, -1, :], tf.float64)
    else:
        phase = tf.cumsum(tf.cast(f0_audio, tf.float64) * (TWO_PI / float(sample_rate)), axis=1)
        if initial_phase is not None:
            phase += tf.cast(initial_phase, tf.float64)[:, :, tf.newaxis]
        phase = wrap_phase(phase)
        final_phase = phase[:, -1, :]
        phase = tf.cast(phase, tf.float32)
    harmonics = tf.linspace(1.0, float(n_harmonics), n_harmonics)
    nyquist = sample_rate / 2.0
    # Frequency moves linearly within an interval, so harmonic k is below Nyquist throughout
    # when k * max(f0) is, and above it throughout when k * min(f0) is not. Audible harmonics
    # form a prefix 1..n of the series.
    below_throughout = tf.maximum(f0_hz, f0_next) * harmonics < nyquist  # [B, F, K]
    n_always = tf.reduce_sum(tf.cast(below_throughout, tf.int32), axis=-1)  # [B, F]
    n_sometimes = tf.reduce_sum(
        tf.cast(tf.minimum(f0_hz, f0_next) * harmonics < nyquist, tf.int32), axis=-1)

    if amp_resample_method == 'window':
        w_start, w_end = resampling.window_weights(hop)
    else:  # linear
        w_start, w_end = 1.0 - frac, frac

    # 1) Harmonics below Nyquist for the whole interval: one batched matmul per hop, over only
    #    as many harmonics as are audible anywhere in the batch.
    zeros = tf.zeros_like(harmonic_amplitudes)
    bounds = tf.stack([tf.where(below_throughout, harmonic_amplitudes, zeros),
                       tf.where(below_throughout, amps_next, zeros)], axis=-1)  # [B, F, K, 2]
    n_rendered = tf.maximum(tf.reduce_max(n_always), 1)
    sines = tf.sin(phase * harmonics[:n_rendered])  # [B, T, n_rendered]
    sines = tf.reshape(sines, [batch, n_frames, hop, n_rendered])
    partial = tf.matmul(sines, bounds[:, :, :n_rendered, :])  # [B, F, hop, 2]
    audio = partial[..., 0] * w_start + partial[..., 1] * w_end  # [B, F, hop]

    # 2) The few harmonics that cross Nyquist inside an interval (usually none or one): rendered
    #    sample by sample and silenced from the sample where they reach Nyquist.
    n_crossing = n_sometimes - n_always  # [B, F]
    slot = tf.range(tf.reduce_max(n_crossing))  # [C]
    index = tf.minimum(n_always[..., tf.newaxis] + slot, n_harmonics - 1)  # [B, F, C], 0-based
    crossing = slot < n_crossing[..., tf.newaxis]
    zeros = tf.zeros(tf.shape(index), tf.float32)
    a_start = tf.where(crossing, tf.gather(harmonic_amplitudes, index, batch_dims=2), zeros)
    a_end = tf.where(crossing, tf.gather(amps_next, index, batch_dims=2), zeros)
    k = tf.cast(index + 1, tf.float32)[:, :, tf.newaxis, :]  # [B, F, 1, C]
    hop_phase = tf.reshape(phase, [batch, n_frames, hop, 1])
    hop_f0 = tf.reshape(f0_audio, [batch, n_frames, hop, 1])
    crossing_sines = tf.where(hop_f0 * k < nyquist, tf.sin(hop_phase * k), 0.0)
    envelopes = (a_start[:, :, tf.newaxis, :] * w_start[:, tf.newaxis]
                 + a_end[:, :, tf.newaxis, :] * w_end[:, tf.newaxis])  # [B, F, hop, C]
    audio += tf.reduce_sum(crossing_sines * envelopes, axis=-1)
    return tf.reshape(audio, [batch, n_frames * hop]), final_phase


def harmonic_synthesis(frequencies: tf.Tensor, amplitudes: tf.Tensor,
                       harmonic_shifts: Optional[tf.Tensor] = None,
                       harmonic_distribution: Optional[tf.Tensor] = None,
                       n_samples: int = 64000, sample_rate: int = 16000,
                       amp_resample_method: Text = 'window',
                       use_angular_cumsum: bool = False) -> tf.Tensor:
    """Renders harmonic audio from frame-rate controls.

    Args:
      frequencies: [batch, n_frames, 1] fundamental frequency in Hz.
      amplitudes: [batch, n_frames, 1] overall amplitude (linear).
      harmonic_shifts: [batch, n_frames, n_harmonics] relative detuning of each harmonic
        (0 = exact multiple), or None.
      harmonic_distribution: [batch, n_frames, n_harmonics] weight of each harmonic, or None
        (one harmonic).
      n_samples: Output length in samples.
      sample_rate: Hz.
      amp_resample_method: How frame-rate amplitudes reach audio rate: 'window' (Hann
        cross-fade), 'linear', 'cubic' or 'nearest'.
      use_angular_cumsum: Use chunked float32 phase accumulation.

    Returns:
      [batch, n_samples] audio.
    """
    frequencies = tf_float32(frequencies)
    amplitudes = tf_float32(amplitudes)
    if harmonic_distribution is not None:
        harmonic_distribution = tf_float32(harmonic_distribution)
        n_harmonics = int(harmonic_distribution.shape[-1])
        harmonic_amplitudes = amplitudes * harmonic_distribution
    else:
        n_harmonics = int(harmonic_shifts.shape[-1]) if harmonic_shifts is not None else 1
        harmonic_amplitudes = amplitudes * tf.ones([1, 1, n_harmonics])

    n_frames = int(harmonic_amplitudes.shape[1])
    fast = (harmonic_shifts is None and amp_resample_method in ('window', 'linear')
            and n_frames < n_samples and n_samples % n_frames == 0)
    if fast:
        return _fast_harmonic_synthesis(frequencies, harmonic_amplitudes, n_samples,
                                        sample_rate, amp_resample_method, use_angular_cumsum)

    harmonic_frequencies = get_harmonic_frequencies(frequencies, n_harmonics)
    if harmonic_shifts is not None:
        harmonic_frequencies *= 1.0 + tf_float32(harmonic_shifts)
    frequency_envelopes = resampling.resample(harmonic_frequencies, n_samples)
    amplitude_envelopes = resampling.resample(harmonic_amplitudes, n_samples,
                                              method=amp_resample_method)
    return oscillator_bank(frequency_envelopes, amplitude_envelopes, sample_rate=sample_rate,
                           use_angular_cumsum=use_angular_cumsum)


def linear_lookup(phase: tf.Tensor, wavetables: tf.Tensor) -> tf.Tensor:
    """Reads wavetables at fractional positions with linear interpolation.

    Args:
      phase: [batch, n_samples, 1] position within one period, in [0, 1].
      wavetables: [batch, n_samples, n_wavetable] or [batch, n_wavetable] one period each; the
        last sample is treated as the wrap-around point.

    Returns:
      [batch, n_samples] samples.
    """
    phase = tf_float32(phase)
    wavetables = tf_float32(wavetables)
    if len(wavetables.shape) == 2:
        wavetables = wavetables[:, tf.newaxis, :]
    n_wavetable = int(wavetables.shape[-1])
    # Close the period so position 1.0 equals position 0.0.
    table = tf.concat([wavetables, wavetables[..., :1]], axis=-1)
    position = tf.clip_by_value(phase[..., 0], 0.0, 1.0) * float(n_wavetable)
    index = tf.minimum(tf.cast(tf.floor(position), tf.int32), n_wavetable - 1)
    frac = position - tf.cast(index, tf.float32)
    if wavetables.shape[1] == 1:
        table = tf.broadcast_to(table, [tf.shape(phase)[0], tf.shape(phase)[1], n_wavetable + 1])
    lower = tf.gather(table, index[..., tf.newaxis], batch_dims=2)[..., 0]
    upper = tf.gather(table, index[..., tf.newaxis] + 1, batch_dims=2)[..., 0]
    return lower + frac * (upper - lower)


def harmonic_distribution_to_wavetable(harmonic_distribution, n_wavetable=2048):
    """One period of the waveform with the given harmonic amplitudes (sine phase).

    Args:
      harmonic_distribution: [batch, time, n_harmonics] or [batch, n_harmonics] amplitudes.
      n_wavetable: Samples per period.

    Returns:
      [..., n_wavetable] wavetables.
    """
    harmonic_distribution = tf_float32(harmonic_distribution)
    n_harmonics = int(harmonic_distribution.shape[-1])
    if 2 * (n_harmonics + 1) > n_wavetable + 2:
        raise ValueError(f'{n_harmonics} harmonics do not fit in a wavetable of {n_wavetable}.')
    # Sine k has spectrum -i * n/2 at bin k: build the half spectrum and invert.
    zeros = tf.zeros_like(harmonic_distribution[..., :1])
    n_pad = n_wavetable // 2 + 1 - n_harmonics - 1
    imag = tf.concat([zeros, -harmonic_distribution * (n_wavetable / 2.0),
                      tf.zeros_like(harmonic_distribution[..., :1]) * tf.zeros([n_pad])], axis=-1)
    spectrum = tf.complex(tf.zeros_like(imag), imag)
    return tf.signal.irfft(spectrum, fft_length=[n_wavetable])


def wavetable_synthesis(frequencies: tf.Tensor, amplitudes: tf.Tensor, wavetables: tf.Tensor,
                        n_samples: int = 64000, sample_rate: int = 16000) -> tf.Tensor:
    """Renders audio by reading (time-varying) wavetables at the given pitch.

    Args:
      frequencies: [batch, n_frames, 1] Hz.
      amplitudes: [batch, n_frames, 1] linear amplitude.
      wavetables: [batch, n_frames, n_wavetable] or [batch, n_wavetable] one period each.
      n_samples: Output length.
      sample_rate: Hz.

    Returns:
      [batch, n_samples] audio.
    """
    wavetables = tf_float32(wavetables)
    if len(wavetables.shape) == 3 and wavetables.shape[1] > 1:
        wavetables = resampling.resample(wavetables, n_samples)
    frequency_envelope = resampling.resample(frequencies, n_samples)  # [B, T, 1]
    amplitude_envelope = resampling.resample(amplitudes, n_samples, method='window')[..., 0]
    phase_velocity = frequency_envelope / float(sample_rate)  # cycles per sample
    phase = tf.cast(tf.math.floormod(tf.cumsum(tf.cast(phase_velocity, tf.float64), axis=1),
                                     1.0), tf.float32)
    return amplitude_envelope * linear_lookup(phase, wavetables)


def sinusoidal_to_harmonic(sin_amps, sin_freqs, f0_hz, harmonic_width=0.1, n_harmonics=100,
                           sample_rate=16000, normalize=False):
    """Projects free sinusoids onto the harmonic series of `f0_hz`.

    Sinusoid j contributes to harmonic k with weight exp(-(|f_j - k * f0| / f0 / width)^2), a
    Gaussian in the distance from the harmonic measured in multiples of f0.

    Args:
      sin_amps: [batch, time, n_sinusoids] linear amplitudes.
      sin_freqs: [batch, time, n_sinusoids] Hz.
      f0_hz: [batch, time, 1] Hz.
      harmonic_width: Width of the weighting, in multiples of f0.
      n_harmonics: Number of harmonics.
      sample_rate: Hz (harmonics at or above Nyquist get no amplitude).
      normalize: Cap each harmonic's total weight over the sinusoids at 1 (weights summing to
        more are divided by their sum), so max(harmonic amplitude) <= max(sinusoid amplitude).

    Returns:
      (harm_amp [batch, time, 1], harm_dist [batch, time, n_harmonics]): the total amplitude
      and the distribution over harmonics (summing to 1 where harm_amp > 0).
    """
    sin_amps = tf_float32(sin_amps)
    sin_freqs = tf_float32(sin_freqs)
    f0_hz = tf_float32(f0_hz)
    harmonic_freqs = get_harmonic_frequencies(f0_hz, n_harmonics)  # [B, T, H]
    distance = safe_divide(sin_freqs[..., tf.newaxis, :] - harmonic_freqs[..., tf.newaxis],
                           f0_hz[..., tf.newaxis])  # [B, T, H, S], in multiples of f0
    weights = tf.exp(-(tf.abs(distance) / harmonic_width) ** 2)
    if normalize:
        total = tf.reduce_sum(weights, axis=-1, keepdims=True)
        weights = tf.where(total > 1.0, safe_divide(weights, total), weights)
    harm_amps = tf.reduce_sum(weights * sin_amps[..., tf.newaxis, :], axis=-1)  # [B, T, H]
    harm_amps = remove_above_nyquist(harmonic_freqs, harm_amps, sample_rate)
    harm_amp = tf.reduce_sum(harm_amps, axis=-1, keepdims=True)
    return harm_amp, safe_divide(harm_amps, harm_amp)


def harmonic_to_sinusoidal(harm_amp, harm_dist, f0_hz, sample_rate=16000):
    """Harmonic controls to the equivalent sinusoid amplitudes and frequencies.

    Harmonics at or above Nyquist are dropped and the distribution is renormalised over the
    others, as a harmonic synthesizer with `normalize_below_nyquist` renders them.

    Args:
      harm_amp: [batch, time, 1] overall amplitude (or a scalar).
      harm_dist: [batch, time, n_harmonics] distribution.
      f0_hz: [batch, time, 1] Hz.
      sample_rate: Hz.

    Returns:
      (sin_amps, sin_freqs), each [batch, time, n_harmonics]; amplitudes above Nyquist are 0.
    """
    harm_dist = tf_float32(harm_dist)
    n_harmonics = int(harm_dist.shape[-1])
    sin_freqs = get_harmonic_frequencies(f0_hz, n_harmonics)
    harm_dist = normalize_harmonics(harm_dist, f0_hz, sample_rate)
    return tf_float32(harm_amp) * harm_dist, sin_freqs
