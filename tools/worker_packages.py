"""What a Beam worker on another machine needs of this project, built from the checkout, and
its installation the way Beam's Python SDK container installs staged packages.

    python tools/worker_packages.py build OUT [--weights DIR] [--wheelhouse DIR] [--crepe_cache DIR]
    python tools/worker_packages.py install OUT [--python PY]
    python tools/worker_packages.py venv OUT VENV [--cache DIR]
    python tools/worker_packages.py options OUT

``build`` (run with the project's virtual environment, ``make venv``) writes into OUT:

- ``requirements.txt``: the exact versions of ``requirements.lock`` that the project needs at run
  time (its dependencies and the ``gcp`` and ``postgres`` extras, followed through every
  package's own requirements; the test tools left out), one ``name==version`` a line, without
  hashes: Beam's stager reads ``--requirements_file`` a line at a time;
- ``ddsp_platform-<version>.tar.gz``: this project's sdist, built from ``setup.py``;
- ``crepe-0.0.16-py3-none-any.whl``: crepe with its weight files inside (crepe's own setup.py
  downloads them while building, which cannot work offline: they come from ``--weights``,
  default ``$CREPE_WEIGHTS_DIR`` or else the installed crepe's, through ``tools/crepe_offline``);
- ``extra_packages.txt``: the two packages in the order they are installed (crepe first).

With ``--wheelhouse DIR`` it also fills DIR with a wheel of every version in
``requirements.txt`` (checked against the lock's hashes), so that ``install`` can run without an
index (``PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR``).

``install`` runs, with PY's pip, the commands Beam's SDK container runs at a worker's start
(``sdks/python/container/piputil.go`` of Beam 2.78): the requirements, once from the staged
folder only without dependencies and again allowing the index; then each extra package forced
in without dependencies, and again with them. The Dockerfile of the Dataflow worker image
(``tools/worker.Dockerfile``) installs through it; so does the test whose workers run from a
fresh virtual environment (``tests/pipelines/test_worker_env.py``). It uses the standard library
only: it runs before this project is installed.

``venv`` makes a virtual environment VENV from OUT alone, as a worker's (:func:`worker_venv`:
the requirements in an environment kept under ``--cache`` by their digest, default
``~/.cache/ddsp-platform/worker-env``; the extra packages in VENV).

``options`` prints the Beam options that stage OUT for a job's workers (``--requirements_file``
and one ``--extra_package`` a package).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = os.path.join(ROOT, 'requirements.lock')
PROJECT = 'ddsp-platform'
EXTRAS = ('gcp', 'postgres')  # what a worker may need: gs:// (Beam's GCS), a PostgreSQL store
CREPE = 'crepe==0.0.16'
REQUIREMENTS = 'requirements.txt'
EXTRA_PACKAGES = 'extra_packages.txt'
# The packages Beam's worker does not get from requirements.txt: the two extra packages.
NOT_REQUIRED = {'crepe', PROJECT}
PIP = ('-m', 'pip')
DEFAULT_CACHE = os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
                             'ddsp-platform', 'worker-env')
QUIET_PIP = ('--no-cache-dir', '--disable-pip-version-check')


class WorkerPackagesError(RuntimeError):
    """A step of building or installing the worker packages failed (the message says which)."""


def _name(requirement: str) -> str:
    """A requirement's (or distribution's) name, normalised as PyPI does."""
    name = re.split(r'[\s\[;<>=!~(]', requirement.strip(), maxsplit=1)[0]
    return re.sub(r'[-_.]+', '-', name).lower()


# ---- the lock -----------------------------------------------------------------------------------
def read_lock(path: str = LOCK) -> dict[str, list[str]]:
    """``requirements.lock`` -> {normalised name: [its 'name==version' line, its --hash lines]}."""
    blocks: dict[str, list[str]] = {}
    current = None
    with open(path, encoding='utf-8') as f:
        for raw in f:
            line = raw.rstrip('\n').rstrip('\\').strip()
            if not line or line.startswith('#'):
                continue
            if raw[:1].isspace():
                if current is not None and line.startswith('--hash='):
                    blocks[current].append(line)
                continue
            if '==' not in line:
                raise WorkerPackagesError(f'{path}: not a pinned requirement: {line!r}')
            current = _name(line)
            blocks[current] = [line.split(';')[0].strip()]
    return blocks


def runtime_closure(project: str = PROJECT, extras=EXTRAS) -> set[str]:
    """The normalised names of every distribution ``project[extras]`` needs where it runs: its
    requirements and theirs, followed through the installed distributions' metadata with their
    environment markers (extras included) evaluated for this Python and platform. The project's
    own requirements are read from its installed metadata, which ``make venv`` (and so ``make
    worker-packages``) refreshes whenever setup.py changes."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    wanted: dict[str, set[str]] = {}
    todo = [(_name(project), set(extras))]
    while todo:
        name, want = todo.pop()
        if name in wanted and want <= wanted[name]:
            continue
        wanted[name] = wanted.get(name, set()) | want
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError as e:
            raise WorkerPackagesError(f'{name} is not installed in {sys.prefix}: run make venv '
                                      'first') from e
        for text in requires:
            req = Requirement(text)
            envs = [{'extra': e} for e in ('', *sorted(wanted[name]))]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((_name(req.name), set(req.extras)))
    return set(wanted)


