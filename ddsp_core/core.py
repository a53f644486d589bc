"""Core DSP functions under the reference library's names (`ddsp.core`).

This module is a façade: the implementations live in cohesive modules under `ddsp_core.dsp`
(units, resampling, oscillators, filters, nested). Conventions: audio is float32
[batch, n_samples]; frame-rate controls are [batch, n_frames, channels]; frequencies in Hz.
"""

from ddsp_core.dsp.filters import (
    apply_window_to_impulse_response,
    crop_and_compensate_delay,
    fft_convolve,
    frequency_filter,
    frequency_impulse_response,
    get_fft_size,
    sinc,
    sinc_filter,
    sinc_impulse_response,
    variable_length_delay,
)
from ddsp_core.dsp.nested import nested_keys, nested_lookup
from ddsp_core.dsp.oscillators import (
    accumulate_phase,
    angular_cumsum,
    get_harmonic_frequencies,
    harmonic_distribution_to_wavetable,
    harmonic_oscillator_bank,
    harmonic_synthesis,
    harmonic_to_sinusoidal,
    linear_lookup,
    normalize_harmonics,
    oscillator_bank,
    remove_above_nyquist,
    sinusoidal_to_harmonic,
    wavetable_synthesis,
)
from ddsp_core.dsp.resampling import center_crop, resample, upsample_with_windows
from ddsp_core.dsp.units import (
    DB_RANGE,
    Number,
    amplitude_to_db,
    bark_to_hz,
    db_to_amplitude,
    db_to_power,
    diff,
    exp_sigmoid,
    frequencies_sigmoid,
    frequencies_softmax,
    gradient_reversal,
    hz_to_bark,
    hz_to_erb,
    hz_to_mel,
    hz_to_midi,
    hz_to_unit,
    log10,
    log_scale,
    logb,
    mel_to_hz,
    midi_to_hz,
    midi_to_unit,
    nan_to_num,
    pad_axis,
    power_to_db,
    safe_divide,
    safe_log,
    soft_limit,
    sym_exp_sigmoid,
    tf_float32,
    unit_to_hz,
    unit_to_midi,
)

__all__ = [
    'DB_RANGE', 'Number', 'accumulate_phase', 'amplitude_to_db', 'angular_cumsum',
    'apply_window_to_impulse_response', 'bark_to_hz', 'center_crop', 'crop_and_compensate_delay',
    'db_to_amplitude', 'db_to_power', 'diff', 'exp_sigmoid', 'fft_convolve',
    'frequencies_sigmoid', 'frequencies_softmax', 'frequency_filter',
    'frequency_impulse_response', 'get_fft_size', 'get_harmonic_frequencies',
    'gradient_reversal', 'harmonic_distribution_to_wavetable', 'harmonic_oscillator_bank',
    'harmonic_synthesis', 'harmonic_to_sinusoidal', 'hz_to_bark', 'hz_to_erb', 'hz_to_mel',
    'hz_to_midi', 'hz_to_unit', 'linear_lookup', 'log10', 'log_scale', 'logb', 'mel_to_hz',
    'midi_to_hz', 'midi_to_unit', 'nan_to_num', 'nested_keys', 'nested_lookup',
    'normalize_harmonics', 'oscillator_bank', 'pad_axis', 'power_to_db', 'remove_above_nyquist',
    'resample', 'safe_divide', 'safe_log', 'sinc', 'sinc_filter', 'sinc_impulse_response',
    'sinusoidal_to_harmonic', 'soft_limit', 'sym_exp_sigmoid', 'tf_float32', 'unit_to_hz',
    'unit_to_midi', 'upsample_with_windows', 'variable_length_delay', 'wavetable_synthesis',
]
