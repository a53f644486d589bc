"""Synthesizers render the pitches and spectra their controls ask for."""

import numpy as np
import pytest
import tensorflow as tf

from ddsp_core import core, synths

SR = 16000
N = 16000  # 1 s: 1 Hz FFT bins
F = 100  # frames (hop 160)


def spectrum(audio):
    """Magnitude spectrum (Hann-windowed) of a 1-D signal; bin k is k * SR / len Hz."""
    audio = np.asarray(audio, dtype=np.float64)
    return np.abs(np.fft.rfft(audio * np.hanning(len(audio))))


def bin_of(hz, n=N):
    return int(round(hz * n / SR))


def band_energy(spec, lo_hz, hi_hz, n=N):
    return float(np.sum(spec[bin_of(lo_hz, n):bin_of(hi_hz, n)] ** 2))


def constant(value, channels=1, batch=1, frames=F):
    return tf.constant(np.full([batch, frames, channels], value, dtype=np.float32))


def test_harmonic_peaks_at_f0_and_integer_multiples():
    synth = synths.Harmonic(n_samples=N, sample_rate=SR, scale_fn=None)
    dist = np.array([1.0, 0.5, 0.25], dtype=np.float32)
    audio = synth(constant(1.0), tf.constant(np.tile(dist, [1, F, 1])), constant(440.0))
    assert audio.shape == (1, N)
    spec = spectrum(audio[0])
    assert abs(int(np.argmax(spec)) - bin_of(440)) <= 1
    peaks = [spec[bin_of(440 * k) - 2:bin_of(440 * k) + 3].max() for k in (1, 2, 3)]
    # Relative harmonic amplitudes follow the (normalised) distribution.
    np.testing.assert_allclose(np.array(peaks) / peaks[0], dist / dist[0], rtol=0.05)
    # Nothing between the harmonics.
    between = spec[bin_of(600):bin_of(800)].max()
    assert between < 1e-3 * peaks[0]


def test_harmonic_removes_harmonics_above_nyquist():
    synth = synths.Harmonic(n_samples=N, sample_rate=SR, scale_fn=None)
    controls = synth.get_controls(constant(1.0), constant(1.0, channels=10), constant(3000.0))
    dist = controls['harmonic_distribution'].numpy()[0, 0]
    # 3000 and 6000 Hz are below 8 kHz; 9000 Hz and up are removed, the rest sums to one.
    np.testing.assert_allclose(dist, [0.5, 0.5] + [0.0] * 8, atol=1e-6)
    audio = synth(constant(1.0), constant(1.0, channels=10), constant(3000.0))
    spec = spectrum(audio[0])
    total = float(np.sum(spec ** 2))
    partials = band_energy(spec, 2990, 3011) + band_energy(spec, 5990, 6011)
    # No aliases (9 kHz -> 7 kHz, 12 kHz -> 4 kHz, 15 kHz -> 1 kHz, ...): all energy is in the
    # two audible harmonics.
    assert partials / total > 0.999
    for alias_hz in (1000, 2000, 4000, 5000, 7000):
        assert band_energy(spec, alias_hz - 10, alias_hz + 11) < 1e-6 * total


def test_harmonic_without_nyquist_normalisation_keeps_all_harmonics_in_the_sum():
    synth = synths.Harmonic(n_samples=N, scale_fn=None, normalize_below_nyquist=False)
    controls = synth.get_controls(constant(1.0), constant(1.0, channels=10), constant(3000.0))
    np.testing.assert_allclose(controls['harmonic_distribution'].numpy()[0, 0], [0.1] * 10,
                               atol=1e-6)


def test_harmonic_default_scale_fn_is_exp_sigmoid():
    synth = synths.Harmonic(n_samples=N)
    raw_amps = tf.random.normal([2, F, 1])
    outputs = synth(raw_amps, tf.random.normal([2, F, 4]), constant(220.0, batch=2),
                    return_outputs_dict=True)
    controls = outputs['controls']
    np.testing.assert_allclose(controls['amplitudes'], core.exp_sigmoid(raw_amps), rtol=1e-6)
    np.testing.assert_allclose(np.sum(controls['harmonic_distribution'], axis=-1), 1.0,
                               rtol=1e-5)
    assert outputs['signal'].shape == (2, N)


