"""A real ``mlflow server`` subprocess for tests (sqlite backend, local proxied artifacts).

Usage in a test module::

    from tests.trainer.mlflow_server import mlflow_server

    @pytest.fixture(scope='module')
    def tracking_uri(tmp_path_factory):
        yield from mlflow_server(tmp_path_factory)

or, to control the server (e.g. kill it mid-run)::

    with MlflowServer(tmp_path) as server:
        ... server.uri ... server.kill()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = ['MlflowServer', 'free_port', 'mlflow_executable', 'mlflow_server']


def mlflow_executable() -> str:
    """The ``mlflow`` console script of the running interpreter's environment."""
    path = Path(sys.executable).parent / 'mlflow'
    if not path.exists():
        raise FileNotFoundError(f'mlflow executable not found next to {sys.executable}: {path}')
    return str(path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with ``sqlite:///<root>/mlflow.db`` and artifacts proxied
    to ``<root>/artifacts``; runs in its own process group so it can be stopped whole.

    Args:
        root: Directory for the database, artifacts and ``server.log``.
        startup_timeout_s: How long to wait for ``/health`` (startup takes 10-20 s here).
        backend_store_uri: Another backend store (e.g. ``postgresql://...``) instead of the
            SQLite file.
    """

    def __init__(self, root: str | os.PathLike, startup_timeout_s: float = 120.0,
                 backend_store_uri: str | None = None) -> None:
        self.root = Path(root)
        self.backend_store_uri = backend_store_uri or f'sqlite:///{self.root / "mlflow.db"}'
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path = self.root / 'server.log'

    @property
    def uri(self) -> str:
        if self.port is None:
            raise RuntimeError('server not started')
        return f'http://127.0.0.1:{self.port}'

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        last_error = None
        for _ in range(3):  # the free port may be taken between probing and binding
            try:
                self._start_once(free_port())
                return self
            except RuntimeError as error:
                last_error = error
                self.kill()
        raise RuntimeError(f'mlflow server did not start: {last_error}')

    def _start_once(self, port: int) -> None:
        env = dict(os.environ)
        env.pop('MLFLOW_TRACKING_URI', None)
        env['MLFLOW_SERVER_ENABLE_JOB_EXECUTION'] = 'false'  # no job runner: faster start
        env['MLFLOW_DISABLE_TELEMETRY'] = 'true'
        command = [
            mlflow_executable(), 'server',
            '--backend-store-uri', self.backend_store_uri,
            '--artifacts-destination', str(self.root / 'artifacts'),
            '--host', '127.0.0.1', '--port', str(port), '--workers', '1',
        ]
        self.port = port
        log = open(self.log_path, 'ab')
        try:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.root, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f'exited with code {self.process.returncode}; '
                                   f'log tail:\n{self._log_tail()}')
            if self.healthy():
                return
            time.sleep(0.5)
        raise RuntimeError(f'/health did not answer within {self.startup_timeout_s} s; '
                           f'log tail:\n{self._log_tail()}')

    def restart(self) -> MlflowServer:
        """Start again on the same port with the same store (after :meth:`kill` or
        :meth:`stop`), as a server coming back after an outage."""
        if self.port is None:
            raise RuntimeError('server never started')
        self.kill()
        self._start_once(self.port)
        return self

    def healthy(self) -> bool:
        """True if ``GET /health`` answers 200."""
        try:
            with urllib.request.urlopen(f'{self.uri}/health', timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self, n_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors='replace')[-n_chars:]
        except OSError:
            return '(no log)'

    def _signal_group(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)  # the group this helper created
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the server and its workers at once (simulates a crash)."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL after ``timeout_s``."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        # Workers may outlive the parent; make sure the whole group is gone.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=30)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """Generator for a pytest fixture: starts a server in a fresh tmp dir, yields its URI,
    stops it afterwards."""
    with MlflowServer(tmp_path_factory.mktemp('mlflow-server')) as server:
        yield server.uri
