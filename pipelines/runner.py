"""Where ``ddsp-prepare``, ``ddsp-eval --runner`` and ``ddsp-sweep`` meet their Beam runner.

- :func:`open_beam_cli`: the commands' opening. Beam's pipeline options are told from the
  command's own flags by Beam's own option definitions (every ``PipelineOptions`` subclass Beam
  knows, so any Beam option, with or without a value, in any spelling: ``--runner X`` or
  ``--runner=X``, before or after the command's flags and its positional arguments); an option
  neither knows is one usage error (exit 2).
- :func:`is_local_runner`, :func:`with_local_default`, :func:`local_worker_threads`: the local
  runner (Beam's DirectRunner, by default multi-process) and how the machine's cores are shared
  between its worker processes.
- :func:`run_and_wait`: run a pipeline to the end, the local runner's gRPC servers on loopback
  only (:func:`loopback_only_servers`) and, on a machine with GPUs, each local worker process
  given its own of them (:func:`local_gpus` in the launcher, :func:`claim_worker_gpus` in the
  worker before TensorFlow starts) instead of every process claiming all of them; a worker
  process that dies fails the job at once (:func:`watch_workers`) and the whole job is run
  again, ``--job_retries`` times at most (:class:`JobOptions`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Optional, Sequence, Union

from apache_beam import Pipeline
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from ddsp_core import runtime

#: Runners that run the job on this machine (their workers are this machine's processes).
LOCAL_RUNNERS = ('DirectRunner', 'BundleBasedDirectRunner', 'SwitchingDirectRunner',
                 'FnApiRunner', 'PrismRunner')
#: Local runners whose ``--direct_running_mode multi_processing`` starts worker processes.
_MULTI_PROCESS_RUNNERS = ('DirectRunner', 'BundleBasedDirectRunner', 'SwitchingDirectRunner',
                          'FnApiRunner')


#: Set by :func:`local_gpus` for the local worker processes: the directory of their slot locks,
#: and each slot's GPUs ('0,2;1,3': slot 0 gets GPUs 0 and 2, slot 1 GPUs 1 and 3).
WORKER_SLOTS_ENV = 'DDSP_WORKER_SLOTS'
WORKER_GPUS_ENV = 'DDSP_WORKER_GPUS'

log = logging.getLogger(__name__)


class BeamArgsError(ValueError):
    """A Beam pipeline option written without the value it needs."""


#: How many times a job whose worker process died is run again (``--job_retries``).
DEFAULT_JOB_RETRIES = 1
JOB_RETRIES_HELP = (
    'run the whole job again, up to this many times, when one of its worker processes dies '
    '(killed, out of memory) on a runner that runs the job in this process (the DirectRunner; '
    'a Beam job service started here); the dead worker\'s pid and signal are logged. The '
    'outputs are written whole or not at all, so a job run again writes the bytes of an '
    'undisturbed run. 0: fail at once (exit 1)')


def _retries(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text!r} is not a count of retries (0, 1, 2, ...)')
    return value


class JobOptions(PipelineOptions):
    """``--job_retries``: a Beam pipeline option of ours, so that it travels with the job's
    options to :func:`run_and_wait` whichever command or function built the job."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument('--job_retries', type=_retries, default=DEFAULT_JOB_RETRIES,
                            help=JOB_RETRIES_HELP)


# ---- the command line -------------------------------------------------------------------------
def beam_option_actions() -> dict[str, argparse.Action]:
    """Every long option Beam's ``PipelineOptions`` know (the subclasses imported so far, as
    Beam itself parses them), by option string -> its argparse action."""
    parsers = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)
    return {name: action for action in parsers[0]._actions for name in action.option_strings
            if name.startswith('--') and name != '--help'}


def _is_option(token: str) -> bool:
    """Whether argparse takes ``token`` for an option rather than a value (``-1`` is a value)."""
    if not token.startswith('-') or token == '-':
        return False
    try:
        float(token)
        return False
    except ValueError:
        return True