def test_filtered_noise_follows_a_lowpass_magnitude():
    synth = synths.FilteredNoise(n_samples=N, scale_fn=None, initial_bias=0.0)
    mags = np.zeros([1, F, 65], dtype=np.float32)  # 125 Hz per band
    mags[..., :17] = 1.0  # pass 0..2000 Hz
    audio = synth(tf.constant(mags))
    assert audio.shape == (1, N)
    spec = spectrum(audio[0])
    below = band_energy(spec, 50, 1800) / (1800 - 50)
    above = band_energy(spec, 3000, 7900) / (7900 - 3000)
    assert below > 1000 * above


def test_filtered_noise_loudness_follows_a_ramp():
    synth = synths.FilteredNoise(n_samples=N, scale_fn=None, initial_bias=0.0)
    ramp = np.linspace(0.0, 1.0, F, dtype=np.float32)
    mags = np.tile(ramp[None, :, None], [1, 1, 33])
    audio = synth(tf.constant(mags)).numpy()[0]
    frame_rms = np.sqrt(np.mean(audio.reshape(F, -1) ** 2, axis=1))
    assert np.corrcoef(frame_rms, ramp)[0, 1] > 0.95
    assert frame_rms[-10:].mean() > 5 * frame_rms[:10].mean()


def test_filtered_noise_default_controls_add_bias_then_scale():
    synth = synths.FilteredNoise(n_samples=N)
    raw = tf.random.normal([2, F, 8])
    controls = synth.get_controls(raw)
    np.testing.assert_allclose(controls['magnitudes'], core.exp_sigmoid(raw - 5.0), rtol=1e-6)


def test_wavetable_with_a_sine_table_peaks_at_f0():
    synth = synths.Wavetable(n_samples=N, sample_rate=SR, scale_fn=None)
    table = np.sin(2 * np.pi * np.arange(2048) / 2048).astype(np.float32)[None, :]
    audio = synth(constant(1.0), tf.constant(table), constant(440.0))
    assert audio.shape == (1, N)
    spec = spectrum(audio[0])
    assert abs(int(np.argmax(spec)) - bin_of(440)) <= 1
    assert spec[bin_of(880) - 2:bin_of(880) + 3].max() < 1e-3 * spec.max()
    np.testing.assert_allclose(np.max(np.abs(audio)), 1.0, atol=0.02)


def test_sinusoidal_renders_the_given_frequencies():
    synth = synths.Sinusoidal(n_samples=N, sample_rate=SR, amp_scale_fn=None,
                              freq_scale_fn=None)
    freqs = np.tile(np.array([300.0, 1200.0, 9000.0], np.float32), [1, F, 1])
    amps = np.tile(np.array([1.0, 0.5, 1.0], np.float32), [1, F, 1])
    outputs = synth(tf.constant(amps), tf.constant(freqs), return_outputs_dict=True)
    # The 9 kHz sinusoid is above Nyquist and silenced.
    np.testing.assert_allclose(outputs['controls']['amplitudes'].numpy()[0, 0], [1.0, 0.5, 0.0])
    spec = spectrum(outputs['signal'][0])
    assert abs(int(np.argmax(spec)) - bin_of(300)) <= 1
    peak_1200 = spec[bin_of(1200) - 2:bin_of(1200) + 3].max()
    np.testing.assert_allclose(peak_1200 / spec.max(), 0.5, rtol=0.05)
    total = float(np.sum(spec ** 2))
    partials = band_energy(spec, 290, 311) + band_energy(spec, 1190, 1211)
    assert partials / total > 0.999  # no 7 kHz alias of the 9 kHz sinusoid


def test_sinusoidal_default_frequency_scaling_maps_to_hz():
    synth = synths.Sinusoidal(n_samples=N)
    controls = synth.get_controls(tf.zeros([1, F, 2]), tf.zeros([1, F, 2]))
    # frequencies_sigmoid(0) is the middle of [0, 8000] Hz.
    np.testing.assert_allclose(controls['frequencies'], 4000.0, rtol=1e-5)


