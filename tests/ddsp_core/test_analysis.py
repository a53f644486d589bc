"""ddsp_core.analysis: the quality measures on signals with known answers."""

import numpy as np
import pytest

from ddsp_core import analysis

SR = 16000


@pytest.mark.parametrize('rt60', [0.3, 0.8, 1.5])
def test_rt60_from_ir_recovers_the_known_decay_of_a_noise_ir(rt60):
    for seed in range(3):
        ir = analysis.exponential_decay_ir(rt60, SR, seed=seed)
        assert analysis.rt60_from_ir(ir, SR) == pytest.approx(rt60, rel=0.05)


def test_schroeder_curve_of_a_pure_exponential_is_a_straight_line():
    rt60 = 0.5
    t = np.arange(SR) / SR
    ir = np.exp(-analysis.LN_1000 * t / rt60)  # energy falls 60 dB per rt60
    edc = analysis.schroeder_decay_db(ir)
    assert edc[0] == 0.0 and np.all(np.diff(edc) <= 0)
    # backward integration of an exponential is the same exponential (away from the end)
    assert edc[int(0.25 * SR)] == pytest.approx(-30.0, abs=0.05)
    assert analysis.rt60_from_ir(ir, SR) == pytest.approx(rt60, rel=1e-3)
    assert analysis.rt60_from_ir(ir, SR, fit_db=(-10, -40)) == pytest.approx(rt60, rel=1e-3)


