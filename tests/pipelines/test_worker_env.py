"""Beam workers in an environment of their own, made only from what a Dataflow job stages.

``tools/worker_packages.py build`` makes the project's sdist, a crepe wheel with its weights and
the workers' requirements (the lock's run-time versions); ``venv`` makes a fresh virtual
environment from them with the pip commands of Beam's SDK container (cached by the
requirements, under ``$DDSP_WORKER_ENV_CACHE`` or ``~/.cache/ddsp-platform/worker-env``; the
sdist and crepe installed again each run). Beam's portable runner then starts its SDK workers
with that environment's ``python``, in a folder outside the checkout, with an emptied
environment (``tests/pipelines/portable.py``).

Slow (minutes the first time: the environment holds TensorFlow): marked ``worker_env`` and run
by ``make test-workers`` (CI runs it), not by ``make test``.
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import soundfile as sf

from pipelines.prepare_dataset import prepare_dataset
from tests.pipelines.portable import portable_runner
from tests.signals import sine
from tools import worker_packages as W

pytestmark = [pytest.mark.slow, pytest.mark.worker_env]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KW = dict(crepe_capacity='tiny', chunk_secs=1.0, eval_fraction=0.5, inference_batch_size=7,
          num_shards=2)


@pytest.fixture(scope='module')
def worker(tmp_path_factory):
    """(the worker environment's python, the workers' home folder)."""
    root = tmp_path_factory.mktemp('worker')
    packages = str(root / 'packages')
    cache = os.environ.get('DDSP_WORKER_ENV_CACHE') or W.DEFAULT_CACHE
    W.build(packages, W.default_weights(), crepe_cache=cache)
    return W.worker_venv(packages, cache, str(root / 'venv')), str(root / 'home')


def _sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_the_workers_run_from_their_own_environment(worker, tmp_path):
    """A job's workers import the project and crepe from the worker environment, run in their
    own folder, and see nothing of the launcher: not its PYTHONPATH, checkout or venv."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    python, home = worker

    def where(_):  # pickled by value (a nested function): runs in the worker
        import json
        import os
        import sys

        import crepe

        import pipelines

        return json.dumps({'prefix': sys.prefix, 'executable': sys.executable,
                           'cwd': os.getcwd(), 'home': os.environ.get('HOME'),
                           'pythonpath': os.environ.get('PYTHONPATH'), 'path': sys.path,
                           'pipelines': pipelines.__file__, 'crepe': crepe.__file__})

    out = tmp_path / 'where'
    with portable_runner(python, home) as args:
        with beam.Pipeline(options=PipelineOptions(args)) as p:
            (p | beam.Create([0]) | beam.Map(where)
             | beam.io.WriteToText(str(out), shard_name_template=''))
    seen = json.loads(out.read_text())
    venv = os.path.dirname(os.path.dirname(python))
    assert seen['prefix'] == venv
    assert seen['pipelines'].startswith(os.path.join(venv, 'lib')), seen['pipelines']
    assert seen['crepe'].startswith(os.path.join(venv, 'lib')), seen['crepe']
    assert seen['cwd'] == home and seen['home'] == home
    assert seen['pythonpath'] is None
    for entry in seen['path']:
        assert not entry.startswith((ROOT, sys.prefix)), entry  # not the checkout, not our venv


def test_prepare_with_separate_workers_writes_the_local_bytes(worker, tmp_path):
    """ddsp-prepare's workers in their own environment write the shards, manifest, ledger and
    dead letters of an in-process DirectRunner run, byte for byte."""
    src = tmp_path / 'in'
    src.mkdir()
    for i, name in enumerate(('a.wav', 'b.wav', 'c.wav')):
        sf.write(str(src / name), sine(220 * (i + 1), 1.5 + i, 16000, 0.4), 16000)
    (src / 'bad.wav').write_bytes(b'not audio')
    local = tmp_path / 'local'
    m1 = prepare_dataset(str(src / '*.wav'), str(local), **KW,
                         pipeline_args=['--runner=DirectRunner', '--direct_running_mode=in_memory'])
    out = tmp_path / 'separate'
    python, home = worker
    with portable_runner(python, home) as args:
        manifest = prepare_dataset(str(src / '*.wav'), str(out), pipeline_args=args, **KW)
    names = sorted(os.listdir(local))
    assert names == sorted(os.listdir(out))
    assert any(n.startswith('eval-') for n in names) and any(n.startswith('train-') for n in names)
    for name in names:
        assert _sha256(local / name) == _sha256(out / name), name
    assert manifest['fingerprint'] == m1['fingerprint']


