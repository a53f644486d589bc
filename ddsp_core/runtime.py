"""Process set-up shared by the command-line tools: a quiet TensorFlow start and a one-line
description of the devices in use.

TensorFlow's native start-up lines ("oneDNN custom operations are on", "Could not find cuda
drivers", "failed call to cuInit: INTERNAL: CUDA error" on every machine without a GPU...) are
written by C++ code before any log level applies, so :func:`import_tensorflow` captures the
process's standard error while TensorFlow loads and finds its devices, and shows what it caught
only when asked (``verbose``, or ``DDSP_VERBOSE=1`` in the environment, which worker processes
inherit) or when loading fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from typing import Iterator

VERBOSE_ENV = 'DDSP_VERBOSE'
_started = False


def verbose_requested() -> bool:
    """Whether ``DDSP_VERBOSE`` asks for TensorFlow's and Beam's own start-up output."""
    return os.environ.get(VERBOSE_ENV, '').strip().lower() in ('1', 'true', 'yes', 'on')


def set_verbose(verbose: bool) -> None:
    """Record the choice in the environment, so that worker processes make the same one."""
    if verbose:
        os.environ[VERBOSE_ENV] = '1'
    else:
        os.environ.pop(VERBOSE_ENV, None)
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


LOG_FORMAT = '%(levelname)s %(name)s: %(message)s'


def configure_cli(verbose: bool, quiet_loggers: tuple[str, ...] = ()) -> None:
    """What every console script does first: record ``--verbose`` for worker processes
    (:func:`set_verbose`), log warnings (info with ``verbose``) to stderr in one format, and,
    unless ``verbose``, keep the named libraries' loggers to errors (e.g. ``'apache_beam'``)."""
    import logging

    set_verbose(verbose)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)
    if not verbose:
        for name in quiet_loggers:
            logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def captured_native_stderr(enabled: bool = True) -> Iterator[None]:
    """Send file descriptor 2 (native code's standard error) to a temporary file for the
    duration; replay it if the block raises. A no-op when ``enabled`` is false or stderr has no
    file descriptor (some test runners)."""
    if not enabled:
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            sink.seek(0)
            sys.stderr.write(sink.read().decode('utf-8', 'replace'))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)


def import_tensorflow(verbose: bool | None = None):
    """Import TensorFlow and let it find its devices, without its start-up noise unless
    ``verbose`` (default: :func:`verbose_requested`). Returns the ``tensorflow`` module."""
    global _started
    if verbose is None:
        verbose = verbose_requested()
    if not verbose:
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    quiet = not verbose and not _started and 'tensorflow' not in sys.modules
    with captured_native_stderr(quiet):
        import tensorflow as tf

        tf.config.list_physical_devices()
    _started = True
    return tf


def describe_devices() -> str:
    """'CPU (2 cores)' or '2 GPUs: NVIDIA H200, NVIDIA H200' - what TensorFlow computes on."""
    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices('GPU')
    if not gpus:
        return f'CPU ({os.cpu_count() or 1} cores, no GPU found)'
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get('device_name',
                                                                           gpu.name))
        except Exception:  # noqa: BLE001 - a description must never fail a run
            names.append(gpu.name)
    return f'{len(gpus)} GPU{"s" if len(gpus) > 1 else ""}: {", ".join(names)}'


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that shows each option's default where there is one to show (not for
    required options, flags that are off, empty lists or None)."""

    def _get_help_string(self, action):
        text = action.help or ''
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS or (
            isinstance(default, (list, tuple)) and not default)
        if '%(default)' in text or unset or action.required or not action.option_strings:
            return text
        return text + ' (default: %(default)s)'
