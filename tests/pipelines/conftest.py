"""A real ``python -m pipelines.prepare_dataset`` run (multi-process DirectRunner, 2 workers),
shared by the CLI and loopback tests: its exit code, output, and the listening TCP sockets its
process tree held while it ran."""

import dataclasses
import os
import subprocess
import sys
import time

import pytest
import soundfile as sf

from pipelines.inputs import assign_split
from tests.pipelines import listening
from tests.signals import sine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVAL_FRACTION = 0.5
RUN_TIMEOUT_SECS = 600


@dataclasses.dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    output_dir: str
    listeners: set
    samples: int
    files: dict  # split -> file name


def _one_name_per_split():
    names = {}
    for i in range(100):
        name = f'tone{i}.wav'
        names.setdefault(assign_split(name, EVAL_FRACTION), name)
        if len(names) == 2:
            return names
    raise AssertionError('no names for both splits')


@pytest.fixture(scope='session')
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('cli_run')
    src = root / 'in'
    src.mkdir()
    files = _one_name_per_split()
    for i, name in enumerate(files.values()):
        sf.write(str(src / name), sine(330 + 110 * i, 2.0, 16000, 0.4), 16000)
    out = str(root / 'out')
    env = dict(os.environ)
    # The CLI must quiet TensorFlow itself, without the test suite's TF_CPP_MIN_LOG_LEVEL.
    for var in ('TF_CPP_MIN_LOG_LEVEL', 'DDSP_VERBOSE'):
        env.pop(var, None)
    cmd = [sys.executable, '-m', 'pipelines.prepare_dataset', '--input', str(src / '*.wav'),
           '--output_dir', out, '--crepe_capacity', 'tiny', '--chunk_secs', '1',
           '--eval_fraction', str(EVAL_FRACTION), '--direct_num_workers=2']
    seen, samples = set(), 0
    with open(root / 'stdout', 'w') as so, open(root / 'stderr', 'w') as se:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=so, stderr=se)
        deadline = time.time() + RUN_TIMEOUT_SECS
        try:
            while proc.poll() is None:
                if time.time() > deadline:
                    raise AssertionError(f'{" ".join(cmd)} ran over {RUN_TIMEOUT_SECS} s')
                seen |= listening.listeners(proc.pid)
                samples += 1
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return CliRun(proc.returncode, (root / 'stdout').read_text(), (root / 'stderr').read_text(),
                  out, seen, samples, files)


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """A command's main() run in this process configures logging (a stderr handler on the root
    logger, levels): put it back after each test, so that one test's configuration does not
    leak into the output another test reads."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
