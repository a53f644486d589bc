"""One run per model directory: an exclusive lock held for the run's lifetime.

The lock is an advisory ``flock`` on ``<model_dir>/.lock``, which the operating system releases
when the process ends however it ends (``kill -9`` included), so a crashed run can never leave
the directory locked. The file records who holds it (host, pid, start time, command), for the
message a second process gets; a record left by a process that is gone is a *stale* lock, taken
over with a warning. The file itself is never deleted (deleting a locked file would let two
processes lock two different files of the same name). Shared filesystems need working POSIX
locks for this to hold across hosts (NFSv4 has them).
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

logger = logging.getLogger(__name__)

LOCK_FILENAME = '.lock'


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
