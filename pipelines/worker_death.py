"""Worker processes of a local Beam job that die (killed, out of memory) while it runs.

Beam's local runners (the DirectRunner's worker processes, the portable runner's external
pool) neither retry a bundle whose worker died nor, mostly, fail the job: it waits for ever.
:func:`watch_workers`, around a job run in this process, notices a worker whose control stream
broke or whose process ended, records it (:func:`worker_deaths`: pid and signal for the
processes this process started, :func:`register_worker_process`) and answers every instruction
the dead worker holds with an error naming it, so the job fails at once;
:func:`pipelines.runner.run_and_wait` then runs the whole job again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import subprocess
import threading
import time
from typing import Callable, Optional

log = logging.getLogger('pipelines.runner')


@dataclasses.dataclass(frozen=True)
class WorkerDeath:
    """A worker process that went away while the job ran: Beam's worker id, its process id
    and how it ended (None when it is not a process this process started)."""

    worker_id: str
    pid: Optional[int]
    returncode: Optional[int]

    def describe(self) -> str:
        """'worker pid 123 was killed by signal 9 (SIGKILL)', 'worker pid 123 exited with code
        1', or for a worker of unknown process 'worker worker_4 disconnected'."""
        if self.pid is None:
            return f'worker {self.worker_id} disconnected'
        if self.returncode is None:
            return f'worker pid {self.pid} disconnected'
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = 'unknown'
            return f'worker pid {self.pid} was killed by signal {-self.returncode} ({name})'
        return f'worker pid {self.pid} exited with code {self.returncode}'


_watch_lock = threading.Lock()
_watching = [0]  # how many watch_workers() contexts are open (the patches are shared)
_processes: dict[str, subprocess.Popen] = {}  # worker id -> its process, as started here
_connections: dict[str, object] = {}  # worker id -> Beam's control connection to it
_lost: dict[str, WorkerDeath] = {}  # worker id -> its death
_deaths: list[WorkerDeath] = []  # every death seen while watching, in order
_lose_lock = threading.Lock()


def register_worker_process(worker_id: str, process: subprocess.Popen) -> None:
    """Tell :func:`watch_workers` which process runs Beam's worker ``worker_id`` (for a worker
    pool started in this process; the DirectRunner's workers are registered as they start)."""
    _processes[worker_id] = process


def worker_deaths() -> list[WorkerDeath]:
    """Every worker death seen so far in this process (oldest first)."""
    return list(_deaths)


def _death_of(worker_id: str) -> WorkerDeath:
    """How worker ``worker_id`` ended: its process's exit status once it is reaped (waiting a
    moment for that: the worker's connection breaks as the kernel closes its sockets, a little
    before its parent learns that it died)."""
    process = _processes.get(worker_id)
    if process is None:
        return WorkerDeath(worker_id, None, None)
    deadline = time.monotonic() + 5.0
    while process.poll() is None and process.returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)  # Beam's own thread may be the one waiting on it (poll() is then None)
    return WorkerDeath(worker_id, process.pid, process.returncode)


def _lose(worker_id: str, in_flight: bool) -> None:
    """Worker ``worker_id`` died (once per worker): record it, log it, and answer every
    instruction in flight on its control connection, and every later one, with an error naming
    it (:func:`_patch_worker_handlers`)."""
    with _lose_lock:
        if worker_id in _lost:
            return
        death = _death_of(worker_id)
        stopped = death.returncode == 0  # it stopped as told (a job's teardown): no death
        if not stopped:
            _lost[worker_id] = death
            _deaths.append(death)
    conn = _connections.get(worker_id)
    pending = list(getattr(conn, '_futures_by_id', ()))
    if not stopped:
        log.warning('%s %s', death.describe(),
                    'with a bundle in flight: failing the job now rather than waiting'
                    if pending or in_flight else 'between bundles: its next bundle fails the job')
    for instruction_id in pending:
        future = conn._futures_by_id.pop(instruction_id, None)
        if future is not None:
            future.set(_answer(instruction_id, death))


def _answer(instruction_id: str, death: WorkerDeath):
    """A worker's answer to an instruction: failed, because the worker died."""
    from apache_beam.portability.api import beam_fn_api_pb2

    return beam_fn_api_pb2.InstructionResponse(
        instruction_id=instruction_id,
        error=f'{death.describe()} (Beam worker {death.worker_id}) with this instruction in '
              'flight')