def split_beam_args(argv: Sequence[str], parser: argparse.ArgumentParser
                    ) -> tuple[list[str], list[str]]:
    """``argv`` -> (the command's own arguments, Beam's pipeline options).

    A token is Beam's when it is a Beam option the command does not define itself (the
    command's own flags win, e.g. ``ddsp-sweep --experiment``; Beam's is ``--experiments``);
    a Beam option that takes a value and is written without ``=`` takes the next token with it.
    Everything else (the command's flags, positionals, unknown options) stays the command's.

    Raises:
        BeamArgsError: a Beam option that needs a value is last or followed by an option.
    """
    own_flags = set(parser._option_string_actions)
    beam = beam_option_actions()
    tokens = [str(a) for a in argv]
    own: list[str] = []
    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == '--':
            own.extend(tokens[i:])
            break
        name, eq, _ = token.partition('=')
        action = beam.get(name) if token.startswith('--') and name not in own_flags else None
        i += 1
        if action is None:
            own.append(token)
            continue
        out.append(token)
        if eq or action.nargs == 0:
            continue
        if i < len(tokens) and not _is_option(tokens[i]):
            out.append(tokens[i])
            i += 1
        elif action.nargs != '?':
            raise BeamArgsError(f'{name} needs a value (it is a Beam pipeline option: '
                                f'{name} VALUE or {name}=VALUE)')
    return own, out


def open_beam_cli(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None, *,
                  configure: bool = True, quiet_loggers: tuple[str, ...] = ('apache_beam',)
                  ) -> tuple[argparse.Namespace, list[str]] | int:
    """The opening of a command that takes Beam options: :func:`split_beam_args`, then
    :func:`ddsp_core.runtime.open_cli` on the command's own part (an option neither the command
    nor Beam knows is a usage error naming it).

    ``--job_retries`` (:class:`JobOptions`) is added to the command's flags, so that its --help
    shows it, and handed on to Beam's options (it is not in the returned ``args``).

    The launcher's own TensorFlow (reading the dataset, the sweep's summary, an in-process
    evaluation) takes GPU memory as it needs it (``TF_FORCE_GPU_ALLOW_GROWTH``, unless set)
    rather than all of every GPU its local workers are to share.

    Returns ``(args, beam_args)``, or the exit code to return at once (0 ``--help``, 2 usage).
    """

    os.environ.setdefault('TF_FORCE_GPU_ALLOW_GROWTH', 'true')
    argv = sys.argv[1:] if argv is None else argv
    if '--job_retries' not in parser._option_string_actions:  # in --help; handed on to Beam
        parser.add_argument('--job_retries', type=_retries, default=DEFAULT_JOB_RETRIES,
                            metavar='N', help=JOB_RETRIES_HELP)
    try:
        own, beam_args = split_beam_args(argv, parser)
    except BeamArgsError as e:
        try:
            parser.error(str(e))
        except SystemExit:
            return 2
    args = runtime.open_cli(parser, own, quiet_loggers=quiet_loggers, configure=configure,
                            unknown_note=f'neither a {parser.prog} flag nor a Beam pipeline '
                                         'option; see --help')
    if isinstance(args, int):
        return args
    retries = vars(args).pop('job_retries')
    if retries != DEFAULT_JOB_RETRIES:  # Beam's options have the default themselves
        beam_args.append(f'--job_retries={retries}')
    return args, beam_args


# ---- the local runner -------------------------------------------------------------------------
def runner_name(options: PipelineOptions) -> Optional[str]:
    """The runner the options name (a name, or a runner class's or object's name), or None."""
    runner = options.view_as(StandardOptions).runner
    if runner is None or isinstance(runner, str):
        return runner
    return getattr(runner, '__name__', None) or type(runner).__name__


def is_local_runner(options: PipelineOptions) -> bool:
    """Whether the job runs on this machine (no runner named: Beam's default DirectRunner)."""
    name = runner_name(options)
    return name is None or name in LOCAL_RUNNERS


def with_local_default(pipeline_args: Sequence[str], workers: Optional[int] = None
                       ) -> list[str]:
    """``pipeline_args``, plus Beam's DirectRunner in multi-process mode when they name no
    runner: ``workers`` processes, or when None the ``--direct_num_workers`` given (default 0:
    one per core)."""
    args = list(pipeline_args)
    if runner_name(PipelineOptions(args)) is not None:
        return args
    extra = ['--runner=DirectRunner', '--direct_running_mode=multi_processing']
    given = any(a == '--direct_num_workers' or a.startswith('--direct_num_workers=')
                for a in args)
    if workers is not None or not given:
        extra.append(f'--direct_num_workers={workers or 0}')
    return args + extra