def worker_requirements(lock: dict[str, list[str]], needed: set[str]) -> list[str]:
    """The lock's blocks of the ``needed`` distributions but crepe and the project, sorted.

    Raises:
        WorkerPackagesError: a needed distribution has no version in the lock.
    """
    missing = sorted(needed - NOT_REQUIRED - set(lock))
    if missing:
        raise WorkerPackagesError(f'{LOCK}: no pinned version of {", ".join(missing)}, which '
                                  'the project needs at run time: run make lock')
    return [name for name in sorted(needed - NOT_REQUIRED)]


# ---- build --------------------------------------------------------------------------------------
def _run(cmd, what: str, **kwargs) -> None:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise WorkerPackagesError(f'{what} failed (exit {done.returncode}): '
                                  f'{(done.stderr or done.stdout).strip()[-2000:]}')


def build_sdist(out: str) -> str:
    """This project's sdist (setuptools, from ``setup.py``; no build isolation: the project's
    environment has the build requirements) -> its path in ``out``."""
    before = set(os.listdir(out))
    code = ('import sys, setuptools.build_meta as b; '
            'print(b.build_sdist(sys.argv[1]))')
    _run([sys.executable, '-c', code, out], 'building the sdist', cwd=ROOT)
    made = sorted(set(os.listdir(out)) - before)
    sdists = [n for n in made if n.endswith('.tar.gz')]
    if len(sdists) != 1:
        raise WorkerPackagesError(f'building the sdist made {made} in {out}')
    return os.path.join(out, sdists[0])


def default_weights() -> str | None:
    """``$CREPE_WEIGHTS_DIR``, else the folder of the crepe installed here (its weight files,
    ``model-<capacity>.h5``), else None."""
    if os.environ.get('CREPE_WEIGHTS_DIR'):
        return os.environ['CREPE_WEIGHTS_DIR']
    import importlib.util

    spec = importlib.util.find_spec('crepe')
    return os.path.dirname(spec.origin) if spec and spec.origin else None


def build_crepe_wheel(out: str, weights: str) -> str:
    """crepe 0.0.16 as a wheel with the weight files in ``weights`` inside -> its path.

    Raises:
        WorkerPackagesError: the build failed, or the wheel's 'tiny' weights are empty.
    """
    if not weights or not os.path.isdir(weights):
        raise WorkerPackagesError(f'--weights: {weights or "(unset)"} is not a folder of crepe '
                                  'weight files (model-tiny.h5.bz2, model-full.h5.bz2)')
    hook = os.path.join(ROOT, 'tools', 'crepe_offline')
    env = {**os.environ, 'CREPE_WEIGHTS_DIR': os.path.abspath(weights),
           'PYTHONPATH': os.pathsep.join(filter(None, [hook, os.environ.get('PYTHONPATH')]))}
    with tempfile.TemporaryDirectory(prefix='crepe-wheel-') as tmp:
        # crepe's setup.py imports pkg_resources: built with this environment's setuptools<81.
        _run([sys.executable, *PIP, 'wheel', '--no-deps', '--no-build-isolation',
              '--no-cache-dir', *QUIET_PIP[1:], '-w', tmp, CREPE],
             'building the crepe wheel', env=env, cwd=tmp)
        wheels = [n for n in os.listdir(tmp) if n.endswith('.whl')]
        if len(wheels) != 1:
            raise WorkerPackagesError(f'building the crepe wheel made {wheels}')
        path = os.path.join(out, wheels[0])
        shutil.move(os.path.join(tmp, wheels[0]), path)
    with zipfile.ZipFile(path) as z:
        sizes = {os.path.basename(i.filename): i.file_size for i in z.infolist()}
    if not sizes.get('model-tiny.h5'):
        raise WorkerPackagesError(f'{path}: its model-tiny.h5 is empty or missing ({weights} '
                                  'has no model-tiny.h5.bz2?)')
    return path


