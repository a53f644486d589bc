"""Shared test set-up: quiet TensorFlow and deterministic seeds."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    import tensorflow as tf

    tf.random.set_seed(0)
    yield