def test_sinusoidal_takes_what_its_frequency_scale_fn_takes():
    depth = 4

    def freq_scale_fn(x):
        return core.frequencies_sigmoid(x, depth=depth, hz_min=0.0, hz_max=8000.0)

    synth = synths.Sinusoidal(n_samples=N, freq_scale_fn=freq_scale_fn)
    raw = tf.tile(tf.linspace(-50.0, 50.0, 6)[None, None, :, None], [2, F, 1, depth])
    controls = synth.get_controls(tf.zeros([2, F, 6]), raw)  # [batch, frames, 6, depth]
    freqs = controls['frequencies'].numpy()
    assert freqs.shape == (2, F, 6)
    assert np.all((freqs >= 0.0) & (freqs <= 8000.0))
    assert synth(tf.zeros([2, F, 6]), raw).shape == (2, N)


def test_tensor_to_audio_passes_samples_through():
    samples = tf.random.normal([2, 1000, 1])
    audio = synths.TensorToAudio()(samples)
    assert audio.shape == (2, 1000)
    np.testing.assert_array_equal(audio, samples[..., 0])
    with pytest.raises(ValueError, match='samples'):
        synths.TensorToAudio()(tf.zeros([2, 1000, 3]))


def test_bad_control_shape_names_the_argument():
    synth = synths.Harmonic(n_samples=N)
    with pytest.raises(ValueError, match='f0_hz'):
        synth(constant(1.0), constant(1.0, channels=3), tf.zeros([1, F, 1, 1]))


# ---- stateful, any-length synthesis (streaming) ----------------------------------------------
def _chunks(n, sizes):
    """Consecutive (start, end) blocks of n frames, of the given sizes cycled."""
    out, start, i = [], 0, 0
    while start < n:
        end = min(start + sizes[i % len(sizes)], n)
        out.append((start, end))
        start, i = end, i + 1
    return out


@pytest.mark.parametrize('method', ['window', 'linear'])
def test_harmonic_blocks_from_carried_phase_equal_the_one_shot_rendering(method):
    rng = np.random.default_rng(0)
    n, hop, sr = 30, 64, 8000
    f0 = np.linspace(100.0, 1500.0, n, dtype=np.float32)[None, :, None]  # crosses 4 kHz
    amps = rng.uniform(0.1, 1.0, (1, n, 1)).astype(np.float32)
    dist = rng.uniform(0.0, 1.0, (1, n, 8)).astype(np.float32)
    harmonic = synths.Harmonic(n * hop, sr, scale_fn=None, amp_resample_method=method)
    one_shot = harmonic.get_signal(amps, dist, f0).numpy()

    def rows(x, start, end):  # the block's frames and the next one (the last one held)
        return x[:, np.minimum(np.arange(start, end + 1), n - 1)]

    for sizes in ([n], [1], [7, 3], [22]):
        state, blocks = None, []
        for start, end in _chunks(n, sizes):
            audio, state = harmonic.get_signal_chunk(
                rows(amps, start, end), rows(dist, start, end), rows(f0, start, end), hop, state)
            blocks.append(audio.numpy())
        np.testing.assert_allclose(np.concatenate(blocks, 1), one_shot, atol=1e-5,
                                   err_msg=str(sizes))
    # A phase not carried shows: restarting the second block at phase 0 is a seam.
    _, after_first = harmonic.get_signal_chunk(rows(amps, 0, 7), rows(dist, 0, 7),
                                               rows(f0, 0, 7), hop)
    fresh, _ = harmonic.get_signal_chunk(rows(amps, 7, 14), rows(dist, 7, 14), rows(f0, 7, 14),
                                         hop)
    assert np.abs(fresh.numpy() - one_shot[:, 7 * hop:14 * hop]).max() > 0.1
    assert after_first['phase'].dtype == tf.float64


def test_noise_stream_blocks_read_the_one_shot_uniform_draw():
    seed = (3, 11)
    full = tf.random.stateless_uniform([1, 4096], seed=seed, minval=-1.0, maxval=1.0,
                                       alg='philox').numpy()
    stream = synths.NoiseStream(seed)
    for start in (0, 1, 64, 1003, 4000):
        np.testing.assert_array_equal(stream.block(start, 96).numpy(),
                                      full[:, start:start + 96])
    high = synths.NoiseStream.offset_counter(np.array([2**64 - 1, 5], np.uint64), 2)
    assert [int(v) for v in high] == [1, 6]  # carries into the high word