def local_worker_count(options: PipelineOptions) -> Optional[int]:
    """Worker processes of a multi-process local run (``--direct_num_workers``, 0 meaning one
    per core); None when the job does not run in local worker processes."""
    if runner_name(options) not in (None, *_MULTI_PROCESS_RUNNERS):
        return None
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != 'multi_processing':
        return None
    return direct.direct_num_workers or (os.cpu_count() or 1)


def local_worker_threads(options: PipelineOptions) -> Optional[int]:
    """TensorFlow threads per worker of a multi-process local run (cores / workers), so that the
    workers do not oversubscribe the cores; None for other runners and modes."""
    workers = local_worker_count(options)
    if workers is None:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


def describe_runner(pipeline_args: Sequence[str]) -> str:
    """'the local DirectRunner, N cores', or the runner's name."""
    name = runner_name(PipelineOptions(list(pipeline_args)))
    if name in (None, 'DirectRunner'):
        return f'the local DirectRunner, {os.cpu_count() or 1} cores'
    return name


@contextlib.contextmanager
def loopback_only_servers():
    """Make the local runner's gRPC servers listen on the loopback interface instead of all
    interfaces, where Beam puts them: the control, data, state and logging planes between the
    runner and its worker processes (``worker_handlers``) and each worker's logging server
    (``local_job_service``). The workers reach them at ``localhost`` either way."""
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    modules = (worker_handlers, local_job_service)
    real = [m.grpc for m in modules]
    grpc = real[0]

    class _Server:
        def __init__(self, server):
            self._server = server

        def add_insecure_port(self, address):
            if address.startswith('[::]:'):
                address = 'localhost:' + address[len('[::]:'):]
            return self._server.add_insecure_port(address)

        def __getattr__(self, name):
            return getattr(self._server, name)

    class _Grpc:
        def __getattr__(self, name):
            return getattr(grpc, name)

        @staticmethod
        def server(*args, **kwargs):
            return _Server(grpc.server(*args, **kwargs))

    for module in modules:
        module.grpc = _Grpc()
    try:
        yield
    finally:
        for module, original in zip(modules, real, strict=True):
            module.grpc = original


