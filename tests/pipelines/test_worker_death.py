"""A worker process that dies mid-bundle: the job fails at once and is run again whole
(``pipelines.runner.run_and_wait``, ``--job_retries``).

The worker is killed as the kernel's out-of-memory killer or ``kill -9`` would, with a bundle
in flight: the test's ``sitecustomize`` (on the PYTHONPATH the workers inherit) makes the first
worker to decode a file SIGKILL itself, once (a marker file, created exclusively, holds its
pid), so that the job run again does not die too. Nothing of it is in the project's code. The
jobs run in child processes with a time limit: with the watch broken they would wait for ever.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
import soundfile as sf

from pipelines import evaluate, prepare_dataset, runner, sweep
from tests.signals import sine

KW = dict(crepe_capacity='tiny', chunk_secs=1.0, eval_fraction=0.5, inference_batch_size=7,
          num_shards=2)
FLAGS = ['--crepe_capacity', 'tiny', '--chunk_secs', '1.0', '--eval_fraction', '0.5',
         '--inference_batch_size', '7', '--num_shards', '2']
TWO_PROCESSES = ['--runner', 'DirectRunner', '--direct_running_mode', 'multi_processing',
                 '--direct_num_workers', '2']
# with the watch broken the job waits for ever: the test gives up long before that
TIMEOUT_S = 240  # a job and its retry take 30-40 s alone, several times that beside other work

KILL_ONCE = '''
import os
import signal

_marker = os.environ.get('DDSP_TEST_KILL_MARKER')
if _marker:
    from pipelines import prepare_steps

    _process = prepare_steps.DecodeFile.process

    def _process_or_die(self, element):
        try:
            fd = os.open(_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:  # a worker died already: this run goes on
            yield from _process(self, element)
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    prepare_steps.DecodeFile.process = _process_or_die
'''


def _sha256s(directory):
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), 'rb') as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    """(input pattern, the digests of every file of an undisturbed run's dataset)."""
    root = tmp_path_factory.mktemp('dying')
    src = root / 'in'
    src.mkdir()
    sf.write(str(src / 'a.wav'), sine(220, 2.0, 16000, 0.4), 16000)
    sf.write(str(src / 'b.wav'), sine(330, 1.5, 16000, 0.4), 16000)
    pattern = str(src / '*.wav')
    # The same job undisturbed, in a child process as the disturbed ones run. (Not in this
    # process: here TensorFlow may already run with other thread settings, left by earlier
    # tests, and CREPE's sums then differ in the last bits: seen failing in CI.)
    undisturbed = root / 'undisturbed'
    code, err = _run([sys.executable, '-m', 'pipelines.prepare_dataset', '--input', pattern,
                      '--output_dir', str(undisturbed), *FLAGS, *TWO_PROCESSES],
                     dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    assert code == 0, err[-3000:]
    return pattern, _sha256s(undisturbed)


def _prepare_with_a_dying_worker(tmp_path, pattern, *extra):
    """ddsp-prepare in a child process, two worker processes, the first to make an example
    killed -> (exit code, stderr, the killed worker's pid, the output directory)."""
    hooks = tmp_path / 'hooks'
    hooks.mkdir()
    (hooks / 'sitecustomize.py').write_text(textwrap.dedent(KILL_ONCE))
    marker = tmp_path / 'killed'
    paths = [str(hooks), *filter(None, os.environ.get('PYTHONPATH', '').split(os.pathsep))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), TF_CPP_MIN_LOG_LEVEL='2',
               DDSP_TEST_KILL_MARKER=str(marker))
    out = tmp_path / 'out'
    command = [sys.executable, '-m', 'pipelines.prepare_dataset', '--input', pattern,
               '--output_dir', str(out), *FLAGS, *TWO_PROCESSES, *extra]
    code, err = _run(command, env)
    assert marker.exists(), f'no worker was killed:\n{err[-3000:]}'
    return code, err, int(marker.read_text()), out


def _run(command, env):
    """Run a job in a child process -> (exit code, stderr); a test failure when it still runs
    after :data:`TIMEOUT_S` (then it and its workers are killed)."""
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    try:
        _, err = job.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)  # the launcher and its workers
        _, err = job.communicate()
        pytest.fail(f'the job still ran after {TIMEOUT_S} s (a dead worker hangs it):\n'
                    f'{err[-3000:]}')
    return job.returncode, err


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_mid_bundle_is_run_again(inputs, tmp_path):
    """A worker killed (SIGKILL) mid-bundle: the job is failed at once instead of waiting for
    the bundle for ever, a warning names the worker's pid and signal, the whole job runs again
    and writes exactly the files, and bytes, of an undisturbed run."""
    pattern, expected = inputs
    code, err, pid, out = _prepare_with_a_dying_worker(tmp_path, pattern)
    assert code == 0, err[-3000:]
    assert (f'worker pid {pid} was killed by signal 9 (SIGKILL); running the whole job again '
            '(attempt 2 of 2, --job_retries 1)') in err, err[-3000:]
    assert _sha256s(out) == expected  # every shard, the manifest (its fingerprint), the ledger