def _rows(path):
    return {r['id']: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.server
@pytest.mark.trains
def test_a_sweep_and_an_evaluation_with_separate_workers(worker, tmp_path):
    """ddsp-sweep: a trial trains in a separate worker (in a process spawned from it, with its
    python) and is recorded in MLflow; ddsp-eval of that trial's model through the separate
    workers writes the rows of a local ddsp-eval (its own process), byte for byte."""
    import numpy as np
    from mlflow.tracking import MlflowClient

    from ddsp_core import records
    from pipelines.evaluate import main as evaluate
    from pipelines.sweep import main as sweep
    from tests.trainer.mlflow_server import MlflowServer
    from trainer import testing

    data = tmp_path / 'data'
    layout = records.Layout(16000, 250, 1.0)
    testing.write_dataset(data, layout, n_examples=8, n_shards=2, seed=0)
    testing.write_dataset(data, layout, n_examples=4, n_shards=1, seed=9, split='eval')
    python, home = worker
    out = tmp_path / 'sweep'
    with MlflowServer(tmp_path / 'mlflow') as server:
        with portable_runner(python, home) as args:
            code = sweep(['--name', 'separate', '--data', str(data), '--steps', '4',
                          '--space', 'train.learning_rate=[0.003]', '--algorithm', 'grid',
                          '--set', 'train.summary_every=100', '--output_dir', str(out),
                          '--tracking_uri', server.uri, *args])
        assert code == 0
        client = MlflowClient(server.uri)
        experiment = client.get_experiment_by_name('ddsp-sweep-separate')
        runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get('mlflow.parentRunId')]
    assert len(children) == 1 and children[0].data.tags['ddsp.sweep.state'] == 'COMPLETE'
    (model_dir,) = (out / 'trials').iterdir()
    common = ['--model', str(model_dir), '--data', str(data), '--crepe_capacity', 'tiny',
              '--batch_size', '1', '--no_mlflow', '--no_progress']
    # The local evaluation as users run it: ddsp-eval in a process of its own. In this process
    # an earlier test's in-process prepare set TensorFlow's thread count for CREPE, and with
    # other threads CREPE's activations differ in the last bits (f0 L1 by 4e-6 relative).
    local = subprocess.run([sys.executable, '-m', 'pipelines.evaluate', *common,
                            '--out', str(tmp_path / 'local')], cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]
    with portable_runner(python, home) as args:
        assert evaluate([*common, '--out', str(tmp_path / 'separate'), *args]) == 0
    a = _rows(tmp_path / 'local' / 'examples.jsonl')
    b = _rows(tmp_path / 'separate' / 'examples.jsonl')
    assert len(a) == 4 and set(a) == set(b)
    assert all(np.isfinite(row['f0_l1_semitones']) for row in a.values())
    # The same inputs give the same bytes on the separate workers as locally.
    assert ((tmp_path / 'local' / 'examples.jsonl').read_bytes()
            == (tmp_path / 'separate' / 'examples.jsonl').read_bytes()), [
        (key, metric, value, b[key][metric]) for key, row in a.items()
        for metric, value in row.items() if b[key][metric] != value]


def test_a_job_whose_separate_worker_is_killed_runs_again(worker, tmp_path, caplog):
    """A worker of the external pool killed (SIGKILL) mid-bundle: the job service's job fails
    at once instead of waiting for ever, and run_and_wait runs the whole job again (the
    warning names the worker's pid and signal); every element is written once."""
    import concurrent.futures
    import logging

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines import runner

    marker = str(tmp_path / 'killed')

    def die_once(x):  # pickled by value (a nested function): runs in the worker
        import os
        import signal

        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return x
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    out = tmp_path / 'out'
    python, home = worker
    with portable_runner(python, home) as args:
        def build():
            pipeline = beam.Pipeline(options=PipelineOptions(args))
            _ = (pipeline | beam.Create(list(range(6))) | beam.Map(die_once)
                 | beam.Map(str) | beam.io.WriteToText(str(out), shard_name_template=''))
            return pipeline

        pool = concurrent.futures.ThreadPoolExecutor(1)
        with caplog.at_level(logging.WARNING, logger='pipelines.runner'):
            job = pool.submit(runner.run_and_wait, build, 'the job')
            try:
                job.result(timeout=120)  # with the watch broken it would wait for ever
            except concurrent.futures.TimeoutError:
                pytest.fail('the job still ran 120 s after its worker was killed')
            finally:
                pool.shutdown(wait=False)
    pid = int(open(marker).read())
    assert (f'the job: worker pid {pid} was killed by signal 9 (SIGKILL); running the whole '
            'job again (attempt 2 of 2, --job_retries 1)') in caplog.messages
    assert sorted(out.read_text().split()) == [str(i) for i in range(6)]