# ---- one GPU (or several) per local worker ------------------------------------------------------
def visible_gpus(env=None) -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries: that variable's list
    when it is set (CUDA stops at ``-1``), else every GPU the NVIDIA driver reports (none
    without a driver). Asks the driver through NVML, which claims no GPU memory."""
    env = os.environ if env is None else env
    listed = env.get('CUDA_VISIBLE_DEVICES')
    if listed is not None:
        out = []
        for item in (x.strip() for x in listed.split(',')):
            if not item or item == '-1':
                break
            out.append(item)
        return out
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no library: no GPU
        return []


def gpu_assignment(devices: Sequence[str], workers: int) -> list[list[str]]:
    """Each of ``workers`` processes' GPUs, round robin: with at least as many GPUs as workers,
    worker i gets GPUs i, i + workers, ... (each its own); with more workers than GPUs, worker
    i shares GPU i mod N with the others that get it."""
    devices = list(devices)
    if not devices or workers < 1:
        return [[] for _ in range(max(workers, 0))]
    if workers <= len(devices):
        return [devices[i::workers] for i in range(workers)]
    return [[devices[i % len(devices)]] for i in range(workers)]


@contextlib.contextmanager
def local_gpus(options: PipelineOptions):
    """While a multi-process local job runs: tell its worker processes (through the environment
    they inherit) which GPUs each slot gets (:func:`gpu_assignment`); yields the table, or None
    when there is nothing to split (no GPU, not several local workers)."""
    workers = local_worker_count(options)
    devices = visible_gpus()
    if not devices or not workers or workers < 2:
        yield None
        return
    table = gpu_assignment(devices, workers)
    with tempfile.TemporaryDirectory(prefix='ddsp-worker-slots-') as slots, runtime.environ({
            WORKER_SLOTS_ENV: slots,
            WORKER_GPUS_ENV: ';'.join(','.join(gpus) for gpus in table)}):
        yield table


_held_slots: list[int] = []  # slot lock files held open for the life of the worker process
_claimed: dict[str, Optional[list[str]]] = {}


def _claim_slot(directory: str, count: int) -> int:
    """The lowest free slot of ``count`` (an exclusive lock on its file, held while this process
    lives: a worker that dies frees its slot for the one that replaces it); when every slot is
    held, the process id's slot (shared)."""
    import fcntl

    for index in range(count):
        fd = os.open(os.path.join(directory, f'slot-{index}'), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _held_slots.append(fd)
        return index
    return os.getpid() % count


def claim_worker_gpus(env=None) -> Optional[list[str]]:
    """In a local worker process, before TensorFlow starts: take a free slot of those
    :func:`local_gpus` announced and make its GPUs the only ones this process sees
    (``CUDA_VISIBLE_DEVICES``), with memory growth (``TF_FORCE_GPU_ALLOW_GROWTH``), so that
    processes sharing a GPU do not each reserve all its memory. Returns the GPUs (once per
    process; later calls return the same), or None outside such a job."""
    env = os.environ if env is None else env
    if 'gpus' in _claimed:
        return _claimed['gpus']
    slots, table = env.get(WORKER_SLOTS_ENV), env.get(WORKER_GPUS_ENV)
    if not slots or table is None:
        return None
    groups = [g.split(',') if g else [] for g in table.split(';')]
    gpus = groups[_claim_slot(slots, len(groups))]
    if 'tensorflow' in sys.modules and _tensorflow_started():
        log.warning('TensorFlow already started in this worker: it keeps every GPU instead of '
                    '%s', ','.join(gpus))
    env['CUDA_VISIBLE_DEVICES'] = ','.join(gpus) if gpus else '-1'
    env['TF_FORCE_GPU_ALLOW_GROWTH'] = 'true'
    _claimed['gpus'] = gpus
    return gpus


def _tensorflow_started() -> bool:

    return bool(getattr(runtime, '_started', False))


# ---- worker processes that die ---------------------------------------------------------------
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


def _done(state) -> bool:
    return str(state) in ('DONE', 'PipelineState.DONE')


def _run_once(pipeline):
    """Run ``pipeline`` once -> (result, state), or (None, None) when the runner only built
    it (``--dry_run``)."""
    options = pipeline.options
    local = is_local_runner(options)
    with loopback_only_servers() if local else contextlib.nullcontext(), local_gpus(options):
        result = pipeline.run()
        if result is None or options.view_as(TestOptions).dry_run:
            return None, None
        return result, result.wait_until_finish()


def run_and_wait(pipeline: Union[Pipeline, Callable[[], Pipeline]],
                 what: str = 'pipeline', error: type[Exception] = RuntimeError):
    """Run a pipeline to the end (a local runner's servers on loopback only), run again when
    one of its worker processes died.

    Args:
        pipeline: the pipeline, or a function that builds it (called again for each attempt,
            e.g. to plan what is left to do).
        what: how error messages name the job.
        error: the exception raised when the job fails.

    A worker that dies (:func:`watch_workers`) fails the attempt at once; the whole job is run
    again, up to ``--job_retries`` times (:class:`JobOptions`), with a warning naming the dead
    worker's pid and signal. Failures of other kinds are not retried.

    Returns:
        The PipelineResult, or None when the runner only built the job (``--dry_run``).

    Raises:
        ``error``: the job ended in a state other than DONE ("<what> finished in state ..."),
        or a worker died in every attempt.
    """
    build = pipeline if callable(pipeline) else (lambda: pipeline)
    attempt = 0
    while True:
        job = build()
        retries = job.options.view_as(JobOptions).job_retries
        attempt += 1
        seen = len(_deaths)
        result = state = failure = None
        with watch_workers():
            try:
                result, state = _run_once(job)
            except Exception as e:  # noqa: BLE001 - a dead worker's job fails as it can
                failure = e
        deaths = _deaths[seen:]
        if not deaths or (failure is None and (result is None or _done(state))):
            if failure is not None:
                raise failure
            if result is None:
                return None
            if not _done(state):
                raise error(f'{what} finished in state {state}')
            return result
        dead = '; '.join(d.describe() for d in deaths)
        if attempt > retries:
            raise error(f'{what} failed: {dead} (attempt {attempt} of {retries + 1}, '
                        f'--job_retries {retries})') from failure
        log.warning('%s: %s; running the whole job again (attempt %d of %d, --job_retries %d)',
                    what, dead, attempt + 1, retries + 1, retries)