def build_wheelhouse(lock: dict[str, list[str]], names: list[str], wheelhouse: str) -> None:
    """A wheel of each of ``names``' locked versions in ``wheelhouse`` (pip's cache reused;
    hashes checked against the lock; sdists such as crcmod's built into wheels)."""
    os.makedirs(wheelhouse, exist_ok=True)
    with tempfile.NamedTemporaryFile('w', suffix='-hashed.txt', delete=False) as f:
        for name in names:
            f.write(' \\\n    '.join(lock[name]) + '\n')
    try:
        _run([sys.executable, *PIP, 'wheel', '--no-deps', '--require-hashes', '-q',
              '--disable-pip-version-check', '-w', wheelhouse, '-r', f.name],
             f'downloading the wheels into {wheelhouse}')
    finally:
        os.unlink(f.name)


def _weights_digest(weights: str) -> str:
    digest = hashlib.sha256(CREPE.encode())
    for name in sorted(os.listdir(weights)):
        if name.startswith('model-') and name.endswith(('.h5', '.h5.bz2')):
            digest.update(name.encode())
            with open(os.path.join(weights, name), 'rb') as f:
                for block in iter(lambda: f.read(1 << 20), b''):
                    digest.update(block)
    return digest.hexdigest()[:16]


def crepe_wheel(out: str, weights: str, cache: str | None = None) -> str:
    """:func:`build_crepe_wheel` into ``out``; with ``cache``, a wheel built before from the
    same weight files (``cache/crepe-<digest>/``) is copied instead of built again."""
    if not cache:
        return build_crepe_wheel(out, weights)
    if not weights or not os.path.isdir(weights):
        return build_crepe_wheel(out, weights)  # (its error)
    kept = os.path.join(cache, f'crepe-{_weights_digest(weights)}')
    wheels = sorted(n for n in os.listdir(kept) if n.endswith('.whl')) \
        if os.path.isdir(kept) else []
    if not wheels:
        os.makedirs(kept, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=kept) as tmp:
            made = build_crepe_wheel(tmp, weights)
            os.replace(made, os.path.join(kept, os.path.basename(made)))
        wheels = [os.path.basename(made)]
    path = os.path.join(out, wheels[0])
    shutil.copyfile(os.path.join(kept, wheels[0]), path)
    return path


def build(out: str, weights: str, wheelhouse: str | None = None,
          crepe_cache: str | None = None) -> list[str]:
    """Everything of ``build`` (module docstring) -> the extra packages' paths, in order
    (``crepe_cache``: see :func:`crepe_wheel`)."""
    os.makedirs(out, exist_ok=True)
    lock = read_lock()
    names = worker_requirements(lock, runtime_closure())
    with open(os.path.join(out, REQUIREMENTS), 'w', encoding='utf-8') as f:
        f.write(''.join(lock[name][0] + '\n' for name in names))
    packages = [crepe_wheel(out, weights, crepe_cache), build_sdist(out)]
    with open(os.path.join(out, EXTRA_PACKAGES), 'w', encoding='utf-8') as f:
        f.write(''.join(os.path.basename(p) + '\n' for p in packages))
    if wheelhouse:
        build_wheelhouse(lock, names, wheelhouse)
    return packages


def beam_options(out: str) -> list[str]:
    """The Beam options that stage ``out`` (as ``build`` wrote it) for a job's workers."""
    out = os.path.abspath(out)
    packages = _extra_packages(out)
    return [f'--requirements_file={os.path.join(out, REQUIREMENTS)}',
            *(f'--extra_package={os.path.join(out, p)}' for p in packages)]


def requirements_digest(out: str, python: str) -> str:
    """The key of an environment made from ``out``'s requirements for ``python``: a digest of
    ``requirements.txt``'s bytes and the Python version."""
    version = subprocess.run([python, '-c', 'import sys; print(sys.version)'],
                             capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256(version.encode())
    with open(os.path.join(out, REQUIREMENTS), 'rb') as f:
        digest.update(f.read())
    return digest.hexdigest()[:16]


def worker_venv(out: str, cache: str, venv: str,
                base_python: str = sys._base_executable) -> str:
    """A virtual environment at ``venv`` made from ``out`` alone, as a worker's, in two layers
    like a worker image's and its start:

    - the requirements: an environment created by ``base_python -m venv`` (no site-packages of
      this one) with ``out``'s requirements installed by :func:`install`, pip confined to a
      wheelhouse of the locked versions (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``: it stands for
      PyPI). It and the wheelhouse are kept under ``cache/<requirements_digest>/``, made once
      per set of requirements and never changed afterwards;
    - the extra packages (crepe, the project's sdist): a new environment at ``venv`` that sees
      the kept one's packages (a ``.pth`` file naming its site-packages) and gets them with
      :func:`install`'s commands, as at a worker's start.

    Returns ``venv``'s ``python``."""
    key = requirements_digest(out, base_python)
    root = os.path.join(os.path.abspath(cache), key)
    kept, wheelhouse = os.path.join(root, 'venv'), os.path.join(root, 'wheelhouse')
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait and reuse
        if not os.path.exists(os.path.join(wheelhouse, '.complete')):
            lock_blocks = read_lock()
            with open(os.path.join(out, REQUIREMENTS), encoding='utf-8') as f:
                names = [_name(line) for line in f if line.strip()]
            build_wheelhouse(lock_blocks, names, wheelhouse)
            open(os.path.join(wheelhouse, '.complete'), 'w').close()
        if not os.path.exists(os.path.join(kept, '.complete')):
            shutil.rmtree(kept, ignore_errors=True)  # (an interrupted build)
            _run([base_python, '-m', 'venv', kept], f'creating {kept}')
            with _pip_index(wheelhouse):
                install(out, os.path.join(kept, 'bin', 'python'), extra_packages=False)
            open(os.path.join(kept, '.complete'), 'w').close()
    _run([base_python, '-m', 'venv', venv], f'creating {venv}')
    python = os.path.join(venv, 'bin', 'python')
    with open(os.path.join(_site_packages(python), '_ddsp_requirements.pth'), 'w') as f:
        f.write(_site_packages(os.path.join(kept, 'bin', 'python')) + '\n')
    with _pip_index(wheelhouse):
        install(out, python, requirements=False)
    return python


def _site_packages(python: str) -> str:
    return subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
                          capture_output=True, text=True, check=True).stdout.strip()


