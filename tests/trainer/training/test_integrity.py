"""Damaged files get a clear answer and lose nothing: shards checked before the first step, a
damaged record named by shard and offset, a damaged or half-indexed newest checkpoint passed
over for the previous one (with an exactly-once MLflow history), a full disk."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ddsp_core import records, shards
from pipelines import evaluate as ddsp_eval
from pipelines import sweep as ddsp_sweep
from trainer import testing
from trainer.training.train import main

ROOT = Path(__file__).resolve().parents[3]
LAYOUT = records.Layout(16000, 250, 0.5)  # the tiny preset's window: no crops
FLAGS = ['--preset', 'tiny', '--no_progress', '--set', 'train.checkpoint_every=5',
         '--set', 'train.log_every=1']


def _dataset(directory, n_examples=8, n_shards=2):
    return testing.write_dataset(directory, LAYOUT, n_examples=n_examples, n_shards=n_shards,
                                 seed=5)


def _train(data, model_dir, steps, *extra):
    return main([*FLAGS, '--data', str(data), '--model_dir', str(model_dir), '--steps',
                 str(steps), *extra])


def _error_lines(err):
    return [line for line in err.splitlines() if line.startswith('ddsp-')]


def _history(uri, model_dir):
    run_id = json.loads((Path(model_dir) / 'mlflow_run.json').read_text())['run_id']
    client = MlflowClient(uri)
    return {key: [m.step for m in client.get_metric_history(run_id, key)]
            for key in ('total_loss', 'learning_rate')}


# ---- shards ------------------------------------------------------------------------------------
def test_truncated_or_missing_shard_stops_train_and_eval_before_the_first_step(tmp_path, capsys):
    shards = _dataset(tmp_path / 'data')
    size = os.path.getsize(shards[0])
    os.truncate(shards[0], size * 2 // 3)
    model_dir = tmp_path / 'model'
    assert _train(tmp_path / 'data', model_dir, 3, '--no_tracking') == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (f'ddsp-train: error: {shards[0]}: expected {size} bytes (as '
                    f'{tmp_path}/data/manifest.json records), found {size * 2 // 3}: the shard '
                    'is truncated or was changed; copy the dataset again or re-run ddsp-prepare '
                    f'(ddsp-prepare --verify {tmp_path}/data checks every shard)')
    assert not model_dir.exists()  # stopped before anything was built
    # ddsp-eval reads the same way (it stops before loading the model)
    assert ddsp_eval.main(['--model', str(model_dir), '--data', str(tmp_path / 'data'),
                           '--split', 'train']) == 2
    assert f'ddsp-eval: error: {shards[0]}: expected {size} bytes' in capsys.readouterr().err
    # and so does a sweep (before its study, its MLflow runs or any trial)
    assert ddsp_sweep.main(['--name', 'cut', '--data', str(tmp_path / 'data'), '--steps', '2',
                            '--space', 'train.learning_rate=[0.001]', '--output_dir',
                            str(tmp_path / 'sweep'), '--tracking_uri',
                            f'sqlite:///{tmp_path / "mlflow.db"}']) == 2
    assert f'ddsp-sweep: error: {shards[0]}: expected {size} bytes' in capsys.readouterr().err
    assert not (tmp_path / 'sweep').exists()
    os.remove(shards[1])
    assert _train(tmp_path / 'data', model_dir, 3, '--no_tracking') == 2
    err = capsys.readouterr().err
    assert f'ddsp-train: error: {shards[0]}: expected {size} bytes' in err
    assert '(1 more shard(s) too)' in err
    os.remove(shards[0])
    assert _train(tmp_path / 'data', model_dir, 3, '--no_tracking') == 2
    assert f'ddsp-train: error: {shards[0]}: missing (listed in ' in capsys.readouterr().err


@pytest.mark.trains
def test_an_older_manifest_without_shard_sizes_still_trains(tmp_path):
    _dataset(tmp_path / 'data', n_examples=4, n_shards=1)
    path = tmp_path / 'data' / records.MANIFEST
    data = json.loads(path.read_text())
    for split in data['splits'].values():
        split.pop(records.SHARD_FILES, None)
    path.write_text(json.dumps(data))
    from trainer.training.data import open_source

    source = open_source(str(tmp_path / 'data'))
    assert source.manifest.shard_file(source.files[0]) is None and len(source.files) == 1


@pytest.mark.slow
@pytest.mark.trains
def test_a_flipped_byte_met_mid_run_names_the_shard_and_offset(tmp_path, capsys):
    shards = _dataset(tmp_path / 'data', n_examples=4, n_shards=1)
    size = os.path.getsize(shards[0])
    second = size // 4  # the records are equal in size: the second starts a quarter in
    with open(shards[0], 'r+b') as f:
        f.seek(second + 100)
        byte = f.read(1)
        f.seek(second + 100)
        f.write(bytes([byte[0] ^ 0x04]))
    code = _train(tmp_path / 'data', tmp_path / 'model', 3, '--no_tracking')
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert 'Traceback' not in err
    (line,) = [x for x in _error_lines(err) if x.startswith('ddsp-train: error')]
    assert line.startswith(f'ddsp-train: error: {shards[0]}: damaged record at byte {second} '
                           '(corrupted record at ')
    assert 'its SHA-256 differs from the manifest' in line
    assert f'ddsp-prepare --verify {tmp_path}/data checks every shard' in line


@pytest.mark.slow
@pytest.mark.trains
def test_a_record_that_does_not_parse_as_the_layout_is_named_by_shard_and_offset(tmp_path,
                                                                                 capsys):
    import numpy as np
    import tensorflow as tf

    paths = _dataset(tmp_path / 'data', n_examples=2, n_shards=1)
    good = [r.numpy() for r in tf.data.TFRecordDataset(paths[0])]
    short = records.serialize_example({k: np.zeros(n // 2, np.float32) for k, n in
                                       LAYOUT.feature_lengths().items()})
    with tf.io.TFRecordWriter(paths[0]) as w:  # sound CRCs, but the third record is too short
        for raw in (*good, short):
            w.write(raw)
    manifest = tmp_path / 'data' / records.MANIFEST
    data = json.loads(manifest.read_text())
    data['splits']['train'][records.SHARD_FILES] = {
        os.path.basename(paths[0]): shards.file_entry(paths[0])}
    manifest.write_text(json.dumps(data))
    code = _train(tmp_path / 'data', tmp_path / 'model', 3, '--no_tracking')
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    third = sum(shards.RECORD_FRAMING_BYTES + len(raw) for raw in good)
    (line,) = [x for x in _error_lines(err) if x.startswith('ddsp-train: error')]
    assert line.startswith(f'ddsp-train: error: {paths[0]}: damaged record at byte {third} '
                           "(record 2: feature 'audio' has 4000 values where ")
    assert 'its SHA-256 matches the manifest (it was damaged when written' in line


# ---- checkpoints ------------------------------------------------------------------------------
KILL_AT_INDEX_UPDATE = textwrap.dedent('''
    import os, signal, sys
    from tensorflow.python.checkpoint import checkpoint_management as cm
    from trainer.training.train import main

    record_state = cm.CheckpointManager._record_state

    def record_state_or_die(self):
        # the checkpoint's files are written; the `checkpoint` index is not updated yet
        if self._latest_checkpoint.endswith('-' + os.environ['KILL_AT_STEP']):
            os.kill(os.getpid(), signal.SIGKILL)
        record_state(self)

    cm.CheckpointManager._record_state = record_state_or_die
    sys.exit(main(sys.argv[1:]))
''')


@pytest.mark.slow
@pytest.mark.trains
def test_checkpoints_survive_a_kill_before_the_index_update_and_a_damaged_newest_one(
        tmp_path, capsys, caplog):
    from trainer.training.loop import checkpoint_problem

    data, model_dir = tmp_path / 'data', tmp_path / 'model'
    _dataset(data)
    uri = f'sqlite:///{tmp_path / "mlflow.db"}'
    # 1. kill -9 after ckpt-10's files are written, before the `checkpoint` index names it
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get(
        'PYTHONPATH', '')]), 'KILL_AT_STEP': '10', 'MLFLOW_DISABLE_TELEMETRY': 'true'}
    argv = [*FLAGS, '--data', str(data), '--model_dir', str(model_dir), '--steps', '20',
            '--tracking_uri', uri]
    proc = subprocess.run([sys.executable, '-c', KILL_AT_INDEX_UPDATE, *argv], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (model_dir / 'ckpt-10.index').exists()  # written, but the index names ckpt-5
    assert 'model_checkpoint_path: "ckpt-5"' in (model_dir / 'checkpoint').read_text()
    assert sorted(_history(uri, model_dir)['total_loss']) == list(range(1, 11))
    # the resume starts from ckpt-5 (what the index names) and logs steps 6-10 no second time
    assert _train(data, model_dir, 15, '--tracking_uri', uri) == 0
    result = json.loads(capsys.readouterr().out)
    assert result['resumed_from'] == 5 and result['step'] == 15
    for key, steps in _history(uri, model_dir).items():
        assert sorted(steps) == list(range(1, 16)), key
    assert 'model_checkpoint_path: "ckpt-15"' in (model_dir / 'checkpoint').read_text()
    # 2. the newest checkpoint's data file cut in half: one warning, resume from ckpt-10
    damaged = model_dir / 'ckpt-15.data-00000-of-00001'
    os.truncate(damaged, damaged.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger='trainer.training.loop'):
        assert _train(data, model_dir, 20, '--tracking_uri', uri) == 0
    warnings = [r.getMessage() for r in caplog.records if 'unreadable' in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f'checkpoint {model_dir}/ckpt-15 is unreadable (')
    assert f'using {model_dir}/ckpt-10, the newest readable checkpoint' in warnings[0]
    result = json.loads(capsys.readouterr().out)
    assert result['resumed_from'] == 10 and result['step'] == 20
    for key, steps in _history(uri, model_dir).items():  # steps 11-15 ran twice, logged once
        assert sorted(steps) == list(range(1, 21)), key
    # ckpt-15 was written again on the way: the next resume has nothing to warn about
    assert checkpoint_problem(str(model_dir / 'ckpt-15')) is None


# ---- a full disk -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.trains
def test_full_disk_stops_with_one_line_naming_the_path_and_a_rerun_resumes(tmp_path, capsys,
                                                                          monkeypatch):
    data, model_dir = tmp_path / 'data', tmp_path / 'model'
    _dataset(data, n_examples=4, n_shards=1)
    real_fdopen = os.fdopen

    class FullDisk:
        """A file whose writes fail for lack of space once ckpt-5 is on disk."""

        def __init__(self, f):
            self._f = f

        def write(self, data):
            if (model_dir / 'ckpt-5.index').exists():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    with monkeypatch.context() as m:
        m.setattr(os, 'fdopen', lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
        assert _train(data, model_dir, 10, '--no_tracking') == 1
    err = capsys.readouterr().err
    assert _error_lines(err)[-1] == (
        f'ddsp-train: failed: no space left on device writing {model_dir}/config.json; free '
        'some space and run again with the same --model_dir to resume')
    assert 'Traceback' not in err
    assert not [p for p in os.listdir(model_dir) if p.endswith('.partial')]  # nothing half-made
    assert json.loads((model_dir / 'config.json').read_text())['preset'] == 'tiny'
    assert _train(data, model_dir, 10, '--no_tracking') == 0
    result = json.loads(capsys.readouterr().out)
    assert result['resumed_from'] == 5 and result['step'] == 10


@pytest.mark.parametrize('relative', [False, True])
def test_newest_readable_checkpoint_of_a_relative_or_absolute_model_dir(tmp_path, monkeypatch,
                                                                       relative):
    """A --model_dir given relative to the working directory (as the docs' runs/violin) finds
    its checkpoints, and falls back past a damaged newest one."""
    import tensorflow as tf

    from trainer.training.loop import newest_readable_checkpoint

    monkeypatch.chdir(tmp_path)
    model_dir = 'runs/violin' if relative else str(tmp_path / 'runs' / 'violin')
    step = tf.Variable(0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step), model_dir,
                                         max_to_keep=3)
    for s in (1, 2):
        step.assign(s)
        manager.save(checkpoint_number=s)
    assert newest_readable_checkpoint(model_dir) == os.path.join(model_dir, 'ckpt-2')
    (data,) = [p for p in os.listdir(model_dir) if p.startswith('ckpt-2.data')]
    with open(os.path.join(model_dir, data), 'r+b') as f:
        f.truncate(2)
    assert newest_readable_checkpoint(model_dir) == os.path.join(model_dir, 'ckpt-1')
