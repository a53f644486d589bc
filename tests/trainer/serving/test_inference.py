"""Trained models loaded back (trainer.serving.inference) and ddsp-eval, in-process and on Beam."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.markers import gives
from tests.trainer.conftest import TINY_LAYOUT
from trainer import testing
from trainer.serving.inference import ModelDirError, TrainedModel
from trainer.training.train import train

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope='module')
@gives('trains')
def trained(tmp_path_factory, tiny_config):
    """A tiny model trained 6 steps on 1 s records, with a 2-shard eval split beside them."""
    root = tmp_path_factory.mktemp('trained')
    data = root / 'data'
    testing.write_dataset(data, TINY_LAYOUT, n_examples=8, n_shards=2, seed=0)
    testing.write_dataset(data, TINY_LAYOUT, n_examples=4, n_shards=2, split='eval', seed=5)
    model_dir = root / 'model'
    train(tiny_config, str(data), model_dir, 6, track=False, progress=False)
    return data, model_dir


def _weights(model):
    return {v.path: np.asarray(v.numpy()) for v in model.weights}


def test_loaded_model_has_the_trained_weights_in_any_window(trained, tiny_resolved):
    from trainer.training.data import open_source
    from trainer.training.loop import Trainer

    data, model_dir = trained
    reference = Trainer(tiny_resolved, open_source(str(data)), model_dir)
    assert reference.restore() == 6  # restored as training does (model + optimizer)
    expected = _weights(reference.model)
    for secs in (None, 1.0, 0.2):
        loaded = TrainedModel.load(model_dir, example_secs=secs)
        assert loaded.step == 6
        got = _weights(loaded.model)
        assert set(got) == set(expected) and len(got) > 10
        for path, value in expected.items():
            np.testing.assert_array_equal(got[path], value, err_msg=path)
    loaded = TrainedModel.load(model_dir, example_secs=1.0)
    assert loaded.config.data.n_samples == 16000
    out = loaded.resynthesize({'f0_hz': np.full([2, 250], 220.0, np.float32),
                               'loudness_db': np.full([2, 250], -30.0, np.float32)})
    assert out.shape == (2, 16000) and np.all(np.isfinite(out)) and np.abs(out).max() > 0


def test_checkpoints_without_named_weights_still_load(trained, tmp_path, tiny_resolved):
    """Checkpoints written before the named weights had the model's variables only through the
    optimizer (Keras 3 keeps list-held layers out of TensorFlow's object graph)."""
    import shutil

    from trainer.training.loop import build_model

    _, model_dir = trained
    old = tmp_path / 'old'
    shutil.copytree(model_dir, old, ignore=shutil.ignore_patterns('ckpt-*', 'checkpoint'))
    model, optimizer, _ = build_model(tiny_resolved)
    new = TrainedModel.load(model_dir)
    for variable in model.weights:  # the trained values, in a model of the old layout
        variable.assign(dict((v.path, v) for v in new.model.weights)[variable.path])
    tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(old / 'ckpt'))
    names = [n for n, _ in tf.train.list_variables(tf.train.latest_checkpoint(str(old)))]
    assert not any(n.startswith('weights/') for n in names)
    loaded = TrainedModel.load(old)
    for path, value in _weights(new.model).items():
        np.testing.assert_array_equal(_weights(loaded.model)[path], value, err_msg=path)


def test_model_dir_errors(tmp_path, trained):
    with pytest.raises(ModelDirError, match='no such directory'):
        TrainedModel.load(tmp_path / 'nothing')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ModelDirError, match='no config.json'):
        TrainedModel.load(tmp_path / 'empty')
    import shutil

    shutil.copy(trained[1] / 'config.json', tmp_path / 'empty' / 'config.json')
    with pytest.raises(ModelDirError, match='no checkpoint'):
        TrainedModel.load(tmp_path / 'empty')


def _eval(args, timeout=600):
    return subprocess.run([sys.executable, '-m', 'pipelines.evaluate', *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**__import__('os').environ, 'PYTHONPATH': str(ROOT)})


def _rows(path):
    return {r['id']: r for r in map(json.loads, Path(path).read_text().splitlines())}


@pytest.mark.slow
def test_ddsp_eval_on_the_portable_runner_agrees_with_a_local_evaluation(trained, tmp_path,
                                                                        capsys):
    """ddsp-eval with Beam's portable runner (job service and worker pool on 127.0.0.1, see
    tests/pipelines/portable.py), its options spelled with spaces before the command's flags:
    the same rows as an evaluation in this process."""
    from pipelines.evaluate import main
    from tests.pipelines.portable import portable_runner

    data, model_dir = trained
    common = ['--model', str(model_dir), '--data', str(data), '--crepe_capacity', 'tiny',
              '--batch_size', '1', '--no_mlflow', '--no_progress']
    assert main([*common, '--out', str(tmp_path / 'local')]) == 0
    with portable_runner() as args:
        beam = [token for arg in args for token in arg.split('=', 1)]  # --runner X ...
        assert main([*beam, *common, '--out', str(tmp_path / 'portable')]) == 0
    assert '(on Beam)' in capsys.readouterr().err  # the job ran on the runner
    a = _rows(tmp_path / 'local' / 'examples.jsonl')
    b = _rows(tmp_path / 'portable' / 'examples.jsonl')
    assert len(a) == 4 and set(a) == set(b)
    for key, row in a.items():
        for metric, value in row.items():
            if isinstance(value, float) and np.isfinite(value):
                assert b[key][metric] == pytest.approx(value, rel=1e-6, abs=1e-9), (key, metric)


