"""benchmarks/bench_extrapolation.py: the true-pitch input, the per-note measures (CREPE, or the
spectrum above CREPE's range; notes the input did not play) and a run on a trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from benchmarks import bench_extrapolation as be
from ddsp_core.f0 import CREPE_MAX_HZ
from tests.markers import gives
from tests.trainer.conftest import TINY_LAYOUT

RATE = 16000
#: (MIDI note, played): a scale around a 67-79 training range, two notes above CREPE's top bin
#: and one the "sound font" did not play.
SCALE = [(60, True), (64, True), (67, True), (72, True), (76, True), (79, True), (84, False),
         (88, True), (96, True), (97, True)]
NOTE_S, REST_S = 0.5, 0.25


def _hz(midi):
    return 440.0 * 2.0 ** ((midi - 69) / 12.0)


def _scale():
    """Harmonic tones (three partials) with rests, and truth.json-style notes."""
    t = np.arange(int(NOTE_S * RATE)) / RATE
    parts, notes, at = [], [], 0.0
    for midi, played in SCALE:
        f0 = _hz(midi)
        tone = sum(a * np.sin(2 * np.pi * k * f0 * t) for k, a in ((1, 0.3), (2, 0.15), (3, 0.08))
                   if k * f0 < RATE / 2)
        parts += [tone * np.hanning(len(t)) ** 0.1 if played else 0 * t,
                  np.zeros(int(REST_S * RATE))]
        notes.append({'midi': midi, 'f0_hz': f0, 'onset_s': at, 'offset_s': at + NOTE_S,
                      'velocity': 90})
        at += NOTE_S + REST_S
    return np.concatenate(parts).astype(np.float32), notes


def test_truth_f0_track_holds_each_pitch_to_the_next_onset():
    notes = [{'f0_hz': 200.0, 'onset_s': 0.1}, {'f0_hz': 300.0, 'onset_s': 0.5}]
    track = be.truth_f0_track(notes, 250, 250)
    assert track.dtype == np.float32 and track.shape == (250,)
    assert set(track[:125]) == {200.0} and set(track[125:]) == {300.0}
    with pytest.raises(ValueError, match='no notes'):
        be.truth_f0_track([], 10, 250)


def test_measure_notes_reads_pitch_by_crepe_below_and_by_spectrum_above_its_range():
    audio, notes = _scale()
    fr = 250
    n_frames = len(audio) * fr // RATE
    f0_track = be.truth_f0_track(notes, n_frames, fr) * 2 ** (20 / 1200)  # a tracker 20 c sharp
    f0_track[int(notes[3]['onset_s'] * fr):int(notes[3]['offset_s'] * fr)] /= 2  # an octave low
    silent = {notes[6]['onset_s']}
    rows = be.measure_notes(notes, audio, RATE, f0_track, np.zeros(n_frames),
                            np.ones(n_frames), fr, 67, 79, silent)
    assert [r['midi'] for r in rows] == [m for m, _ in SCALE]
    above = [r for r in rows if r['f0_hz'] > CREPE_MAX_HZ * 2 ** (-1 / 12)]
    assert [r['midi'] for r in above] == [96, 97]
    assert all(r['pitch_method'] == 'spectrum' and abs(r['median_cents']) < 5
               and r['pitch_accuracy'] == 1.0 for r in above)  # the audio's own pitch
    below = [r for r in rows if r['pitch_method'] == 'crepe']
    assert [round(r['median_cents']) for r in below if r['midi'] != 72 and r['midi'] != 84] \
        == [20] * 6
    assert rows[3]['median_cents'] == pytest.approx(-1180, abs=1)  # the octave-low note
    assert rows[3]['pitch_accuracy'] < 0.02  # (the note's last frame is past the halving)
    assert [r['input_silent'] for r in rows] == [not played for _, played in SCALE]
    assert [r['in_range'] for r in rows] == [67 <= m <= 79 for m, _ in SCALE]


@pytest.fixture(scope='module')
@gives('trains')
def tracked_model(tmp_path_factory):
    """A tiny model trained a few steps, tracked in SQLite (so it has an MLflow run)."""
    from tests.trainer.serving.test_transfer import _add_statistics
    from trainer import testing
    from trainer.model.config import load_preset
    from trainer.training.train import train

    root = tmp_path_factory.mktemp('extrapolation_model')
    testing.write_dataset(root / 'data', TINY_LAYOUT, n_examples=8, n_shards=1,
                          f0_range=(390.0, 790.0), seed=2)
    _add_statistics(root / 'data')
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = train(load_preset('tiny').with_overrides(['train.summary_every=0']),
                   str(root / 'data'), root / 'model', 20, tracking_uri=uri,
                   experiment='extrapolation-test', progress=False)
    return root / 'model', uri, result['run_id']


def test_a_trained_model_plays_the_true_pitches_above_crepes_range(tmp_path, tracked_model):
    model_dir, uri, run_id = tracked_model
    audio, notes = _scale()
    data = tmp_path / 'data'
    scale = data / 'extrapolation' / 'scale' / 'chromatic_scale.wav'
    scale.parent.mkdir(parents=True)
    sf.write(str(scale), audio, RATE, subtype='FLOAT')
    name = 'extrapolation/scale/chromatic_scale.wav'
    (data / 'truth.json').write_text(json.dumps({
        'range': {'low': 67, 'high': 79},
        'silent_notes': [{'file': name, 'midi': 84, 'onset_s': notes[6]['onset_s']}],
        'files': {name: {'set': 'extrapolation', 'split': 'scale', 'notes': notes}}}))
    out_json = tmp_path / 'extrapolation.json'
    assert be.main(['--data', str(data), '--out', str(tmp_path / 'out'), '--model',
                    str(model_dir), '--f0', 'truth', '--crepe_capacity', 'tiny',
                    '--json', str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert report['f0_input'] == 'truth' and report['silent_input_notes'] == [84]
    rows = {r['midi']: r for r in report['notes']}
    for midi in (96, 97):  # past CREPE: the output's partials are multiples of the true pitch
        ratio = 2 ** (rows[midi]['median_cents'] / 1200)
        assert rows[midi]['pitch_method'] == 'spectrum'
        assert round(ratio) >= 1 and abs(ratio - round(ratio)) < 0.01, rows[midi]
    assert out_json.with_suffix('.png').stat().st_size > 10_000
    assert sf.info(str(tmp_path / 'out' / 'scale_out_truth.wav')).frames == len(audio)
    from trainer.tracking.store import make_client

    run = make_client(uri).get_run(run_id)
    assert 'extrapolation_truth_f0/above/pitch_accuracy' in run.data.metrics
    assert not (tmp_path / 'out' / 'model').exists()  # measured, not trained again
    assert be.main(['--data', str(data), '--out', str(tmp_path / 'o2'), '--model',
                    str(tmp_path)]) == 2
