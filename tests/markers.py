"""The markers that say what a test does beyond unit behaviour, and the guard that keeps them true.

``make test`` runs every test but ``worker_env``; ``make test-fast`` also leaves out the ones that
are ``slow`` (end to end), ``trains`` (training steps), ``server`` (a real server or browser) or
``converts`` (SavedModel / TFLite / MLflow model export). A test gets a marker

- by hand: ``@pytest.mark.trains`` (or a module's ``pytestmark``), or
- from a fixture it uses (directly or through other fixtures) that does the work, when that
  fixture's function is decorated with :func:`gives` (``tests/conftest.py`` adds the markers at
  collection).

While a test runs, :data:`GUARDS` (installed by ``tests/conftest.py``) make the work itself check
the marker: starting an mlflow server, PostgreSQL, the GCS emulator or chromium needs ``server``,
a training step of the trainer needs ``trains``, writing a SavedModel or an MLflow model needs
``converts``. An unmarked test doing one of them fails with :class:`UnmarkedWork`, so
``make test-fast`` cannot silently grow them again. (Work in a subprocess, e.g. ``ddsp-train`` run
as a command, is not seen: such tests are marked by hand.)
"""

from __future__ import annotations

import functools
import importlib

#: Every marker ``make test-fast`` deselects (the Makefile's expression is built from the same
#: names; tests/test_markers.py checks they agree).
FAST_DESELECTS = ('slow', 'worker_env', 'trains', 'server', 'converts')

#: (module, attribute path, marker, what it does): the calls that need the marker while a test runs.
GUARDS = (
    ('tests.trainer.mlflow_server', 'MlflowServer.start', 'server', 'starts an mlflow server'),
    ('tests.postgres_server', 'PostgresServer.start', 'server', 'starts PostgreSQL'),
    ('tests.gcs_emulator', 'GcsEmulator.__enter__', 'server', 'starts the GCS emulator'),
    ('selenium.webdriver', 'Chrome.__init__', 'server', 'starts a browser'),
    ('trainer.training.loop', 'Trainer.train_step', 'trains', 'runs a training step'),
    ('tensorflow', 'saved_model.save', 'converts', 'writes a SavedModel'),
    ('mlflow.pyfunc', 'save_model', 'converts', 'writes an MLflow model'),
    ('mlflow.pyfunc', 'log_model', 'converts', 'logs an MLflow model'),
)

#: The test now running (set by tests/conftest.py around each test's setup, call and teardown).
running = None


class UnmarkedWork(AssertionError):
    """A test did work that its markers do not declare."""


def gives(*markers: str):
    """Decorator for a fixture's function (put it below ``@pytest.fixture``): every test that uses
    the fixture gets ``markers``."""

    def decorate(func):
        func.test_markers = tuple(getattr(func, 'test_markers', ())) + markers
        return func

    return decorate


def fixture_markers(item) -> set[str]:
    """The markers that the fixtures ``item`` uses (directly or not) give it."""
    info = getattr(item, '_fixtureinfo', None)
    found = set()
    for definitions in (info.name2fixturedefs.values() if info else ()):
        for definition in definitions:
            found.update(getattr(definition.func, 'test_markers', ()))
    return found


def require(marker: str, what: str) -> None:
    """Raise :class:`UnmarkedWork` if the running test lacks ``marker``."""
    item = running
    if item is not None and item.get_closest_marker(marker) is None:
        raise UnmarkedWork(f'{item.nodeid} {what} but is not marked {marker!r}: add '
                           f'@pytest.mark.{marker} (or tests.markers.gives({marker!r}) on the '
                           'fixture that does it); see tests/markers.py')


def _guarded(func, marker: str, what: str):
    @functools.wraps(func)
    def guarded(*args, **kwargs):
        require(marker, what)
        return func(*args, **kwargs)

    guarded.unguarded = func
    return guarded


_installed = False


def install_guards() -> None:
    """Wrap every call in :data:`GUARDS` with :func:`require` (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    for module, path, marker, what in GUARDS:
        *owners, name = path.split('.')
        owner = importlib.import_module(module)
        for part in owners:
            owner = getattr(owner, part)
        func = getattr(owner, name)
        if not hasattr(func, 'unguarded'):
            setattr(owner, name, _guarded(func, marker, what))
