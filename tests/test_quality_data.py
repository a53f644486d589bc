"""benchmarks/render_quality_data.py: FluidSynth renders whose truth.json matches the audio
(needs fluidsynth + fluid-soundfont-gm: tools/install_fluidsynth.sh, run by `make test`)."""

import json

import numpy as np
import pytest
import soundfile as sf

from benchmarks import render_quality_data as rqd
from ddsp_core import analysis

ARGS = ['--instruments', 'violin', 'flute', '--train_minutes', '0.05', '--eval_minutes', '0.05',
        '--range_minutes', '0.1', '--clip_secs', '3', '--range', '67', '79',
        '--scale_note_secs', '0.25', '--rt60', '0.6', '--drr_db', '-3', '--seed', '7']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp('quality') / 'data'
    assert rqd.main(['--out', str(out), *ARGS]) == 0
    return out, json.loads((out / 'truth.json').read_text())


def _read(out, name):
    audio, rate = sf.read(str(out / name), dtype='float64')
    assert rate == 16000 and audio.ndim == 1
    return audio


def test_sets_and_truth(data):
    out, truth = data
    files = truth['files']
    by_set = {}
    for name, info in files.items():
        assert (out / name).is_file() and (out / info['midi_file']).is_file()
        by_set.setdefault((info['set'], info['split']), []).append(name)
    assert sorted(by_set) == sorted([
        ('violin', 'train'), ('violin', 'eval'), ('flute', 'train'), ('flute', 'eval'),
        ('dereverb', 'train'), ('dereverb', 'eval'), ('extrapolation', 'train'),
        ('extrapolation', 'scale')])
    assert len(by_set[('extrapolation', 'train')]) == 2  # 6 s in 3 s clips
    # evaluation melodies are not the training ones
    train = [n['midi'] for n in files['violin/train/violin_train_000.wav']['notes']]
    evals = [n['midi'] for n in files['violin/eval/violin_eval_000.wav']['notes']]
    assert train != evals
    # the range-limited set stays in its range; the scale goes an octave beyond both ends
    for name in by_set[('extrapolation', 'train')]:
        assert all(67 <= n['midi'] <= 79 for n in files[name]['notes'])
    scale = files['extrapolation/scale/chromatic_scale.wav']['notes']
    assert [n['midi'] for n in scale] == list(range(55, 92))
    assert scale[0]['f0_hz'] == pytest.approx(195.998, abs=1e-3)  # G3
    assert truth['ir']['rt60_s'] == 0.6
    assert truth['ir']['rt60_estimate_s'] == pytest.approx(0.6, rel=0.05)


def test_truth_onsets_and_pitches_are_in_the_audio(data):
    out, truth = data
    notes = truth['files']['extrapolation/scale/chromatic_scale.wav']['notes']
    audio = _read(out, 'extrapolation/scale/chromatic_scale.wav')
    level = analysis.level_db(audio, 16000, 0.005)
    rise = np.diff(level)  # rise[i]: from frame i to frame i + 1
    for note in notes:
        # the steepest rise of the level within 100 ms of the truth onset is at the onset
        at = int(round(note['onset_s'] / 0.005))
        lo = max(0, at - 20)
        steepest = lo + int(np.argmax(rise[lo:at + 20]))
        assert abs(steepest + 1 - at) <= 5, (note, steepest)  # 25 ms: the attack
        seg = audio[int(note['onset_s'] * 16000) + 800:int(note['offset_s'] * 16000)]
        spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 8 * len(seg)))
        peak = np.argmax(spectrum) * 16000 / (8 * len(seg))
        harmonic = peak / note['f0_hz']  # the strongest partial is a harmonic of the truth
        assert round(harmonic) >= 1 and abs(harmonic - round(harmonic)) < 0.03 * harmonic, note


def test_wet_is_the_dry_render_through_the_known_room(data):
    out, truth = data
    ir = _read(out, truth['ir']['file'])
    name = 'dereverb/wet/eval/violin_eval_000_wet.wav'
    info = truth['files'][name]
    dry, wet = _read(out, info['dry_truth']), _read(out, name)
    assert info['notes'] == truth['files'][info['dry_truth']]['notes']
    # the first second exactly (a causal convolution: those samples need only the dry's first
    # second); the whole tail kept
    n = 16000
    expected = dry[:n] + np.convolve(dry[:n], ir * 10 ** (3 / 20))[:n]
    assert len(wet) == len(dry) + len(ir) - 1
    np.testing.assert_allclose(wet[:n], expected, atol=1e-5)
    offsets = [n['offset_s'] for n in info['notes']]
    onsets = [n['onset_s'] for n in info['notes']]
    assert (analysis.tail_energy_db(wet, 16000, offsets, 0.3, onsets, reference=dry)
            > analysis.tail_energy_db(dry, 16000, offsets, 0.3, onsets, reference=dry) + 3)


def test_same_seed_same_notes_and_bad_usage(data, tmp_path, capsys):
    out, truth = data
    a = rqd.random_melody(np.random.default_rng([7, 0]), 3, 55, 88)
    assert a == rqd.random_melody(np.random.default_rng([7, 0]), 3, 55, 88)
    assert rqd.main(['--out', str(tmp_path / 'x'), '--instruments', 'kazoo']) == 2
    assert '--instruments kazoo' in capsys.readouterr().err
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'keep.txt').write_text('x')
    assert rqd.main(['--out', str(tmp_path / 'mine'), *ARGS]) == 2
    assert 'not made by this script' in capsys.readouterr().err
    assert (tmp_path / 'mine' / 'keep.txt').exists()


def test_a_note_the_sound_font_does_not_play_is_flagged(tmp_path, capsys):
    # fluid-soundfont-gm's violin has no sample for MIDI 94: a scale up to it has one mute note
    out = tmp_path / 'data'
    args = ['--instruments', 'violin', '--train_minutes', '0.05', '--eval_minutes', '0.05',
            '--range_minutes', '0.05', '--clip_secs', '3', '--range', '70', '82',
            '--scale_note_secs', '0.25', '--seed', '3']
    assert rqd.main(['--out', str(out), *args]) == 0
    assert 'violin MIDI 94' in capsys.readouterr().err
    truth = json.loads((out / 'truth.json').read_text())
    name = 'extrapolation/scale/chromatic_scale.wav'
    assert [(s['file'], s['midi']) for s in truth['silent_notes']] == [(name, 94)]
    scale = truth['files'][name]['notes']
    assert [n['midi'] for n in scale] == list(range(58, 95))
    assert scale[-1]['level_db'] < rqd.SILENT_DB  # at most the release of the note before
    played = [n['level_db'] for f in truth['files'].values() for n in f['notes']
              if not (f['set'] == 'extrapolation' and n['midi'] == 94)]
    assert min(played) > rqd.SILENT_DB and max(played) < 0
    # the level is the audio's: the scale's first note measured again
    audio = _read(out, name)
    a, b = int(np.ceil(scale[0]['onset_s'] * 16000)), int(scale[0]['offset_s'] * 16000)
    assert scale[0]['level_db'] == pytest.approx(10 * np.log10(np.mean(audio[a:b] ** 2)),
                                                 abs=0.01)
