"""A model directory: what ``ddsp-train`` writes, every other command reads, and nothing else
defines the names of.

- ``config.json``: the resolved :class:`~trainer.model.config.Config` (rates included);
- ``mlflow_run.json``: the MLflow run (id, tracking URI, experiment), so a resumed run appends to
  the same run and eval/transfer/export log beside it;
- ``dataset_manifest.json``: the manifest of the dataset it was trained on;
- ``ckpt-N.*`` checkpoints, ``summaries/``;
- ``mlruns/``: the local fallback MLflow store (``mlflow.db`` and artifacts), used only while the
  tracking server is unreachable;
- ``.lock``: held while a run trains in it.

One run per model directory: the lock is an advisory ``flock`` on ``<model_dir>/.lock``, which the
operating system releases when the process ends however it ends (``kill -9`` included), so a
crashed run can never leave the directory locked. The file records who holds it (host, pid, start
time, command), for the message a second process gets; a record left by a process that is gone is
a *stale* lock, taken over with a warning. The file itself is never deleted (deleting a locked file
would let two processes lock two different files of the same name). Shared filesystems need
working POSIX locks for this to hold across hosts (NFSv4 has them).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path

from ddsp_core.records import Manifest

logger = logging.getLogger(__name__)

CONFIG_FILENAME = 'config.json'
RUN_FILENAME = 'mlflow_run.json'
MANIFEST_FILENAME = 'dataset_manifest.json'
LOCK_FILENAME = '.lock'
#: The local fallback MLflow store's folder, and its database inside it.
FALLBACK_DIRNAME = 'mlruns'
FALLBACK_DB = 'mlflow.db'


class ModelDirError(ValueError):
    """A model directory (or run) without what is needed; the message names it."""


def check_local(model_dir: str | os.PathLike, flag: str = '--model_dir') -> None:
    """A model directory is a local folder: its lock (``flock``), run id and fallback MLflow
    store need a local filesystem. A URL (``gs://...``) is refused here rather than taken as a
    relative path (``Path('gs://b/m')`` is the local folder ``gs:/b/m``)."""
    if '://' in str(model_dir):
        raise ModelDirError(
            f'{flag} {model_dir}: a model directory must be a local folder (its lock, run id '
            'and fallback MLflow store need a local filesystem). Train into a local folder: '
            'its checkpoints are logged to the MLflow run (--model runs:/RUN_ID works '
            'anywhere), and the folder can be copied to a bucket afterwards.')


def read_run_info(model_dir: str | os.PathLike) -> dict:
    """``mlflow_run.json`` (``run_id``, ``tracking_uri``, ``experiment``), or {} when there is
    none; an unreadable one is {} with a warning (a new MLflow run is started)."""
    path = Path(model_dir) / RUN_FILENAME
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, json.JSONDecodeError):
        logger.warning('%s is unreadable; taken as no MLflow run', path)
        return {}


def write_run_info(model_dir: str | os.PathLike, info: dict) -> Path:
    from ddsp_core import runtime

    return runtime.write_atomic(Path(model_dir) / RUN_FILENAME, json.dumps(info) + '\n')


def read_manifest(model_dir: str | os.PathLike) -> Manifest | None:
    """The training dataset's manifest, as the model directory keeps a copy of it (typed: its
    layout, fingerprint, options and statistics), or None for a model trained without one."""
    path = Path(model_dir) / MANIFEST_FILENAME
    return Manifest(json.loads(path.read_text()), str(path)) if path.exists() else None


def write_manifest(model_dir: str | os.PathLike, manifest: Manifest) -> Path:
    from ddsp_core import runtime

    return runtime.write_atomic(Path(model_dir) / MANIFEST_FILENAME,
                                json.dumps(manifest.data, indent=2, sort_keys=True) + '\n')


def fallback_dir(model_dir: str | os.PathLike) -> Path:
    return Path(model_dir) / FALLBACK_DIRNAME


def is_model_file(relative: str) -> bool:
    """Whether a path inside a model directory is part of the model (checkpoints, config,
    manifest, summaries) rather than its run-time state (the fallback store, the lock)."""
    first = relative.strip('/').split('/')[0]
    return first != FALLBACK_DIRNAME and not first.startswith('.')


class ModelDirLocked(RuntimeError):
    """Another process holds the model directory (exit code 2); the message names it."""


def _holder_text(info: dict) -> str:
    parts = [f'pid {info.get("pid", "?")} on {info.get("host", "?")}']
    if info.get('started'):
        parts.append(f'since {info["started"]}')
    text = ' '.join(parts)
    if info.get('command'):
        text += f' ({info["command"]})'
    return text


class ModelDirLock:
    """Exclusive lock of a model directory (which must exist).

    Usable as a context manager. :meth:`acquire` raises :class:`ModelDirLocked` at once if
    another process holds it.
    """

    def __init__(self, model_dir: str | os.PathLike):
        self.model_dir = Path(model_dir)
        self.path = self.model_dir / LOCK_FILENAME
        self._fd: int | None = None
        self.took_over: dict | None = None  # the stale holder's record, if there was one

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _read(self, fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 65536).decode('utf-8', 'replace').strip()
            return json.loads(text) if text else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> ModelDirLock:
        if self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            raise ModelDirLocked(
                f'--model_dir {self.model_dir} is in use by {_holder_text(holder)}; wait for '
                'that run to finish (or stop it), or use another --model_dir') from None
        except OSError as e:
            os.close(fd)
            raise ModelDirLocked(f'--model_dir {self.model_dir}: cannot lock {self.path} '
                                 f'({e.strerror or e}); the filesystem may not support '
                                 'locks') from None
        previous = self._read(fd)
        if previous:
            self.took_over = previous
            logger.warning('%s: took over a stale lock left by %s, which is no longer running '
                           '(it ended without releasing it, e.g. killed)', self.model_dir,
                           _holder_text(previous))
        record = {
            'host': socket.gethostname(), 'pid': os.getpid(),
            'started': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
            'command': ' '.join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + '\n').encode('utf-8'))
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Clear the record and release the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> ModelDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