@contextlib.contextmanager
def _pip_index(wheelhouse: str):
    """pip (and its build environments) finding packages in ``wheelhouse`` only."""
    saved = {k: os.environ.get(k) for k in ('PIP_NO_INDEX', 'PIP_FIND_LINKS')}
    os.environ.update(PIP_NO_INDEX='1', PIP_FIND_LINKS=wheelhouse)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- install (standard library only) ------------------------------------------------------------
def _extra_packages(out: str) -> list[str]:
    with open(os.path.join(out, EXTRA_PACKAGES), encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def _pip(python: str, args, what: str, check: bool = True) -> bool:
    done = subprocess.run([python, *PIP, 'install', *args, *QUIET_PIP], capture_output=True,
                          text=True)
    if done.returncode != 0 and check:
        raise WorkerPackagesError(f'{what}: pip failed (exit {done.returncode}): '
                                  f'{(done.stderr or done.stdout).strip()[-2000:]}')
    return done.returncode == 0


def install(out: str, python: str = sys.executable, requirements: bool = True,
            extra_packages: bool = True) -> None:
    """Install ``out`` into ``python``'s environment with the pip commands of Beam's SDK
    container (module docstring), in its order: the requirements, then the extra packages
    (either left out when False)."""
    out = os.path.abspath(out)
    listed = os.path.join(out, REQUIREMENTS)
    if requirements and os.path.isfile(listed):
        # Beam: first from the staged folder only, without dependencies; then with the index
        # (a no-op when the first round installed everything).
        _pip(python, ['-r', listed, '--no-index', '--no-deps', '--find-links', out],
             'requirements from the staged folder', check=False)
        _pip(python, ['-r', listed, '--find-links', out], 'requirements')
    for package in _extra_packages(out) if extra_packages else []:
        path = os.path.join(out, package)
        _pip(python, ['--upgrade', '--force-reinstall', '--no-deps', path], package)
        _pip(python, [path], package)


# ---- the command --------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog='tools/worker_packages.py', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    b = sub.add_parser('build', help='write requirements.txt, the sdist and the crepe wheel')
    b.add_argument('out')
    b.add_argument('--weights', help='folder of crepe weight files (default: $CREPE_WEIGHTS_DIR, '
                                     "else the installed crepe's)")
    b.add_argument('--wheelhouse', help='also put a wheel of every requirement here')
    b.add_argument('--crepe_cache', help='reuse a crepe wheel built from the same weights here')
    i = sub.add_parser('install', help="install OUT the way Beam's SDK container does")
    i.add_argument('out')
    i.add_argument('--python', default=sys.executable,
                   help='the Python whose environment gets them (default: this one)')
    v = sub.add_parser('venv', help='a virtual environment made from OUT alone (cached)')
    v.add_argument('out')
    v.add_argument('venv', help='the new environment (the requirements under --cache)')
    v.add_argument('--cache', default=DEFAULT_CACHE,
                   help=f'where environments are kept, by requirements (default {DEFAULT_CACHE})')
    o = sub.add_parser('options', help='print the Beam options that stage OUT')
    o.add_argument('out')
    args = parser.parse_args(argv)
    try:
        if args.command == 'build':
            for path in build(args.out, args.weights or default_weights(), args.wheelhouse,
                              args.crepe_cache):
                print(path)
        elif args.command == 'install':
            install(args.out, args.python)
        elif args.command == 'venv':
            print(worker_venv(args.out, args.cache, args.venv))
        else:
            print(' '.join(beam_options(args.out)))
    except (WorkerPackagesError, OSError) as e:
        print(f'worker_packages {args.command}: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
