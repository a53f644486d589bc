"""bench_start: the harmonic synthesiser's level over the first steps, per seed and warm-up."""

import json

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import bench_start
from ddsp_core import records
from trainer import testing
from trainer.model.autoencoder import Autoencoder
from trainer.model.config import load_preset, resolve_data

LAYOUT = records.Layout(16000, 250, 0.5)


def test_the_level_falls_with_the_raw_amplitude_into_exp_sigmoids_floor():
    config = resolve_data(load_preset('tiny'), LAYOUT, 'test')
    model = Autoencoder(config.model, config.data)
    example = testing.synth_example(LAYOUT, f0_hz=330.0, amplitude=0.3, seed=1)
    features = {k: tf.constant(example[k][np.newaxis]) for k in records.REQUIRED_FEATURES}
    outputs = model(dict(features, noise_seed=tf.constant([0, 0], tf.int32)))
    levels = {}
    for raw in (-10.0, -4.0, 0.0, 3.0):
        outputs['amps'] = tf.fill(tf.shape(outputs['amps']), raw)
        levels[raw] = bench_start.level_of(model, outputs)
        assert levels[raw]['raw_amplitude'] == pytest.approx(raw)
    db = [levels[r]['harmonic_db'] for r in (-10.0, -4.0, 0.0, 3.0)]
    assert db == sorted(db)
    # exp_sigmoid(-10) is ~1e-7 of its maximum: the harmonic part is silent.
    assert db[0] < -100 and db[0] < bench_start.COLLAPSED_DB
    assert db[2] > bench_start.COLLAPSED_DB
    # 0.3-amplitude sine against exp_sigmoid(3) ~ 1.9 of summed harmonics: a loud synth.
    assert db[3] > 0


def test_a_run_summary_names_the_lowest_point_and_a_collapse():
    rows = [{'step': 0, 'harmonic_db': -4.0, 'raw_amplitude': 0.1},
            {'step': 1, 'harmonic_db': -124.0, 'raw_amplitude': -6.9},
            {'step': 5, 'harmonic_db': -90.0, 'raw_amplitude': -5.0}]
    s = bench_start.summarise(rows)
    assert (s['lowest_db'], s['lowest_at_step'], s['final_db'], s['collapsed']) == (
        -124.0, 1, -90.0, True)
    rows[-1]['harmonic_db'] = -10.0
    assert bench_start.summarise(rows)['collapsed'] is False


@pytest.mark.trains
def test_probes_every_run_at_the_asked_steps_and_writes_the_report(tmp_path):
    testing.write_dataset(tmp_path / 'data', LAYOUT, n_examples=8, n_shards=1, seed=3)
    testing.write_dataset(tmp_path / 'data', LAYOUT, n_examples=4, n_shards=1, split='eval',
                          seed=4)
    report = tmp_path / 'r' / 'start.json'
    assert bench_start.main([
        '--data', str(tmp_path / 'data'), '--eval', str(tmp_path / 'data'),
        '--preset', 'tiny', '--set', 'train.batch_size=4', '--seeds', '0', '1',
        '--warmup_steps', '0', '50', '--steps', '3', '--at', '1', '--examples', '4',
        '--out', str(tmp_path / 'runs'), '--json', str(report)]) == 0
    data = json.loads(report.read_text())
    assert [(r['seed'], r['warmup_steps']) for r in data['runs']] == [(0, 0), (1, 0), (0, 50),
                                                                       (1, 50)]
    for run in data['runs']:
        assert [p['step'] for p in run['probes']] == [0, 1, 3]
        assert all(np.isfinite(p['harmonic_db']) for p in run['probes'])
        assert run['summary']['final_step'] == 3
    # The same seed starts from the same weights whatever the warm-up; a 50-step warm-up moves
    # them 50 times less in the first step.
    plain, warm = data['runs'][0]['probes'], data['runs'][2]['probes']
    assert plain[0]['harmonic_db'] == pytest.approx(warm[0]['harmonic_db'], abs=1e-6)
    assert abs(warm[1]['raw_amplitude'] - warm[0]['raw_amplitude']) < abs(
        plain[1]['raw_amplitude'] - plain[0]['raw_amplitude'])
    assert report.with_suffix('.png').stat().st_size > 10_000


def test_eval_examples_must_be_there(tmp_path, capsys):
    testing.write_dataset(tmp_path / 'data', LAYOUT, n_examples=4, n_shards=1, seed=3)
    testing.write_dataset(tmp_path / 'data', LAYOUT, n_examples=2, n_shards=1, split='eval')
    assert bench_start.main(['--data', str(tmp_path / 'data'), '--eval',
                             f"{tmp_path / 'data'}:eval", '--preset', 'tiny',
                             '--examples', '8', '--json', str(tmp_path / 'x.json')]) == 2
    assert 'holds 2 examples, --examples asks for 8' in capsys.readouterr().err