@pytest.mark.parametrize('window_size,n_bands', [(0, 17), (0, 129), (31, 65)])
def test_filtered_noise_blocks_with_carried_tails_equal_the_one_shot_filter(window_size, n_bands):
    rng = np.random.default_rng(1)
    n, hop = 24, 64
    mags = rng.uniform(0.0, 1.0, (2, n, n_bands)).astype(np.float32)
    noise = rng.uniform(-1.0, 1.0, (2, n * hop)).astype(np.float32)
    proc = synths.FilteredNoise(n * hop, window_size=window_size, scale_fn=None)
    one_shot = core.frequency_filter(noise, mags, window_size=window_size).numpy()
    delay = proc.latency(n_bands)
    assert delay == core.frequency_impulse_response(mags, window_size).shape[-1] // 2
    for sizes in ([n], [1], [5, 2]):
        state, blocks = None, []
        for start, end in _chunks(n, sizes):
            audio, state = proc.get_signal_chunk(mags[:, start:end],
                                                 noise[:, start * hop:end * hop], hop, state)
            blocks.append(audio.numpy())
        blocks.append(state['tail'].numpy()[:, :delay])
        out = np.concatenate(blocks, 1)[:, delay:]
        np.testing.assert_allclose(out, one_shot, atol=1e-5, err_msg=str(sizes))


def test_block_synthesis_runs_for_a_length_known_only_at_call_time():
    """The stateful forms trace once for any number of frames (a SavedModel's signature)."""
    from ddsp_core import effects

    hop, sr = 64, 8000
    harmonic = synths.Harmonic(hop, sr, scale_fn=None)
    noise = synths.FilteredNoise(hop, window_size=0, scale_fn=None)
    reverb = effects.Reverb(trainable=False)
    ir = tf.constant(np.linspace(0.5, 0.0, 100, dtype=np.float32)[None])

    @tf.function(input_signature=[tf.TensorSpec([None, None, 1]), tf.TensorSpec([None, None, 4]),
                                  tf.TensorSpec([None, None, 9]), tf.TensorSpec([None, None])])
    def render(f0, dist, mags, white):
        audio, _ = harmonic.get_signal_chunk(tf.ones_like(f0), dist, f0, hop)
        filtered, _ = noise.get_signal_chunk(mags, white, hop)
        wet, _ = reverb.get_signal_chunk(audio + filtered[:, :tf.shape(audio)[1]], ir)
        return audio, filtered, wet

    rng = np.random.default_rng(3)
    for n in (3, 11):
        f0 = np.full((2, n + 1, 1), 440.0, np.float32)
        dist = rng.uniform(0, 1, (2, n + 1, 4)).astype(np.float32)
        mags = rng.uniform(0, 1, (2, n, 9)).astype(np.float32)
        white = rng.uniform(-1, 1, (2, n * hop)).astype(np.float32)
        got = render(f0, dist, mags, white)
        audio, _ = harmonic.get_signal_chunk(tf.ones_like(f0), dist, f0, hop)
        filtered, _ = noise.get_signal_chunk(mags, white, hop)
        wet, _ = reverb.get_signal_chunk(audio + filtered, ir)
        for mine, eager in zip(got, (audio, filtered, wet), strict=True):
            assert mine.shape == (2, n * hop)
            np.testing.assert_allclose(mine, eager, atol=1e-6)
    assert render.experimental_get_tracing_count() == 1


def test_harmonic_frames_refuses_a_carried_phase_it_would_drop():
    from ddsp_core.dsp import oscillators

    f0 = tf.fill([1, 3, 1], 440.0)
    amps = tf.fill([1, 3, 2], 0.1)
    with pytest.raises(ValueError, match='initial_phase'):
        oscillators.harmonic_frames(f0, amps, 64, use_angular_cumsum=True,
                                    initial_phase=tf.zeros([1, 1], tf.float64))