def test_estimate_ir_recovers_a_room_from_a_signal_and_its_reverberation():
    rng = np.random.default_rng(0)
    dry = rng.standard_normal(SR) * (np.arange(SR) < SR // 2)  # a burst, then silence
    ir = analysis.exponential_decay_ir(0.3, SR, seed=4)
    wet = np.convolve(dry, ir)[:SR]  # cut to the dry length, as a reverb's output is
    est = analysis.estimate_ir(dry, wet, len(ir))
    assert np.corrcoef(est, ir)[0, 1] > 0.99
    assert analysis.rt60_from_ir(est, SR) == pytest.approx(0.3, rel=0.05)
    # a harmonic tone plays only some bands: the estimate is band-limited (few bands, so a
    # noisier decay), its decay rate about the same
    t = np.arange(SR) / SR
    tone = sum(np.sin(2 * np.pi * 250 * k * t) / k for k in range(1, 8)) * (t < 0.5)
    tone_est = analysis.estimate_ir(tone, np.convolve(tone, ir)[:SR], len(ir))
    assert analysis.rt60_from_ir(tone_est, SR) == pytest.approx(0.3, rel=0.25)
    with pytest.raises(ValueError, match='all zeros'):
        analysis.estimate_ir(np.zeros(10), np.zeros(10), 5)


def test_exponential_decay_ir_shape_and_errors():
    ir = analysis.exponential_decay_ir(1.0, SR)
    assert ir.dtype == np.float32 and len(ir) == int(1.5 * SR) and ir[0] == 0.0
    assert np.sum(ir.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match='rt60_s'):
        analysis.exponential_decay_ir(0.0, SR)
    with pytest.raises(ValueError, match='all zeros'):
        analysis.rt60_from_ir(np.zeros(100), SR)
    with pytest.raises(ValueError, match='does not decay'):
        analysis.rt60_from_ir(np.ones(100), SR)
    with pytest.raises(ValueError, match='fit_db'):
        analysis.rt60_from_ir(ir, SR, fit_db=(-25, -5))


def _notes_with_decays(rt60, offsets, onsets, seconds):
    """A 440 Hz tone, steady in each [onset, offset), then decaying 60 dB per rt60 until the
    next onset."""
    t = np.arange(int(seconds * SR)) / SR
    env = np.zeros_like(t)
    for on, off in zip(onsets, offsets, strict=False):  # onsets may have one more
        nxt = min([o for o in onsets if o > on] + [seconds])
        env[(t >= on) & (t < off)] = 1.0
        after = (t >= off) & (t < nxt)
        env[after] = np.exp(-analysis.LN_1000 * (t[after] - off) / rt60)
    return 0.5 * env * np.sin(2 * np.pi * 440 * t)


def test_rt60_from_offsets_measures_the_decay_after_each_note():
    onsets, offsets = [0.0, 1.5, 3.0], [0.5, 2.0, 3.1]
    audio = _notes_with_decays(0.4, offsets, onsets + [3.2], 4.0)
    est = analysis.rt60_from_offsets(audio, SR, offsets, onsets + [3.2])
    assert est[:2] == pytest.approx([0.4, 0.4], rel=0.05)
    assert np.isnan(est[2])  # the next note comes 100 ms later: not 25 dB down yet
    slower = analysis.rt60_from_offsets(_notes_with_decays(1.0, offsets, onsets, 4.0), SR,
                                        offsets[:2], onsets)
    assert slower == pytest.approx([1.0, 1.0], rel=0.05)


def test_tail_energy_of_a_known_decay():
    tau, window, off = 0.1, 0.3, 0.5
    t = np.arange(SR) / SR
    audio = np.where(t < off, 1.0, np.exp(-(t - off) / tau)) * np.sin(2 * np.pi * 440 * t)
    steady = np.sin(2 * np.pi * 440 * t)  # reference of power 1/2
    # energy of A^2/2 exp(-2t/tau) over the window, over A^2/2 * window
    expected = 10 * np.log10(tau / (2 * window) * (1 - np.exp(-2 * window / tau)))
    got = analysis.tail_energy_db(audio, SR, [off], window, reference=steady)
    assert got == pytest.approx(expected, abs=0.1)
    # the window stops at the next onset: only the first 50 ms, where the decay is loudest
    short = analysis.tail_energy_db(audio, SR, [off], window, onsets_s=[0.0, 0.55],
                                    reference=steady)
    expected_short = 10 * np.log10(tau / (2 * 0.05) * (1 - np.exp(-2 * 0.05 / tau)))
    assert short == pytest.approx(expected_short, abs=0.1)
    # a note that stops dead has no tail; reverberation adds one
    dry = np.where(t < off, 1.0, 0.0) * steady
    wet = dry + 0.3 * np.convolve(dry, analysis.exponential_decay_ir(0.3, SR))[:len(dry)]
    assert analysis.tail_energy_db(dry, SR, [off], reference=dry) < -150
    assert analysis.tail_energy_db(wet, SR, [off], reference=dry) > -30
    with pytest.raises(ValueError, match='no note offset'):
        analysis.tail_energy_db(audio, SR, [5.0])
    with pytest.raises(ValueError, match='silent'):
        analysis.tail_energy_db(audio, SR, [off], reference=np.zeros(10))


def test_spectral_centroid_of_known_spectra():
    assert analysis.harmonic_centroid([1.0, 1.0], 200.0) == pytest.approx(300.0)
    assert analysis.harmonic_centroid([1.0, 0.0, 0.0]) == pytest.approx(1.0)
    # 1/k amplitudes over 4 harmonics: sum(1) / sum(1/k) = 4 / (25/12)
    dist = np.stack([1.0 / np.arange(1, 5), [0, 0, 0, 1.0]])
    assert analysis.harmonic_centroid(dist, [100.0, 50.0]) == pytest.approx([192.0, 200.0])
    assert np.isnan(analysis.spectral_centroid([0.0, 0.0], [1.0, 2.0]))
    with pytest.raises(ValueError, match='>= 0'):
        analysis.spectral_centroid([-1.0, 1.0], [1.0, 2.0])


def test_audio_spectral_centroid_of_tones():
    t = np.arange(SR) / SR
    one = np.sin(2 * np.pi * 1000 * t)
    two = np.sin(2 * np.pi * 500 * t) + np.sin(2 * np.pi * 2500 * t)
    assert np.nanmedian(analysis.audio_spectral_centroid(one, SR)) == pytest.approx(1000, rel=0.01)
    assert np.nanmedian(analysis.audio_spectral_centroid(two, SR)) == pytest.approx(1500, rel=0.01)
    assert np.isnan(analysis.audio_spectral_centroid(np.zeros(4096), SR)).all()


def test_note_pitch_accuracy_per_note():
    rate = 100
    f0 = np.zeros(300)
    true = [220.0, 330.0, 440.0]
    f0[0:100] = 220.0
    f0[100:200] = 330.0 * 2 ** (30 / 1200)  # 30 cents sharp: within 50 cents
    f0[200:250] = 440.0 * 2 ** (-1.0 / 12)  # a semitone flat
    result = analysis.note_pitch_accuracy(f0, rate, true, [0.0, 1.0, 2.0], [0.99, 1.99, 2.99])
    assert result['accuracy'][:2] == pytest.approx([1.0, 1.0])
    assert result['median_cents'] == pytest.approx([0.0, 30.0, -100.0])
    # the last note is a semitone flat for its first half, then unvoiced (misses)
    assert result['accuracy'][2] == 0.0
    assert result['frames'][0] == 95  # 0.05 s of attack skipped at 100 frames/s
    partly = f0.copy()
    partly[150:200] = 0.0  # the second note unvoiced in its second half
    half = analysis.note_pitch_accuracy(partly, rate, true, [0.0, 1.0, 2.0], [0.99, 1.99, 2.99])
    assert half['accuracy'][1] == pytest.approx(45 / 95)  # frames 105-149 of 105-199


def _partials(f0, amps, seconds, rate=16000, phase=0.0):
    t = np.arange(int(seconds * rate)) / rate
    return sum(a * np.sin(2 * np.pi * f0 * k * t + phase * k)
               for k, a in enumerate(amps, 1) if f0 * k < rate / 2)


def test_note_spectral_pitch_reads_pitches_above_crepes_top_bin():
    rate = 16000
    # MIDI 97 (2,217.5 Hz, above CREPE's 1,975.5 Hz), a G3 whose 2nd partial is the strongest,
    # a rest, then a note whose fundamental is 40 dB under its 2nd harmonic (read an octave up)
    audio = np.concatenate([_partials(2217.46, [0.3, 0.5, 0.2], 1.0),
                            _partials(196.0, [0.1, 0.3, 0.2, 0.1], 1.0, phase=0.3),
                            np.zeros(rate),
                            _partials(1000.0, [0.005, 0.5], 1.0)])
    pitch = analysis.note_spectral_pitch(audio, rate, [0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    cents = 1200 * np.log2(pitch[[0, 1, 3]] / np.array([2217.46, 196.0, 1000.0]))
    assert abs(cents[0]) < 2 and abs(cents[1]) < 2
    assert np.isnan(pitch[2])  # the rest: nothing to read
    assert cents[2] == pytest.approx(1200, abs=2)  # the octave error it documents
    # a lower threshold reaches the weak fundamental
    assert analysis.note_spectral_pitch(audio, rate, [3.0], [4.0], threshold_db=-50)[0] \
        == pytest.approx(1000.0, rel=1e-3)
    assert np.isnan(analysis.note_spectral_pitch(audio, rate, [0.0], [0.051])[0])  # too short
    with pytest.raises(ValueError, match='one value per note'):
        analysis.note_spectral_pitch(audio, rate, [0.0], [])
    with pytest.raises(ValueError, match='threshold_db'):
        analysis.note_spectral_pitch(audio, rate, [0.0], [1.0], threshold_db=3)


def test_note_spectral_pitch_passes_over_peaks_below_the_fundamental_that_are_not_in_its_series():
    """A model's filtered noise (or any spur) below a high note, within 30 dB of its strongest
    partial, is not its pitch: the pitch is the bottom of the strongest partial's series."""
    rate, f0 = 16000, 2217.46
    rng = np.random.default_rng(0)
    tone = _partials(f0, [0.3, 0.5, 0.2], 1.0)
    spur = tone + 0.03 * _partials(2092.0, [1.0], 1.0)  # 24 dB under the strongest partial
    spectrum = np.fft.rfft(rng.standard_normal(rate))
    freqs = np.fft.rfftfreq(rate, 1 / rate)
    band = np.fft.irfft(spectrum * ((freqs > 1900) & (freqs < 2150)), rate)
    noisy = tone + 0.1 * band / np.sqrt(np.mean(band ** 2))  # noise 1.9-2.15 kHz, under f0
    pitch = analysis.note_spectral_pitch(np.concatenate([spur, noisy]), rate, [0.0, 1.0],
                                         [1.0, 2.0])
    assert np.abs(1200 * np.log2(pitch / f0)).max() < 2, pitch
    # Read without the series check (any peak in the threshold), both would be a semitone low.
    loose = analysis.note_spectral_pitch(np.concatenate([spur, noisy]), rate, [0.0, 1.0],
                                         [1.0, 2.0], harmonic_cents=1200)
    assert (loose < f0 * 2 ** (-50 / 1200)).all(), loose
    with pytest.raises(ValueError, match='harmonic_cents'):
        analysis.note_spectral_pitch(tone, rate, [0.0], [1.0], harmonic_cents=0)


def test_note_levels_of_a_full_scale_sine_a_quiet_note_and_a_silent_one():
    rate = 16000
    audio = np.concatenate([_partials(440.0, [1.0], 1.0), 0.01 * _partials(440.0, [1.0], 1.0),
                            np.zeros(rate)])
    levels = analysis.note_levels_db(audio, rate, [0.0, 1.0, 2.0, 5.0], [1.0, 2.0, 3.0, 6.0])
    assert levels[:2] == pytest.approx([-3.01, -43.01], abs=0.01)
    assert levels[2] == -200.0 and np.isnan(levels[3])  # silent; past the end