ALWAYS_DIES = '''
import json
import logging
import os
import signal
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import runner


def die(x):
    os.kill(os.getpid(), signal.SIGKILL)


def build():
    pipeline = beam.Pipeline(options=PipelineOptions(sys.argv[1:]))
    _ = pipeline | beam.Create([0]) | beam.Map(die)
    return pipeline


logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
logging.getLogger('apache_beam').setLevel(logging.ERROR)
try:
    runner.run_and_wait(build, 'the job', ValueError)
except ValueError as e:
    with open(os.environ['RESULT'], 'w') as f:
        json.dump({'error': str(e), 'pids': [d.pid for d in runner.worker_deaths()]}, f)
'''


@pytest.mark.slow
def test_when_the_retries_are_spent_the_job_fails(tmp_path):
    """A job whose worker dies in every attempt (a Map that kills its process: without the
    watch, Beam waits for its bundle for ever): run --job_retries + 1 times, then one error
    naming the last dead worker."""
    script = tmp_path / 'always_dies.py'
    script.write_text(ALWAYS_DIES)
    result = tmp_path / 'result.json'
    _, err = _run([sys.executable, str(script), *TWO_PROCESSES, '--job_retries', '1'],
                  dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', RESULT=str(result)))
    found = json.loads(result.read_text())
    again = re.search(r'WARNING the job: worker pid (\d+) was killed by signal 9 \(SIGKILL\); '
                      r'running the whole job again \(attempt 2 of 2, --job_retries 1\)', err)
    assert again, err
    last = re.fullmatch(r'the job failed: worker pid (\d+) was killed by signal 9 \(SIGKILL\) '
                        r'\(attempt 2 of 2, --job_retries 1\)', found['error'])
    assert last, found
    assert again[1] != last[1] and {int(again[1]), int(last[1])} <= set(found['pids'])
    assert 'Traceback' not in err


def test_ddsp_prepare_says_in_one_line_that_its_job_failed(inputs, tmp_path, monkeypatch,
                                                           capsys):
    pattern, _ = inputs
    message = ('pipeline failed: worker pid 7 was killed by signal 9 (SIGKILL) (attempt 2 of '
               '2, --job_retries 1)')

    def dies(*_args, error=RuntimeError, **_kwargs):
        raise error(message)

    monkeypatch.setattr(runner, 'run_and_wait', dies)
    assert prepare_dataset.main(['--input', pattern, '--output_dir', str(tmp_path / 'out'),
                                 *FLAGS]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f'ddsp-prepare: failed: {message}'
    assert 'Traceback' not in err


@pytest.mark.parametrize('module, required', [(prepare_dataset, []), (sweep, []),
                                              (evaluate, ['--model', 'm', '--data', 'd'])])
def test_job_retries_is_a_flag_of_every_beam_command_handed_to_beam(module, required, capsys):
    """``--job_retries`` is in each command's --help, a usage error when it is not a count,
    and reaches the job's options (where run_and_wait reads it), in either spelling."""
    from apache_beam.options.pipeline_options import PipelineOptions

    assert runner.open_beam_cli(module.build_arg_parser(), ['--help'], configure=False) == 0
    assert re.search(r'--job_retries N\s+run the whole job again', capsys.readouterr().out)
    assert runner.open_beam_cli(module.build_arg_parser(), ['--job_retries', '-1'],
                                configure=False) == 2
    assert "--job_retries: '-1' is not a count of retries" in capsys.readouterr().err
    for given, expected in (([], 1), (['--job_retries', '3'], 3), (['--job_retries=0'], 0)):
        args, beam_args = runner.open_beam_cli(module.build_arg_parser(), [*required, *given],
                                               configure=False)
        assert not hasattr(args, 'job_retries')
        assert PipelineOptions(beam_args).view_as(runner.JobOptions).job_retries == expected


ORPHAN = '''
import multiprocessing
import os
import sys
import time


def trial(path):
    from trainer.experiments.sweep_process import exit_with_parent

    exit_with_parent()
    with open(path, 'w') as f:
        f.write(str(os.getpid()))
    time.sleep(120)


if __name__ == '__main__':
    multiprocessing.get_context('spawn').Process(target=trial, args=(sys.argv[1],)).start()
    time.sleep(120)
'''


@pytest.mark.slow
def test_a_trial_process_ends_with_its_killed_worker(tmp_path):
    """A sweep's trial process (a multiprocessing child of the Beam worker) ends when the
    worker is killed, instead of training on while the job that is run again resumes it."""
    import time

    import psutil

    script = tmp_path / 'worker.py'
    script.write_text(ORPHAN)
    started = tmp_path / 'trial.pid'
    worker = subprocess.Popen([sys.executable, str(script), str(started)])
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        trial = psutil.Process(int(started.read_text()))
        worker.kill()
        worker.wait()
        try:
            trial.wait(10)
        except psutil.TimeoutExpired:
            trial.kill()
            pytest.fail('the trial process outlived its killed worker by 10 s')
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
