"""A real, throw-away PostgreSQL server for tests (Debian's ``postgresql``, installed by
``tools/install_postgres.sh``, which ``make test`` runs).

Usage in a test module::

    from tests.postgres_server import PostgresServer

    @pytest.fixture(scope='module')
    def postgres():
        with PostgresServer() as server:
            yield server

    server.create_database('optuna')  # -> 'postgresql://postgres@127.0.0.1:PORT/optuna'

The data directory is a new temporary directory (removed on stop); the server listens on
127.0.0.1 only, on a free port, with ``fsync`` off (a test database need not survive a crash).
PostgreSQL refuses to run as root: as root the server binaries run as the ``postgres`` user
(Debian's package creates it), else as ``nobody``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.trainer.mlflow_server import free_port

__all__ = ['PostgresServer', 'server_binary']

SUPERUSER = 'postgres'


def server_binary(name: str) -> str:
    """``initdb`` / ``pg_ctl``: on the PATH, or in Debian's /usr/lib/postgresql/<version>/bin
    (the newest version)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f'/usr/lib/postgresql/*/bin/{name}'),
                        key=lambda p: int(Path(p).parts[-3]))
    if not candidates:
        raise FileNotFoundError(f'{name} not found: the PostgreSQL server is not installed '
                                '(bash tools/install_postgres.sh, as `make test` runs)')
    return candidates[-1]


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ('postgres', 'nobody'):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError('running as root, and there is neither a postgres nor a nobody user to '
                       'run the PostgreSQL server as')


class PostgresServer:
    """``initdb`` into a temporary directory and ``pg_ctl start`` on 127.0.0.1:<free port>."""

    def __init__(self, startup_timeout_s: float = 60.0) -> None:
        self.startup_timeout_s = startup_timeout_s
        self.root: Path | None = None
        self.port: int | None = None
        self.user = _unprivileged_user()

    @property
    def data(self) -> Path:
        return self.root / 'data'

    def url(self, database: str = 'postgres') -> str:
        """A plain ``postgresql://`` URL of a database on this server."""
        return f'postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}'

    def _run(self, *command: str, timeout: float = 120) -> None:
        kwargs = {}
        if self.user is not None:
            kwargs = {'user': self.user.pw_uid, 'group': self.user.pw_gid, 'extra_groups': []}
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout,
                                cwd=self.root, stdin=subprocess.DEVNULL, **kwargs)
        if result.returncode != 0:
            raise RuntimeError(f'{" ".join(command)} failed ({result.returncode}):\n'
                               f'{result.stdout[-2000:]}{result.stderr[-2000:]}\n'
                               f'{self._log_tail()}')

    def _log_tail(self) -> str:
        try:
            return (self.root / 'server.log').read_text(errors='replace')[-3000:]
        except OSError:
            return ''

    def start(self) -> PostgresServer:
        self.root = Path(tempfile.mkdtemp(prefix='ddsp-postgres-'))
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._run(server_binary('initdb'), '-D', str(self.data), '-U', SUPERUSER,
                  '--auth=trust', '--encoding=UTF8', '--no-sync')
        last_error = None
        for _ in range(3):  # the free port may be taken between probing and binding
            self.port = free_port()
            options = (f'-c listen_addresses=127.0.0.1 -c port={self.port} '
                       f'-c unix_socket_directories={self.root} -c fsync=off '
                       '-c synchronous_commit=off -c full_page_writes=off '
                       '-c max_connections=200')
            try:
                self._run(server_binary('pg_ctl'), '-D', str(self.data), '-o', options,
                          '-l', str(self.root / 'server.log'), '-w',
                          '-t', str(int(self.startup_timeout_s)), 'start')
                return self
            except RuntimeError as error:
                last_error = error
        self.stop()
        raise RuntimeError(f'PostgreSQL did not start: {last_error}')

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (immediately: the data is thrown away) and remove its directory."""
        if self.root is None:
            return
        if (self.data / 'postmaster.pid').exists():
            try:
                self._run(server_binary('pg_ctl'), '-D', str(self.data), '-m', 'immediate',
                          '-w', 'stop', timeout=60)
            except RuntimeError:
                time.sleep(1)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
