"""The training loop: overfitting, exact resume, MLflow logging, NaN stop, interrupts, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ddsp_core import records
from tests.trainer.conftest import TINY_LAYOUT, RecordingTracker
from trainer import testing
from trainer.model.config import ConfigError
from trainer.training.train import TrainingInterrupted, main, train


def _checkpoint_values(model_dir) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(model_dir))
    out = {}
    for name, _ in tf.train.list_variables(str(model_dir)):
        if not name.startswith(('model/', 'optimizer/')):
            continue  # object graph, save counter, tf.data iterator state (a variant)
        value = np.asarray(reader.get_tensor(name))
        if value.dtype != object:
            out[name] = value
    return out


@pytest.mark.trains
@pytest.mark.parametrize('compute_dtype, mlp_layers', [('float32', 1), ('bfloat16', 1),
                                                       ('bfloat16', 2)])
def test_tiny_overfits_one_batch(tmp_path, tiny_config, one_batch_dataset, compute_dtype,
                                 mlp_layers):
    config = tiny_config.with_overrides(['train.log_every=1', 'train.checkpoint_every=0',
                                         f'train.compute_dtype={compute_dtype}',
                                         f'model.mlp_layers={mlp_layers}'])
    tracker = RecordingTracker()
    result = train(config, str(one_batch_dataset), tmp_path / 'm', 40, tracker=tracker,
                   progress=False)
    losses = tracker.losses()
    assert result['step'] == 40 and len(losses) == 40
    first, last = losses[0], np.mean(losses[-3:])
    assert last <= first * 2 / 3, (first, last)
    # Per-step metrics: loss terms, total, learning rate, throughput.
    step, metrics = tracker.metrics[0]
    assert step == 1
    assert {'total_loss', 'grad_norm_preclip', 'learning_rate', 'steps_per_sec',
            'examples_per_sec'} <= set(metrics)
    assert metrics['learning_rate'] == pytest.approx(config.train.learning_rate)
    assert tracker.status == 'FINISHED'
    # The final state is checkpointed with the config even with checkpoint_every=0.
    assert tf.train.latest_checkpoint(str(tmp_path / 'm')).endswith('ckpt-40')
    assert json.loads((tmp_path / 'm' / 'config.json').read_text())['preset'] == 'tiny'


@pytest.mark.trains
def test_logged_learning_rate_follows_the_decay_and_log_every_zero_logs_only_the_end(
        tmp_path, tiny_config, one_batch_dataset):
    config = tiny_config.with_overrides(['train.log_every=1', 'train.checkpoint_every=0',
                                         'train.decay_steps=1', 'train.decay_rate=0.5'])
    tracker = RecordingTracker()
    train(config, str(one_batch_dataset), tmp_path / 'a', 4, tracker=tracker, progress=False)
    lr = config.train.learning_rate
    assert [(s, m['learning_rate']) for s, m in tracker.metrics] == [
        (s, pytest.approx(lr * 0.5 ** (s - 1))) for s in (1, 2, 3, 4)]

    quiet = RecordingTracker()
    train(config.with_overrides(['train.log_every=0']), str(one_batch_dataset), tmp_path / 'b',
          3, tracker=quiet, progress=False)
    assert [s for s, _ in quiet.metrics] == [3]


@pytest.mark.trains
def test_warmup_ramps_the_rate_the_optimizer_applies_then_hands_over_to_the_decay(
        tmp_path, tiny_config, one_batch_dataset):
    config = tiny_config.with_overrides(['train.log_every=1', 'train.checkpoint_every=0',
                                         'train.warmup_steps=4', 'train.decay_steps=5',
                                         'train.decay_rate=0.5'])
    tracker = RecordingTracker()
    train(config, str(one_batch_dataset), tmp_path / 'w', 6, tracker=tracker, progress=False)
    lr = config.train.learning_rate
    # Step s (1-based) ramps by s / 4 up to step 4 and decays by 0.5 ** ((s - 1) / 5).
    assert [(s, m['learning_rate']) for s, m in tracker.metrics] == [
        (s, pytest.approx(lr * min(1, s / 4) * 0.5 ** ((s - 1) / 5))) for s in range(1, 7)]

    # The optimizer steps with it: Adam's first update is about the rate in every weight that
    # has a gradient, so the largest first move is a quarter of the un-warmed one's.
    from trainer.model.config import resolve_data
    from trainer.training import data as data_lib
    from trainer.training.loop import Trainer

    def first_move(cfg, name):
        source = data_lib.open_source(str(one_batch_dataset))
        trainer = Trainer(resolve_data(cfg, source.layout, 'test'), source, tmp_path / name)
        trainer.build()
        trainer.open_data()
        before = [v.numpy() for v in trainer.model.trainable_variables]
        trainer.train_step()
        return max(float(np.max(np.abs(v.numpy() - b)))
                   for v, b in zip(trainer.model.trainable_variables, before, strict=True))

    plain = first_move(tiny_config, 'plain')
    warmed = first_move(tiny_config.with_overrides(['train.warmup_steps=4']), 'warm')
    assert plain == pytest.approx(lr, rel=0.05)
    assert warmed == pytest.approx(lr / 4, rel=0.05)


@pytest.mark.trains
@pytest.mark.slow
def test_resume_is_exact_and_appends_to_the_same_mlflow_run(tmp_path, tiny_config, tiny_dataset,
                                                            monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # a SQLite store keeps artifacts under ./mlruns

    uri = f'sqlite:///{tmp_path}/mlflow.db'
    config = tiny_config.with_overrides(['train.checkpoint_every=2', 'train.log_every=1',
                                         'train.summary_every=3'])
    data = str(tiny_dataset / 'train-*.tfrecord')
    whole = train(config, data, tmp_path / 'whole', 6, tracking_uri=uri, experiment='t',
                  progress=False)
    half = train(config, data, tmp_path / 'split', 3, tracking_uri=uri, experiment='t',
                 progress=False)
    assert half['step'] == 3
    resumed = train(config, data, tmp_path / 'split', 6, tracking_uri=uri, experiment='t',
                    progress=False)
    assert resumed['resumed_from'] == 3 and resumed['step'] == 6
    assert resumed['run_id'] == half['run_id'] != whole['run_id']
    assert resumed['losses'] == whole['losses']

    a, b = _checkpoint_values(tmp_path / 'whole'), _checkpoint_values(tmp_path / 'split')
    assert set(a) == set(b) and len(a) > 10
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    iterations = [n for n in a if n.startswith('optimizer/_iterations')]
    assert iterations and all(int(a[n]) == 6 for n in iterations)
    assert sum(n.startswith('optimizer/_variables') for n in a) > 10  # Adam moments restored

    client = MlflowClient(uri)
    run = client.get_run(resumed['run_id'])
    assert run.info.status == 'FINISHED'
    history = client.get_metric_history(run.info.run_id, 'total_loss')
    assert sorted(m.step for m in history) == list(range(1, 7))
    assert run.data.params['model.n_harmonics'] == '16'
    assert run.data.tags['ddsp.preset'] == 'tiny'
    assert run.data.tags['ddsp.strategy'] == 'default'
    manifest = json.loads((tiny_dataset / 'manifest.json').read_text())
    assert run.data.tags['ddsp.dataset_fingerprint'] == manifest['fingerprint']
    for tag in ('ddsp.git_commit', 'ddsp.device', 'ddsp.dataset_path'):
        assert run.data.tags[tag]

    def listing(path=None):
        return {f.path for f in client.list_artifacts(run.info.run_id, path)}

    assert {'summaries', 'checkpoints', 'dataset'} <= listing()
    for folder in ('summaries/step_000003', 'summaries/step_000006'):
        assert listing(folder) == {f'{folder}/original.wav', f'{folder}/resynthesis.wav',
                                   f'{folder}/spectrogram.png'}
    assert {'latest_original.wav', 'latest_resynthesis.wav', 'latest_spectrogram.png'} <= \
        listing()
    assert {'checkpoints/config.json', 'checkpoints/checkpoint', 'checkpoints/mlflow_run.json',
            'checkpoints/dataset_manifest.json'} <= listing('checkpoints')
    assert 'dataset/manifest.json' in listing('dataset')


@pytest.mark.trains
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_config, tiny_dataset,
                                                          capsys):
    model_dir = tmp_path / 'm'
    config = tiny_config.with_overrides(['train.checkpoint_every=2',
                                         'train.checkpoint_data_iterator=false'])
    train(config, str(tiny_dataset), model_dir, 2, track=False, progress=False)
    good = _checkpoint_values(model_dir)

    bad_dir = tmp_path / 'bad'
    bad_dir.mkdir()
    example = testing.synth_example(TINY_LAYOUT)
    example['audio'][:] = np.nan
    with tf.io.TFRecordWriter(str(bad_dir / 'train-00000-of-00001.tfrecord')) as w:
        for _ in range(4):
            w.write(records.serialize_example(example))
    code = main(['--preset', 'tiny', '--data', str(bad_dir), '--steps', '6', '--model_dir',
                 str(model_dir), '--no_tracking', '--no_progress',
                 '--set', 'train.summary_every=0', '--set', 'train.checkpoint_every=2',
                 '--set', 'train.checkpoint_data_iterator=false'])
    err = capsys.readouterr().err
    assert code == 1
    assert 'not finite at step 3' in err and 'ckpt-2' in err
    assert tf.train.latest_checkpoint(str(model_dir)).endswith('ckpt-2')
    after = _checkpoint_values(model_dir)
    for name, value in good.items():
        np.testing.assert_array_equal(after[name], value)
        assert np.all(np.isfinite(value))


@pytest.mark.trains
def test_interrupt_saves_a_checkpoint_and_marks_the_run_killed(tmp_path, tiny_config,
                                                              tiny_dataset):
    config = tiny_config.with_overrides(['train.log_every=1', 'train.checkpoint_every=100'])
    tracker = RecordingTracker(interrupt_at_step=3)
    with pytest.raises(TrainingInterrupted, match='step 3'):
        train(config, str(tiny_dataset), tmp_path / 'm', 10, tracker=tracker, progress=False)
    assert tracker.status == 'KILLED'
    assert tf.train.latest_checkpoint(str(tmp_path / 'm')).endswith('ckpt-3')


@pytest.mark.trains
def test_resume_with_a_different_model_is_refused(tmp_path, tiny_config, tiny_dataset):
    train(tiny_config, str(tiny_dataset), tmp_path / 'm', 1, track=False, progress=False)
    other = tiny_config.with_overrides(['model.n_harmonics=8'])
    with pytest.raises(ConfigError, match='model.n_harmonics'):
        train(other, str(tiny_dataset), tmp_path / 'm', 2, track=False, progress=False)


@pytest.mark.trains
def test_resume_with_other_arithmetic_warns(tmp_path, tiny_config, tiny_dataset, caplog):
    train(tiny_config, str(tiny_dataset), tmp_path / 'm', 1, track=False, progress=False)
    other = tiny_config.with_overrides(['train.jit_compile=true'])
    with caplog.at_level('WARNING', logger='trainer'):
        result = train(other, str(tiny_dataset), tmp_path / 'm', 2, track=False, progress=False)
    assert result['resumed_from'] == 1 and result['step'] == 2
    assert 'train.jit_compile changed (False -> True)' in caplog.text
    assert 'does not replay exactly' in caplog.text


def test_cli_usage_errors(tmp_path, tiny_dataset, capsys, monkeypatch):
    code = main(['--preset', 'tiny', '--data', str(tiny_dataset), '--steps', '1',
                 '--model_dir', str(tmp_path / 'm'), '--set', 'model.n_harmonix=3'])
    assert code == 2 and "'model.n_harmonix'" in capsys.readouterr().err
    code = main(['--preset', 'tiny', '--data', str(tmp_path / 'none-*.tfrecord'), '--steps', '1',
                 '--model_dir', str(tmp_path / 'm'), '--no_tracking'])
    assert code == 2 and 'no files match' in capsys.readouterr().err

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted('interrupted at step 5')

    monkeypatch.setattr('trainer.training.train.train', interrupted)
    code = main(['--preset', 'tiny', '--data', str(tiny_dataset), '--steps', '1',
                 '--model_dir', str(tmp_path / 'm')])
    assert code == 130


def test_python_dash_m_entry_points_and_help_defaults():
    result = subprocess.run([sys.executable, '-m', 'trainer.training.train', '--help'],
                            capture_output=True, text=True, cwd=Path(__file__).parents[3],
                            timeout=120)
    assert result.returncode == 0
    assert '--model_dir' in result.stdout and '--strategy' in result.stdout
    assert '(default: solo_instrument)' in result.stdout and '(default: ddsp)' in result.stdout
    result = subprocess.run([sys.executable, '-m', 'trainer.tracking.sync', '--help'],
                            capture_output=True, text=True, cwd=Path(__file__).parents[3],
                            timeout=120)
    assert result.returncode == 0 and 'ddsp-sync' in result.stdout


@pytest.mark.trains
@pytest.mark.slow
def test_sigint_saves_and_exits_130(tmp_path, tiny_dataset):
    import os
    import signal
    import time

    model_dir = tmp_path / 'm'
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    env['PYTHONPATH'] = os.pathsep.join([str(Path(__file__).parents[3]),
                                         env.get('PYTHONPATH', '')])
    proc = subprocess.Popen(
        [sys.executable, '-m', 'trainer.training.train', '--preset', 'tiny', '--data',
        str(tiny_dataset),
         '--steps', '100000', '--model_dir', str(model_dir), '--no_tracking', '--no_progress',
         '--set', 'train.checkpoint_every=5', '--set', 'train.summary_every=0'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=Path(__file__).parents[3])
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if tf.train.latest_checkpoint(str(model_dir)):
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert 'interrupted at step' in err
    # A quiet start: one line on the data and devices, none of TensorFlow's C++ start-up lines.
    assert 'training on random 0.5 s crops; CPU' in err
    for noise in ('cuInit', 'oneDNN', 'absl::InitializeLog', 'cuda drivers'):
        assert noise not in err, err[:3000]
    step = int(tf.train.latest_checkpoint(str(model_dir)).rsplit('-', 1)[1])
    assert step >= 5
    assert f'interrupted at step {step}' in err  # the interrupted step itself was saved


@pytest.mark.trains
def test_eval_loss_and_early_stop_from_a_callback(tmp_path, tiny_config, tiny_dataset):
    from trainer.training.train import EarlyStop

    testing.write_dataset(tmp_path / 'data', TINY_LAYOUT, n_examples=4, n_shards=1, seed=1)
    testing.write_dataset(tmp_path / 'data', TINY_LAYOUT, n_examples=3, n_shards=1, seed=2,
                          split='eval')
    seen = []

    def on_log(step, metrics):
        seen.append((step, metrics.get('eval_loss')))
        if step >= 4:
            raise EarlyStop('pruned at step 4')

    tracker = RecordingTracker()
    config = tiny_config.with_overrides(['train.log_every=1', 'train.checkpoint_every=0'])
    result = train(config, str(tmp_path / 'data'), tmp_path / 'm', 50, tracker=tracker,
                   progress=False, eval_data=str(tmp_path / 'data'), eval_every=2,
                   on_log=on_log)
    assert result['step'] == 4 and result['stopped_early'] == 'pruned at step 4'
    assert tracker.status == 'FINISHED'
    assert tf.train.latest_checkpoint(str(tmp_path / 'm')).endswith('ckpt-4')
    assert [s for s, _ in seen] == [1, 2, 3, 4]
    evals = dict(seen)
    assert evals[1] is None and evals[3] is None  # every eval_every steps only
    assert np.isfinite(evals[2]) and np.isfinite(evals[4]) and evals[2] != evals[4]
