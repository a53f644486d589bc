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
import logging
import os
import sys
import tempfile
from typing import Callable, Optional, Sequence, Union

from apache_beam import Pipeline
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from ddsp_core import runtime
from pipelines import worker_death
from pipelines.worker_death import (  # noqa: F401 - the runner's API, kept where it was
    WorkerDeath,
    register_worker_process,
    watch_workers,
    worker_deaths,
)

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
                  configure: bool = True, quiet_loggers: tuple[str, ...] = ('apache_beam',),
                  start_trainer: bool = False) -> tuple[argparse.Namespace, list[str]] | int:
    """The opening of a command that takes Beam options: :func:`split_beam_args`, then
    :func:`ddsp_core.runtime.open_cli` on the command's own part (an option neither the command
    nor Beam knows is a usage error naming it).

    ``--job_retries`` (:class:`JobOptions`) is added to the command's flags, so that its --help
    shows it, and handed on to Beam's options (it is not in the returned ``args``).

    The launcher's own TensorFlow (reading the dataset, the sweep's summary, an in-process
    evaluation) takes GPU memory as it needs it (``TF_FORCE_GPU_ALLOW_GROWTH``, unless set)
    rather than all of every GPU its local workers are to share. With ``start_trainer`` (a
    command that runs the trainer's code in this process too), TensorFlow is started quietly
    and MLflow's start-up lines are kept out (unless ``--verbose``).

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
                                         'option; see --help', tensorflow=start_trainer)
    if isinstance(args, int):
        return args
    retries = vars(args).pop('job_retries')
    if retries != DEFAULT_JOB_RETRIES:  # Beam's options have the default themselves
        beam_args.append(f'--job_retries={retries}')
    if start_trainer:
        from trainer.tracking.store import quiet_mlflow_logging

        quiet_mlflow_logging(args.verbose)
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
        seen = len(worker_death.worker_deaths())
        result = state = failure = None
        with worker_death.watch_workers():
            try:
                result, state = _run_once(job)
            except Exception as e:  # noqa: BLE001 - a dead worker's job fails as it can
                failure = e
        deaths = worker_death.worker_deaths()[seen:]
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
