"""Process set-up shared by the command-line tools: their opening (:func:`command_parser`,
:func:`open_cli`) and exit codes with one clear line (:func:`usage_error`, :func:`failure`), a
quiet TensorFlow start, a one-line description of the devices in use, files written whole
(:func:`atomic_output`) and the one line that a full disk gets (:func:`disk_full_message`).

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
import errno
import logging
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator

VERBOSE_ENV = 'DDSP_VERBOSE'
#: The console scripts' exit codes: done, failed, bad usage, interrupted (^C).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
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
    set_verbose(verbose)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)
    if not verbose:
        for name in quiet_loggers:
            logging.getLogger(name).setLevel(logging.ERROR)


def open_cli(parser: argparse.ArgumentParser, argv=None, *, quiet_loggers: tuple[str, ...] = (),
             configure: bool = True, unknown_note: str | None = None,
             tensorflow: bool = False) -> argparse.Namespace | int:
    """The opening every console script shares: parse ``argv`` with ``parser`` and, unless
    ``configure`` is off, :func:`configure_cli` (``--verbose`` where the parser has it).

    Returns the parsed arguments, or the exit code to return at once: 0 after ``--help``, 2 for
    bad usage (argparse has printed the usage and one error line). With ``unknown_note``, the
    options the parser does not know are one error naming them, followed by the note (e.g.
    ``'neither a ddsp-prepare flag nor a Beam pipeline option'``). With ``tensorflow``,
    TensorFlow is then started (:func:`import_tensorflow`, quiet unless ``--verbose``)."""
    try:
        if unknown_note is None:
            args = parser.parse_args(argv)
        else:
            args, unknown = parser.parse_known_args(argv)
            if unknown:
                parser.error(f'unknown option(s) {" ".join(unknown)} ({unknown_note})')
    except SystemExit as e:
        return int(e.code or 0) if isinstance(e.code, (int, type(None))) else 2
    if configure:
        configure_cli(bool(getattr(args, 'verbose', False)), quiet_loggers)
    if tensorflow:
        import_tensorflow()
    return args


def command_parser(prog: str, description: str, epilog: str | None = None, *,
                   allow_abbrev: bool = False) -> argparse.ArgumentParser:
    """A console script's parser: ``--help`` shows the defaults (:class:`HelpFormatter`);
    options are not abbreviated unless ``allow_abbrev`` (ddsp-train's and ddsp-sync's are)."""
    return argparse.ArgumentParser(prog=prog, allow_abbrev=allow_abbrev,
                                   formatter_class=HelpFormatter, description=description,
                                   epilog=epilog)


def usage_error(prog: str, message: object) -> int:
    """Bad usage: the line ``PROG: error: MESSAGE`` on stderr; returns :data:`EXIT_USAGE` (2)."""
    print(f'{prog}: error: {message}', file=sys.stderr)
    return EXIT_USAGE


def failure(prog: str, error: BaseException | str, *,
            hint: str = 'free some space and run again', log: logging.Logger | None = None,
            what: str = 'run', level: int = logging.ERROR) -> int:
    """A run that failed: one line ``PROG: failed: ...`` on stderr; returns :data:`EXIT_FAILED`.

    ``error`` is the message, or the exception: a full disk says so and then ``hint``
    (:func:`disk_full_message`); any other exception is ``TYPE: MESSAGE``, after its traceback
    is logged to ``log`` as ``'WHAT failed'`` at ``level`` (shown at ERROR; DEBUG keeps it for
    ``--verbose`` debugging)."""
    if isinstance(error, BaseException):
        full = disk_full_message(error)
        if full:
            error = f'{full}; {hint}'
        else:
            if log is not None:
                log.log(level, '%s failed', what, exc_info=error)
            error = f'{type(error).__name__}: {error}'
    print(f'{prog}: failed: {error}', file=sys.stderr)
    return EXIT_FAILED


def set_threads(threads: int) -> bool:
    """Run this process's TensorFlow ops on ``threads`` intra-op (and inter-op) threads.

    Only possible before TensorFlow's first op; returns whether the process now runs with that
    many (False: TensorFlow already started with another setting, which is kept)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already initialised in this process
        return tf.config.threading.get_intra_op_parallelism_threads() == threads
    return True


@contextlib.contextmanager
def environ(updates: dict[str, str | None]) -> Iterator[None]:
    """Set (``None``: unset) environment variables for the ``with`` block, then restore each to
    what it was (unset if it was)."""
    saved = {k: os.environ.get(k) for k in updates}
    for key, value in updates.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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


# ---- files that a later step reads --------------------------------------------------------------
def _partial_name(final: Path) -> Path:
    return final.with_name(f'.{final.name}.{os.getpid()}-{secrets.token_hex(3)}.partial')


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` with ``path`` as its file name when it names none (a failed write or flush)."""
    if error.filename is None and error.errno is not None:
        return type(error)(error.errno, error.strerror or os.strerror(error.errno), str(path))
    return error


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = 'w', **open_kwargs) -> Iterator[IO]:
    """Write a file whole or not at all: yields a file open on a temporary name beside ``path``
    (same directory, so the same filesystem; parent directories are created); when the block
    ends without an error the data is flushed to disk and the file renamed onto ``path`` (an
    atomic replace), else the temporary file is removed. A reader, or a process killed
    mid-write, sees the old file or the new one, never a part of one. An ``OSError`` of the
    write (a full disk: ``ENOSPC``) names ``path``.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_name(final)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, final)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise _naming(e, final) from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` with :func:`atomic_output`; returns the path."""
    with atomic_output(path, 'wb') as f:
        f.write(data.encode('utf-8') if isinstance(data, str) else data)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``path`` and move it into place when
    the block ends without an error (removed otherwise). An existing ``path`` is moved aside
    first and deleted after: a kill leaves the old directory (possibly under its aside name,
    ``.NAME.*.old``) or the new one, never a half-written one at ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_name(final)
    partial.mkdir()
    try:
        yield partial
        old = None
        if final.exists():
            old = final.with_name(partial.name[:-len('.partial')] + '.old')
            os.replace(final, old)
        os.replace(partial, final)
        if old is not None and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        elif old is not None:
            old.unlink()
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise _naming(e, final) from e
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


#: errno values that mean the filesystem (or the user's quota) is full.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(error: BaseException) -> str | None:
    """One line for an error caused by a full disk ('no space left on device writing PATH'),
    or None for any other error. Looks through the error's causes, and knows TensorFlow's and
    SQLite's wording (their errors carry no errno)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            where = f' writing {error.filename}' if error.filename else ''
            return f'{os.strerror(error.errno).lower()}{where}'
        text = str(getattr(error, 'message', None) or error)
        for words in ('No space left on device', 'database or disk is full',
                      'Disk quota exceeded'):
            if words in text:  # the line that says so (a runner's error may quote a traceback)
                return next(line.strip() for line in text.splitlines() if words in line)
        error = error.__cause__ or error.__context__
    return None