@pytest.mark.slow
def test_ddsp_eval_locally_and_on_two_beam_workers_agree(trained, tmp_path):
    data, model_dir = trained
    # bfloat16 forced (auto would pick float32 on a CPU without it): the Beam workers must use
    # it too for the rows to agree
    common = ['--model', model_dir, '--data', data, '--crepe_capacity', 'tiny',
              '--crepe_precision', 'bfloat16', '--batch_size', '1', '--no_mlflow',
              '--no_progress']
    local = _eval([*common, '--out', tmp_path / 'local'])
    assert local.returncode == 0, local.stderr[-3000:]
    assert 'CREPE tiny bfloat16' in local.stderr
    assert 'f0_l1_semitones' in local.stdout and 'best example' in local.stdout
    beam = _eval([*common, '--out', tmp_path / 'beam', '--runner', 'DirectRunner',
                  '--direct_running_mode', 'multi_processing', '--direct_num_workers', '2'])
    assert beam.returncode == 0, beam.stderr[-3000:]
    a, b = _rows(tmp_path / 'local' / 'examples.jsonl'), _rows(tmp_path / 'beam' /
                                                               'examples.jsonl')
    assert len(a) == 4 and set(a) == set(b)  # every eval example of both shards, once
    assert {k.split('#')[0] for k in a} == {'eval-00000-of-00002.tfrecord',
                                            'eval-00001-of-00002.tfrecord'}
    for key, row in a.items():
        for metric, value in row.items():
            if isinstance(value, float) and np.isfinite(value):
                assert b[key][metric] == pytest.approx(value, rel=1e-6, abs=1e-9), (key, metric)
    agg_a = json.loads((tmp_path / 'local' / 'aggregate.json').read_text())
    agg_b = json.loads((tmp_path / 'beam' / 'aggregate.json').read_text())
    assert agg_a['examples'] == agg_b['examples'] == 4
    assert agg_a['spectral_distance'] == pytest.approx(agg_b['spectral_distance'], rel=1e-6)
    listen = ['listen/eval-00000-of-00002.tfrecord_0', 'listen/eval-00000-of-00002.tfrecord_1',
              'listen/eval-00001-of-00002.tfrecord_0']  # the first 3 examples, both shells
    for shell in ('local', 'beam'):
        for folder in ('best', 'worst', *listen):
            for name in ('original.wav', 'resynthesis.wav', 'spectrogram.png', 'example.json'):
                assert (tmp_path / shell / folder / name).exists(), (shell, folder, name)
    import soundfile as sf

    a_wav, _ = sf.read(tmp_path / 'local' / listen[0] / 'resynthesis.wav')
    b_wav, _ = sf.read(tmp_path / 'beam' / listen[0] / 'resynthesis.wav')
    np.testing.assert_allclose(a_wav, b_wav, atol=1e-4)


def test_ddsp_eval_usage_errors(trained, tmp_path, capsys):
    from pipelines.evaluate import main

    data, model_dir = trained
    assert main(['--model', str(tmp_path / 'none'), '--data', str(data), '--no_mlflow']) == 2
    assert 'no such directory' in capsys.readouterr().err
    assert main(['--model', str(model_dir), '--data', str(tmp_path / 'none'),
                 '--no_mlflow']) == 2
    assert 'no files match' in capsys.readouterr().err
    other = tmp_path / 'd32'
    from ddsp_core import records

    testing.write_dataset(other, records.Layout(32000, 250, 1.0, audio_16k=True), n_examples=1,
                          n_shards=1, split='eval')
    assert main(['--model', str(model_dir), '--data', str(other), '--no_mlflow']) == 2
    assert 'trained at 16000 Hz' in capsys.readouterr().err


def test_auto_crepe_precision_is_resolved_where_the_rows_are_measured(trained, tmp_path,
                                                                      monkeypatch, capsys):
    """``--crepe_precision auto`` on Beam: the launcher passes 'auto' on (each worker resolves
    it for its own hardware, as ddsp-prepare's workers do), and every row, the aggregate and
    the table say which format measured them."""
    import ddsp_core.f0
    import pipelines.evaluate as pe
    from trainer.evaluation import evaluate as evaluation
    from trainer.training.data import open_source

    data, model_dir = trained
    seen = {}

    def stop_before_beam(*args):
        seen['precision'] = args[-1]
        raise RuntimeError('stopped before the job')

    monkeypatch.setattr(pe, 'evaluate_on_beam', stop_before_beam)
    monkeypatch.setattr(ddsp_core.f0, 'bfloat16_hardware', lambda: (False, 'test launcher'))
    assert pe.main(['--model', str(model_dir), '--data', str(data), '--crepe_capacity', 'tiny',
                    '--no_mlflow', '--no_progress', '--out', str(tmp_path / 'x'),
                    '--runner', 'DirectRunner']) == 1
    assert seen['precision'] == 'auto'  # not the launcher's float32
    assert 'CREPE tiny auto (float32 here)' in capsys.readouterr().err

    # where the rows are measured (a worker), 'auto' is that process's answer
    source = open_source(str(data), split='eval')
    model = TrainedModel.load(str(model_dir), example_secs=source.layout.example_secs)
    for native, expected in ((True, 'bfloat16'), (False, 'float32')):
        monkeypatch.setattr(ddsp_core.f0, 'bfloat16_hardware', lambda n=native: (n, 'test'))
        result = evaluation.evaluate(model, source, 'tiny', max_examples=1, progress=False,
                                     listen=0, crepe_precision='auto')
        assert [row['crepe_precision'] for row in result.rows] == [expected]
        assert result.crepe_precision == expected
        assert json.loads(evaluation.summary_json(result))['crepe_precision'] == expected
        assert f'\ncrepe_precision {expected:>19}' in evaluation.format_table(result)
    assert evaluation.precision_of([{'crepe_precision': 'bfloat16'},
                                    {'crepe_precision': 'float32'}]) == 'mixed'
