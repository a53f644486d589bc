"""tools/worker_packages.py and tools/worker.Dockerfile, without building anything (the build,
a worker environment made from it and jobs run in it: tests/pipelines/test_worker_env.py)."""

import os
import re
import stat
import sys

import pytest

from tools import worker_packages as W

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def lock():
    return W.read_lock()


@pytest.fixture(scope='module')
def closure():
    return W.runtime_closure()


def test_the_workers_requirements_are_the_locked_run_time_versions(lock, closure):
    names = W.worker_requirements(lock, closure)
    lines = [lock[n][0] for n in names]
    assert all(re.fullmatch(r'[A-Za-z0-9._-]+==[^\s\\;]+', line) for line in lines), lines
    pinned = {W._name(line): line.split('==')[1] for line in lines}
    # what the project and its gcp/postgres extras need, at the lock's versions
    for name in ('tensorflow', 'apache-beam', 'google-cloud-storage', 'psycopg2-binary',
                 'mlflow', 'optuna', 'soundfile', 'resampy', 'hmmlearn', 'h5py'):
        assert pinned[name] == lock[name][0].split('==')[1], name
    # neither the test tools nor the two packages staged as extra packages
    for name in ('pytest', 'ruff', 'selenium', 'mktestdocs', 'gcp-storage-emulator', 'uv',
                 'crepe', 'ddsp-platform'):
        assert name not in pinned, name
    assert all(len(lock[n]) > 1 and lock[n][1].startswith('--hash=sha256:') for n in names)


def test_a_requirement_missing_from_the_lock_is_an_error(lock, closure):
    lock = dict(lock)
    del lock['tensorflow']
    with pytest.raises(W.WorkerPackagesError, match='no pinned version of tensorflow'):
        W.worker_requirements(lock, closure)


def test_install_runs_the_pip_commands_of_beams_sdk_container(tmp_path):
    """The order and flags of sdks/python/container/piputil.go (Beam 2.78): requirements from
    the staged folder alone without dependencies, then with the index; each extra package
    forced in without dependencies, then with them; in extra_packages.txt's order."""
    staged = tmp_path / 'staged'
    staged.mkdir()
    (staged / W.REQUIREMENTS).write_text('numpy==2.0.0\n')
    (staged / W.EXTRA_PACKAGES).write_text('crepe-0.0.16-py3-none-any.whl\nproj-1.tar.gz\n')
    log = tmp_path / 'calls'
    python = tmp_path / 'python'
    python.write_text(f'#!{sys.executable}\nimport sys\n'
                      f'open({str(log)!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    W.install(str(staged), str(python))
    q = ' '.join(W.QUIET_PIP)
    s = str(staged)
    assert log.read_text().splitlines() == [
        f'-m pip install -r {s}/requirements.txt --no-index --no-deps --find-links {s} {q}',
        f'-m pip install -r {s}/requirements.txt --find-links {s} {q}',
        f'-m pip install --upgrade --force-reinstall --no-deps '
        f'{s}/crepe-0.0.16-py3-none-any.whl {q}',
        f'-m pip install {s}/crepe-0.0.16-py3-none-any.whl {q}',
        f'-m pip install --upgrade --force-reinstall --no-deps {s}/proj-1.tar.gz {q}',
        f'-m pip install {s}/proj-1.tar.gz {q}',
    ]
    assert W.beam_options(str(staged)) == [
        f'--requirements_file={s}/requirements.txt',
        f'--extra_package={s}/crepe-0.0.16-py3-none-any.whl',
        f'--extra_package={s}/proj-1.tar.gz']


def test_the_dockerfile_builds_from_the_locked_beam_and_installs_through_the_tool(lock):
    text = open(os.path.join(ROOT, 'tools', 'worker.Dockerfile')).read()
    beam = lock['apache-beam'][0].split('==')[1]
    python = f'{sys.version_info.major}.{sys.version_info.minor}'
    assert re.findall(r'(?m)^FROM (\S+)$', text) == [f'apache/beam_python{python}_sdk:{beam}']
    copies = dict(re.findall(r'(?m)^COPY (\S+) (\S+)$', text))
    assert copies == {'tools/worker_packages.py': '/opt/ddsp/worker_packages.py',
                      'dist/worker/': '/opt/ddsp/packages/'}
    makefile = open(os.path.join(ROOT, 'Makefile')).read()
    assert re.search(r'(?m)^WORKER_PACKAGES \?= dist/worker$', makefile)  # what `make` builds
    run = re.search(r'(?ms)^RUN (.*?)(?:\n\n|\Z)', text).group(1)
    assert run.startswith('python /opt/ddsp/worker_packages.py install /opt/ddsp/packages')
    ignore = open(os.path.join(ROOT, 'tools', 'worker.Dockerfile.dockerignore')).read()
    assert {'!tools/worker_packages.py', '!dist/worker/'} <= set(ignore.split())
