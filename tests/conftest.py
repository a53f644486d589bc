"""Shared test set-up: quiet TensorFlow, deterministic seeds, and the markers of tests/markers.py
(given by fixtures at collection, checked by the guards while each test runs)."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests import markers  # noqa: E402

#: Every collected test, before ``-m`` deselects any (tests/test_markers.py reads it).
COLLECTED = pytest.StashKey[list]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Runs before ``-m`` deselects: the markers that fixtures give count for the selection."""
    for item in items:
        for name in sorted(markers.fixture_markers(item)):
            if item.get_closest_marker(name) is None:
                item.add_marker(name)
    config.stash[COLLECTED] = list(items)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    markers.install_guards()  # once, before any fixture; here what the imports print is captured


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    markers.running = item
    try:
        return (yield)
    finally:
        markers.running = None


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    import tensorflow as tf

    tf.random.set_seed(0)
    yield
