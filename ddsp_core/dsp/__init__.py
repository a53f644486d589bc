"""Cohesive DSP building blocks behind the reference-compatible `ddsp_core.core` façade: ``units``
(dB, MIDI, Hz and scaling functions), ``nested`` (flattened-key access to nested dicts),
``resampling`` (frame rate <-> audio rate), ``framing`` (the frame arithmetic of loudness and f0),
``filters`` (FFT convolution, frequency-sampled filters, variable delays) and ``oscillators``
(phase accumulation, sinusoid banks, harmonic and wavetable synthesis)."""
