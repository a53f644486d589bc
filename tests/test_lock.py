"""requirements.lock (made by `make lock`) covers setup.py and is what the development set-up runs.

The lock pins every package that setup.py names (install_requires and every extra) to a version
inside setup.py's range, and the environment the suite runs in (`make venv`) holds exactly the
lock's versions: no package more, none less, none at another version (crepe and this project,
installed outside the lock, aside).
"""

import ast
import importlib.metadata as md
import os
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = os.path.join(ROOT, 'requirements.lock')
OUTSIDE_THE_LOCK = {'crepe', 'ddsp-platform'}
# Installed by `python -m venv` / pip itself, not by the lock.
TOOLING = {'pip'}


def setup_requirements(path=os.path.join(ROOT, 'setup.py')):
    """Every requirement string of setup.py's setup() call: install_requires and each extra."""
    tree = ast.parse(open(path, encoding='utf-8').read(), path)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, 'id', None) == 'setup']
    assert len(calls) == 1, f'{path}: expected one setup() call'
    kwargs = {k.arg: k.value for k in calls[0].keywords}
    found = {'install_requires': ast.literal_eval(kwargs['install_requires'])}
    for extra, reqs in ast.literal_eval(kwargs['extras_require']).items():
        found[f'extra {extra}'] = reqs
    return found


def lock_pins(path=LOCK):
    """{canonical name: Version} of the lock's `name==version` lines."""
    pins = {}
    for line in open(path, encoding='utf-8'):
        m = re.match(r'^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)', line)
        if m:
            name = canonicalize_name(m.group(1))
            assert name not in pins, f'{path}: {name} pinned twice'
            pins[name] = Version(m.group(2))
    return pins


def lock_problems(requirements, pins):
    problems = []
    for where, reqs in requirements.items():
        for text in reqs:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            if name in OUTSIDE_THE_LOCK:
                continue
            if name not in pins:
                problems.append(f'{text} ({where}) is not in requirements.lock')
            elif not req.specifier.contains(pins[name], prereleases=True):
                problems.append(f'{text} ({where}): the lock pins {pins[name]}')
    return problems


def test_lock_satisfies_every_range_setup_py_names():
    requirements = setup_requirements()
    assert len(requirements['install_requires']) >= 10
    assert {'extra test', 'extra gcp', 'extra postgres'} <= set(requirements)
    assert lock_problems(requirements, lock_pins()) == []


def test_the_check_finds_a_missing_package_and_a_pin_out_of_range():
    pins = lock_pins()
    reqs = {'install_requires': ['mlflow>=3.15,<3.18', 'optuna>=4.2,<6']}
    assert lock_problems(reqs, pins) == []
    out_of_range = dict(pins, mlflow=Version('3.18.0'))
    missing = {k: v for k, v in pins.items() if k != 'optuna'}
    assert lock_problems(reqs, out_of_range) == [
        'mlflow>=3.15,<3.18 (install_requires): the lock pins 3.18.0']
    assert lock_problems(reqs, missing) == [
        'optuna>=4.2,<6 (install_requires) is not in requirements.lock']


def test_the_lock_has_hashes_for_every_pin():
    text = open(LOCK, encoding='utf-8').read()
    entries = re.split(r'\n(?=[A-Za-z0-9])', text)
    pinned = [e for e in entries if '==' in e.split('\n')[0]]
    assert len(pinned) == len(lock_pins())
    assert [e.split()[0] for e in pinned if '--hash=sha256:' not in e] == []


def test_the_environment_is_exactly_the_lock():
    """What `pip freeze` of `make venv`'s environment lists equals the lock."""
    pins = lock_pins()
    installed = {}
    for dist in md.distributions():
        name = canonicalize_name(dist.metadata['Name'])
        if name not in OUTSIDE_THE_LOCK | TOOLING:
            installed[name] = Version(dist.version)
    extra = sorted(f'{n}=={v}' for n, v in installed.items() if n not in pins)
    missing = sorted(f'{n}=={v}' for n, v in pins.items() if n not in installed)
    other = sorted(f'{n}: {installed[n]} installed, {v} locked' for n, v in pins.items()
                   if n in installed and installed[n] != v)
    assert (extra, missing, other) == ([], [], []), (
        'this environment is not requirements.lock: run `make venv` (or rm -rf .venv first)')