class _Subprocess:
    """``subprocess`` for Beam's local job service (which starts the DirectRunner's worker
    processes): each worker started as the shell's own process (``exec``), so that its pid is
    the worker's and its exit status says which signal ended it, and registered by its
    ``WORKER_ID``."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(command, *args, shell=False, env=None, **kwargs):  # noqa: N802 - subprocess's name
        if shell and isinstance(command, str) and not command.startswith('exec '):
            command = 'exec ' + command
        process = subprocess.Popen(command, *args, shell=shell, env=env, **kwargs)
        worker_id = (env or {}).get('WORKER_ID')
        if worker_id:
            register_worker_process(worker_id, process)
        return process


def _watch_processes(stop: threading.Event, every: float = 0.2) -> None:
    """Until ``stop``: a worker process started here that ends with a signal or an error code
    is lost (:func:`_lose`), whether or not it ever reached its control connection."""
    while not stop.wait(every):
        for worker_id, process in list(_processes.items()):
            code = process.returncode if process.returncode is not None else process.poll()
            if code and worker_id not in _lost:
                _lose(worker_id, in_flight=False)


def _patch_worker_handlers():
    """Patch Beam's runner side of the control plane (``worker_handlers``) -> the undo.

    Beam's ``ControlConnection`` reads a worker's answers on a thread; when the worker's
    process dies, that stream breaks and the instructions in flight (the bundle it was
    processing) are never answered, so the job waits for ever. Patched, the broken stream, or
    the worker's process ending with a signal or an error code (watched on a thread), answers
    each of them with an error naming the dead worker, as a worker answers a bundle that
    failed: the runner then fails the job, which :func:`run_and_wait` runs again. An
    instruction sent to the dead worker later is answered the same way at once."""
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.portability.fn_api_runner import worker_handlers as wh
    from apache_beam.runners.worker import data_plane

    connection, servicer = wh.ControlConnection, wh.BeamFnControlServicer
    real = (connection._read, connection.push, servicer.get_conn_by_worker_id,
            local_job_service.subprocess, threading.excepthook, connection.close)
    before = len(_deaths)

    def died(wait: float = 0.0) -> bool:  # whether a worker died since the patches were made
        deadline = time.monotonic() + wait
        while len(_deaths) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(_deaths) > before

    def read(self):
        broke = False
        try:
            real[0](self)
        except Exception:  # noqa: BLE001 - grpc.RpcError: the worker's end of the stream broke
            broke = True
        if broke or self._futures_by_id:  # else the worker stopped when told to
            _lose(getattr(self, '_ddsp_worker_id', '?'), in_flight=bool(self._futures_by_id))

    def push(self, request):
        death = _lost.get(getattr(self, '_ddsp_worker_id', None))
        if death is None or request is servicer._DONE_MARKER:
            return real[1](self, request)
        instruction_id = request.instruction_id or 'control_lost'
        return wh.ControlFuture(instruction_id, _answer(instruction_id, death))

    def get_conn_by_worker_id(self, worker_id):
        conn = real[2](self, worker_id)
        conn._ddsp_worker_id = worker_id
        _connections[worker_id] = conn
        return conn

    def close(self):
        # A job that fails early may be closed before every worker has connected: Beam then
        # sends a late worker nothing, so that worker never stops and the job's teardown waits
        # for it for ever. Queued here, the stop is the first thing a late worker is told.
        if self._state == servicer.UNSTARTED_STATE:
            self._push_queue.put(servicer._DONE_MARKER)
        real[5](self)

    def excepthook(hook_args):
        # Beam's threads that wait on a worker process or read its data raise when it dies;
        # the death is reported by _lose (and run_and_wait), not as threads' tracebacks
        name = hook_args.thread.name if hook_args.thread is not None else ''
        if name in ('run_worker', 'read_grpc_client_inputs') and died(wait=2.0):
            return
        real[4](hook_args)

    def quiet(record):
        # the data stream of a worker that died breaks too: Beam logs that with a traceback
        # (and again when it closes the worker's handler); the death is reported by _lose
        return not (record.getMessage().startswith(
            ('Failed to read inputs in the data plane', 'Error closing worker_handler'))
            and died(wait=2.0))

    logs = [logging.getLogger(module.__name__) for module in (data_plane, wh)]
    connection._read, connection.push, connection.close = read, push, close
    servicer.get_conn_by_worker_id = get_conn_by_worker_id
    local_job_service.subprocess = _Subprocess()
    threading.excepthook = excepthook
    for logger in logs:
        logger.addFilter(quiet)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_processes, args=(stop,), daemon=True,
                               name='ddsp-watch-workers')
    watcher.start()

    def undo():
        stop.set()
        watcher.join()
        (connection._read, connection.push, servicer.get_conn_by_worker_id,
         local_job_service.subprocess, threading.excepthook, connection.close) = real
        for logger in logs:
            logger.removeFilter(quiet)
        _processes.clear()
        _connections.clear()

    return undo


_undo: list[Callable[[], None]] = []


@contextlib.contextmanager
def watch_workers():
    """While open: a Beam job run by this process (the DirectRunner's, or a job service's
    started here) fails as soon as one of its worker processes dies with a bundle in flight
    (killed, out of memory), instead of waiting for the bundle for ever; the death is in
    :func:`worker_deaths` (worker pid and signal, for the workers this process started).
    Re-entrant: the patches are made by the first context and undone by the last."""
    with _watch_lock:
        if _watching[0] == 0:
            _undo.append(_patch_worker_handlers())
        _watching[0] += 1
    try:
        yield
    finally:
        with _watch_lock:
            _watching[0] -= 1
            if _watching[0] == 0:
                _undo.pop()()
