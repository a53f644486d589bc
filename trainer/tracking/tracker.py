"""MLflow tracking for training runs, robust to an unreachable tracking server.

:class:`Tracker` wraps one :class:`mlflow.tracking.MlflowClient` per store (no fluent/global
MLflow state, so several trackers can coexist in one process) and leaves batching, JSON and
figure artifacts and the run's source context to MLflow (``log_batch``, ``log_dict``,
``log_figure``, the context-tag registry). What it adds:

- **a local fallback store.** If the tracking store fails with a connection-type error (at the
  start or mid-run), the tracker warns once and carries on in a local SQLite store under
  ``local_fallback_dir`` (a run there tagged ``ddsp.fallback_for_run_id`` with the original run
  id), so training never stops or hangs because of tracking. While in fallback it probes the
  server every ``probe_interval_s``; once it answers, the fallback run's metrics, artifacts and
  status are copied to the original run (:mod:`trainer.tracking.sync`, without duplicates) and
  logging goes back there. The same copy runs when a later run resumes the original one, or by
  hand with ``ddsp-sync MODEL_DIR``.
- **resume**: :meth:`Tracker.start` with a ``run_id`` appends to that run; params it already has
  are kept (MLflow params are immutable: a changed value is a warning and a
  ``ddsp.param_changed.*`` tag), and :meth:`Tracker.logged_through` tells the trainer which steps
  the run's history already holds, so a replayed step is never logged twice.
- **SQLite stores shared by concurrent runs**: the store's schema is created under a file lock
  (MLflow's migrations race otherwise), and "database is locked" errors are retried.

Browse a fallback store with
``mlflow ui --backend-store-uri sqlite:///<local_fallback_dir>/mlflow.db``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ddsp_core import runtime
from trainer.tracking import artifacts

logger = logging.getLogger(__name__)

__all__ = ['Tracker', 'FALLBACK_TAG', 'FALLBACK_URI_TAG', 'PARAM_CHANGED_TAG_PREFIX',
           'EXPERIMENT_KIND_TAG', 'NOTE_TAG', 'KIND_TAG', 'RUN_KINDS', 'is_training_run',
           'ui_link', 'run_link', 'ui_hint', 'print_run_link']

#: Tag on every run our commands create: what kind of run it is (one of :data:`RUN_KINDS`).
KIND_TAG = 'ddsp.kind'
#: The kinds: a ``ddsp-train`` run, a sweep's parent run, a sweep trial (a training run, child of
#: the parent) and a ``ddsp-compare`` report run. (ddsp-eval, -transfer and -export create no
#: run: they log into the training run of the model they use.)
RUN_KINDS = ('train', 'sweep', 'trial', 'comparison')
#: The kinds whose runs are training runs (``sweep-trial``: trials of sweeps before the kinds).
TRAINING_KINDS = frozenset({'train', 'trial', 'sweep-trial'})
#: A metric every training run logs: a run without a kind tag (logged by a version before the
#: tags) counts as a training run when it has it.
TRAINING_METRIC = 'total_loss'

#: Tag on a fallback run: id of the run on the (unreachable) tracking server it continues.
FALLBACK_TAG = 'ddsp.fallback_for_run_id'
#: Tag on a fallback run: the tracking URI that could not be reached.
FALLBACK_URI_TAG = 'ddsp.fallback_from_uri'
#: Tag on the original run while (and after) part of it went to a fallback store.
CONTINUED_IN_TAG = 'ddsp.continued_in_fallback'
#: Tag on a fallback run closed because its records were copied to the recovered server mid-run
#: (its status is then not the run's: copying it again must not change the server run's status).
CLOSED_BY_RECOVERY_TAG = 'ddsp.fallback_closed_by_recovery'
#: Prefix of tags recording a param whose value changed on resume (MLflow params are immutable).
PARAM_CHANGED_TAG_PREFIX = 'ddsp.param_changed.'
#: Params a resumed run is expected to change (``--steps`` grows): recorded as a
#: ``ddsp.param_changed.*`` tag without a warning.
EXPECTED_TO_CHANGE = frozenset({'run.steps'})
#: MLflow's experiment-kind tag: the UI opens model-training experiments on their runs table.
EXPERIMENT_KIND_TAG = 'mlflow.experimentKind'
EXPERIMENT_KIND = 'custom_model_development'
#: MLflow's description tag (experiments and runs).
NOTE_TAG = 'mlflow.note.content'

try:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
except ImportError:  # pragma: no cover - older/newer layouts
    MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH = 6000, 8000

RUN_END_STATES = ('FINISHED', 'FAILED', 'KILLED')
PROBE_ENV = 'DDSP_TRACKING_PROBE_SECS'
DEFAULT_PROBE_SECS = 60.0
_TRUNCATION_MARK = '...[truncated]'
_SQLITE_LOCKED_RETRIES = 8

# HTTP client settings used for this tracker's requests unless the user set the variable:
# a dead server must be detected in seconds, not after MLflow's default ~4 minutes of retries.
_HTTP_DEFAULTS = {
    'MLFLOW_HTTP_REQUEST_MAX_RETRIES': '2',
    'MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR': '1',
    'MLFLOW_HTTP_REQUEST_BACKOFF_JITTER': '0.5',
    'MLFLOW_HTTP_REQUEST_TIMEOUT': '10',
}
_ENV_LOCK = threading.RLock()

T = TypeVar('T')
_Op = Callable[[Any, str], T]


def is_training_run(run) -> bool:
    """Whether an MLflow run is a training run: its kind is ``train`` or ``trial`` (or
    ``sweep-trial``, as trials were tagged before the kinds), or it has no
    kind tag (an older version logged it) but has the training metric."""
    kind = run.data.tags.get(KIND_TAG)
    if kind is not None:
        return kind in TRAINING_KINDS
    return TRAINING_METRIC in run.data.metrics


#: The query that opens MLflow 3's UI on its model-training view (runs table, run page, run
#: comparison) instead of the GenAI one (traces) it opens by default.
UI_VIEW_QUERY = 'workflowType=machine_learning'
#: Where ``mlflow ui`` serves a local store (its default host and port).
LOCAL_UI = 'http://127.0.0.1:5000'


def _ui_base(tracking_uri: str) -> str:
    uri = str(tracking_uri)
    return uri.rstrip('/') if uri.startswith(('http://', 'https://')) else LOCAL_UI


def ui_link(tracking_uri: str, experiment_id: str | None = None, run_id: str | None = None,
            artifact: str | None = None, compare_run_ids: Sequence[str] | None = None,
            experiment_ids: Sequence[str] | None = None) -> str:
    """A link into MLflow's UI, in its model-training view, for a store: the experiments list,
    an experiment's runs table (``experiment_id``), a run's page (``run_id``), one of its
    artifacts (``artifact``: a path inside the run), or the comparison of runs
    (``compare_run_ids`` of ``experiment_ids``). A server's own address for an ``http(s)``
    store; for a local store, where ``mlflow ui --backend-store-uri URI`` serves it
    (:func:`ui_hint`)."""
    import json
    from urllib.parse import quote

    base = f'{_ui_base(tracking_uri)}/#'
    if compare_run_ids:
        runs = quote(json.dumps(list(compare_run_ids)), safe='')
        experiments = quote(json.dumps(list(experiment_ids or [experiment_id])), safe='')
        return f'{base}/compare-runs?runs={runs}&experiments={experiments}&{UI_VIEW_QUERY}'
    if experiment_id is None:
        return f'{base}/experiments?{UI_VIEW_QUERY}'
    path = f'/experiments/{experiment_id}/runs'
    if run_id:
        path += f'/{run_id}'
        if artifact:
            path += '/artifacts/' + quote(artifact.strip('/'))
    return f'{base}{path}?{UI_VIEW_QUERY}'


def ui_hint(tracking_uri: str, link: str) -> str:
    """``link`` as a user can follow it: as is for a server; for a local store, with the
    command that serves it."""
    if str(tracking_uri).startswith(('http://', 'https://')):
        return link
    return f'{link} (serve the store first: mlflow ui --backend-store-uri {tracking_uri})'


@contextlib.contextmanager
def http_settings(env: Mapping[str, str]) -> Iterator[None]:
    """Temporarily set MLflow's HTTP client variables (``MLFLOW_HTTP_REQUEST_*``: MLflow reads
    them from the environment at each request; there is no per-client setting)."""
    with _ENV_LOCK, runtime.environ(dict(env)):
        yield


def run_link(tracking_uri: str, run_id: str, artifact: str | None = None,
             client=None, runs_table: bool = False) -> str | None:
    """:func:`ui_link` of a run's page (or one of its artifacts, or with ``runs_table`` its
    experiment's runs table), with :func:`ui_hint`; None if the run cannot be read at once (the
    store is unreachable: one try, 5 s at most): a link is never worth a failure or a wait."""
    try:
        with http_settings({'MLFLOW_HTTP_REQUEST_MAX_RETRIES': '0',
                            'MLFLOW_HTTP_REQUEST_TIMEOUT': '5'}):
            client = client or make_client(tracking_uri)
            experiment_id = client.get_run(run_id).info.experiment_id
    except Exception as error:  # noqa: BLE001 - see above
        logger.debug('no link to run %s: %s', run_id, error)
        return None
    if runs_table:
        return ui_hint(tracking_uri, ui_link(tracking_uri, experiment_id))
    return ui_hint(tracking_uri, ui_link(tracking_uri, experiment_id, run_id, artifact))


def print_run_link(prog: str, tracking_uri: str | None, run_id: str,
                   artifact: str | None = None) -> None:
    """Print ``PROG: MLflow run: LINK`` to stderr (:func:`run_link` of the run, or of one of
    its artifacts), or nothing when the store cannot be read at once."""
    import sys

    link = run_link(resolve_tracking_uri(tracking_uri), run_id, artifact)
    if link:
        print(f'{prog}: MLflow run: {link}', file=sys.stderr)


def _stringify(value: object) -> str:
    import json

    if hasattr(value, 'numpy'):
        value = value.numpy()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def _truncate(value: str, limit: int, what: str) -> str:
    if len(value) <= limit:
        return value
    logger.warning('%s is %d characters; MLflow keeps %d, so it is truncated',
                   what, len(value), limit)
    return value[: limit - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK


def _check_name(name: str, suffix: str) -> str:
    """Artifact file name ``<name><suffix>``; rejects empty names and path separators."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f'artifact name must be a non-empty string, got {name!r}')
    if '/' in name or '\\' in name or name in ('.', '..'):
        raise ValueError(f'artifact name {name!r} must be a plain file name (no path separators)')
    return name if name.lower().endswith(suffix) else name + suffix


def _check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise ValueError(f'step must be an integer, got {step!r}')
    return int(step)


def _is_sqlite_locked(error: BaseException) -> bool:
    text = str(error).lower()
    return 'database is locked' in text or 'database table is locked' in text


def is_store_unavailable(error: BaseException) -> bool:
    """True for errors meaning "the tracking store can't be reached / is failing" (use fallback);
    False for errors meaning "this request is wrong" (4xx-type), which are raised to the caller."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        return error.get_http_status_code() >= 500
    try:
        import requests

        if isinstance(error, requests.exceptions.RequestException):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import sqlalchemy.exc

        if isinstance(error, sqlalchemy.exc.OperationalError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(error, (ConnectionError, TimeoutError, OSError))


def quiet_mlflow_logging(verbose: bool = False) -> None:
    """Keep MLflow's informational start-up lines ("Creating initial MLflow database
    tables...") out of a command's normal output. MLflow sets its loggers' levels when it is
    imported, so it is imported here first."""
    import mlflow  # noqa: F401 - configures its loggers on import

    if not verbose:
        for name in ('mlflow', 'alembic'):
            logging.getLogger(name).setLevel(logging.WARNING)


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """The tracking URI to use: the argument, else ``MLFLOW_TRACKING_URI``, else MLflow's own
    default (``sqlite:///<cwd>/mlflow.db``, the store ``mlflow ui`` opens when started in the
    same directory), made absolute so that a later chdir does not move it."""
    if tracking_uri:
        return str(tracking_uri)
    from_env = os.environ.get('MLFLOW_TRACKING_URI')
    if from_env:
        return from_env
    import mlflow

    return mlflow.get_tracking_uri()


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith('sqlite:///'):
        return Path(uri[len('sqlite:///'):])
    return None


@contextlib.contextmanager
def _sqlite_schema_lock(uri: str) -> Iterator[None]:
    """Serialise the first connection to a SQLite store between processes: MLflow creates or
    migrates the schema then, and two processes doing it at once corrupt it (``duplicate column
    name``)."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + '.ddsp-schema.lock', 'a') as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def make_client(uri: str):
    """An ``MlflowClient`` for ``uri`` whose store is ready (schema created under a lock).

    MLflow's own "View run at" lines (printed to stdout when a run on a server ends) are turned
    off: they open the UI's GenAI view, and stdout is our commands' result (ddsp-train's JSON);
    the commands print :func:`ui_link` links instead."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault('MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT', 'true')

    with _sqlite_schema_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        if _sqlite_path(uri) is not None:
            client.search_experiments(max_results=1)  # creates / migrates the schema now
    return client


def ensure_experiment(client, name: str, artifact_location: str | None = None,
                      description: str | None = None) -> str:
    """The id of experiment ``name``, created (as a model-training experiment) if missing.

    Raises:
        ValueError: the experiment exists but is deleted.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        if description:
            tags[NOTE_TAG] = description
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags=tags)
        except MlflowException as error:  # created concurrently (parallel runs)
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise error
    if experiment.lifecycle_stage == 'deleted':
        raise ValueError(
            f'MLflow experiment {name!r} (id {experiment.experiment_id}) in '
            f'{client.tracking_uri} is deleted; restore it (mlflow experiments restore '
            f'--experiment-id {experiment.experiment_id}) or choose another experiment name')
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def log_params_once(client, run_id: str, params: Mapping[str, str],
                    existing: Mapping[str, str]) -> None:
    """Log ``params`` not yet in ``existing``; identical values are skipped, changed ones (MLflow
    params are immutable) become a warning plus a ``ddsp.param_changed.*`` tag."""
    from mlflow.entities import Param, RunTag

    new = [Param(k, v) for k, v in params.items() if k not in existing]
    changed = {k: v for k, v in params.items() if k in existing and existing[k] != v}
    for key, value in changed.items():
        if key in EXPECTED_TO_CHANGE:
            continue
        logger.warning('Run %s: param %r was %r and is now %r; MLflow params cannot change, '
                       'recording the new value as tag %s%s', run_id, key, existing[key],
                       value, PARAM_CHANGED_TAG_PREFIX, key)
    tags = [RunTag(f'{PARAM_CHANGED_TAG_PREFIX}{k}',
                   _truncate(f'{existing[k]} -> {v}', MAX_TAG_VAL_LENGTH, f'tag for {k}'))
            for k, v in changed.items()]
    if new or tags:
        client.log_batch(run_id, params=new, tags=tags)


class Tracker:
    """Log one training run to MLflow, falling back to a local store if the server fails.

    Args:
        tracking_uri: MLflow tracking URI (``http://host:port``, ``sqlite:///path.db``...).
            Default: env ``MLFLOW_TRACKING_URI``, else MLflow's default local store in the
            current directory.
        experiment: Experiment name; created if missing (marked as a model-training experiment).
        local_fallback_dir: Directory of the local fallback store (SQLite ``mlflow.db`` +
            ``artifacts/``), used only if the tracking store fails. Default
            ``<cwd>/mlruns-fallback``; the trainer passes ``<model_dir>/mlruns``.
        http_timeout_s: Per-request timeout for HTTP tracking servers (seconds), unless env
            ``MLFLOW_HTTP_REQUEST_TIMEOUT`` is set.
        http_max_retries: Retries per HTTP request before falling back, unless env
            ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is set.
        probe_interval_s: While in fallback, how often to check whether the server is back
            (default: env ``DDSP_TRACKING_PROBE_SECS``, else 60 s).
        experiment_description: Description of a newly created experiment.
        system_metrics_every_s: Log MLflow's system metrics (``system/*``: CPU, memory, disk,
            network; GPU utilisation and memory where a GPU is) to the run every this many
            seconds, with MLflow's own monitor; 0: off. A last sample is logged when the run
            ends, so short runs have one too. Paused while logging goes to the fallback store.

    Usable as a context manager: the run ends FINISHED, or FAILED if the block raised.
    Methods are thread-safe (one lock per tracker).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = 'ddsp',
        local_fallback_dir: str | os.PathLike | None = None,
        *,
        http_timeout_s: int = 10,
        http_max_retries: int = 2,
        probe_interval_s: float | None = None,
        experiment_description: str | None = None,
        system_metrics_every_s: float = 0.0,
    ) -> None:
        if not isinstance(experiment, str) or not experiment.strip():
            raise ValueError(f'experiment must be a non-empty name, got {experiment!r}')
        self._tracking_uri = resolve_tracking_uri(tracking_uri)
        self._experiment = experiment
        self._experiment_description = experiment_description
        fallback = local_fallback_dir if local_fallback_dir else Path.cwd() / 'mlruns-fallback'
        self._fallback_dir = Path(fallback).expanduser().resolve()
        http = dict(_HTTP_DEFAULTS)
        http['MLFLOW_HTTP_REQUEST_TIMEOUT'] = str(int(http_timeout_s))
        http['MLFLOW_HTTP_REQUEST_MAX_RETRIES'] = str(int(http_max_retries))
        with _ENV_LOCK:
            self._http_env = {k: v for k, v in http.items() if k not in os.environ}
        if probe_interval_s is None:
            probe_interval_s = float(os.environ.get(PROBE_ENV, DEFAULT_PROBE_SECS))
        self._probe_interval_s = float(probe_interval_s)
        self._lock = threading.RLock()
        self._client = None          # primary MlflowClient, created lazily in start()
        self._run_id: str | None = None       # run on the primary store (or the run resumed)
        self._fallback_client = None
        self._fallback_run_id: str | None = None
        self._last_probe = 0.0
        self._started = False
        self._ended = False
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._run_name: str | None = None
        self.fallback_events: list[str] = []  # one line per switch / recovery, for summaries
        self._system_metrics_every_s = float(system_metrics_every_s or 0.0)
        self._system_monitor = None

    # ------------------------------------------------------------------ properties
    @property
    def run_id(self) -> str | None:
        """Id of the run to resume with: the tracking-server run if one exists, else the
        fallback run. None before :meth:`start`."""
        return self._run_id or self._fallback_run_id

    @property
    def active_run_id(self) -> str | None:
        """Id of the run currently written to (the fallback run once :attr:`is_fallback`)."""
        return self._fallback_run_id if self.is_fallback else self._run_id

    @property
    def tracking_uri(self) -> str:
        """The tracking URI in use (argument, env or MLflow default), reachable or not."""
        return self._tracking_uri

    @property
    def fallback_tracking_uri(self) -> str:
        """URI of the local fallback store (``sqlite:///<local_fallback_dir>/mlflow.db``)."""
        return f'sqlite:///{self._fallback_dir / "mlflow.db"}'

    @property
    def fallback_dir(self) -> Path:
        return self._fallback_dir

    @property
    def is_fallback(self) -> bool:
        """True while logging goes to the local fallback store."""
        return self._fallback_run_id is not None

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _http_limits(self, **overrides: str) -> Iterator[None]:
        """Temporarily apply this tracker's HTTP retry/timeout settings (MLflow reads them from
        the environment at each request; there is no per-client setting)."""
        with http_settings({**self._http_env, **overrides}):
            yield

    def _require_running(self) -> None:
        if not self._started:
            raise RuntimeError('Tracker.start() must be called before logging')
        if self._ended:
            raise RuntimeError(f'run {self.run_id} has already ended; start a new Tracker')

    def _primary(self, op: _Op, run_id: str | None = None):
        """``op(client, run_id)`` on the primary store, retrying SQLite lock contention."""
        run_id = run_id or self._run_id
        for attempt in range(_SQLITE_LOCKED_RETRIES + 1):
            try:
                with self._http_limits():
                    return op(self._client, run_id)
            except Exception as error:
                if attempt < _SQLITE_LOCKED_RETRIES and _is_sqlite_locked(error):
                    time.sleep(0.05 * 2 ** attempt)
                    continue
                raise

    def _call(self, op: _Op, what: str) -> T:
        """Run ``op(client, run_id)`` on the primary store, switching to the fallback store the
        first time the primary is unavailable (and back once it answers again)."""
        with self._lock:
            self._require_running()
            if self.is_fallback:
                self._maybe_recover()
            if not self.is_fallback:
                try:
                    return self._primary(op)
                except Exception as error:
                    if not is_store_unavailable(error):
                        raise
                    self._switch_to_fallback(error, what)
            return op(self._fallback_client, self._fallback_run_id)

    def _fallback(self):
        if self._fallback_client is None:
            self._fallback_dir.mkdir(parents=True, exist_ok=True)
            self._fallback_client = make_client(self.fallback_tracking_uri)
        return self._fallback_client

    def _switch_to_fallback(self, error: BaseException, what: str, run_id: str | None = None,
                            run_name: str | None = None) -> None:
        original = run_id or self._run_id
        message = (f'MLflow tracking store {self._tracking_uri} is unavailable ({what} failed: '
                   f'{str(error).splitlines()[0][:300] if str(error) else type(error).__name__})'
                   f'. Logging run {original or "(new run)"} from now on to the local fallback '
                   f'store {self._fallback_dir}; it is copied to the server once that answers '
                   f'again (or with: ddsp-sync MODEL_DIR). Browse it with: mlflow ui '
                   f'--backend-store-uri {self.fallback_tracking_uri}')
        logger.warning('%s', message)
        self.fallback_events.append(f'tracking server unavailable ({what}); logging to '
                                    f'{self._fallback_dir}')
        self._stop_system_metrics(last_sample=False, wait=False)
        client = self._fallback()
        experiment_id = ensure_experiment(
            client, self._experiment, (self._fallback_dir / 'artifacts').as_uri(),
            self._experiment_description)
        existing = None
        if original:
            existing = self._find_run(client, original)
        if original and existing is None:
            found = client.search_runs(
                [experiment_id], filter_string=f"tags.`{FALLBACK_TAG}` = '{original}'",
                max_results=1)
            existing = found[0] if found else None
        tags = dict(self._tags)
        tags[FALLBACK_URI_TAG] = self._tracking_uri
        if original and (existing is None or existing.info.run_id != original):
            tags[FALLBACK_TAG] = original
        if existing is not None:
            fb_run_id = existing.info.run_id
            client.update_run(fb_run_id, status='RUNNING')
            if CLOSED_BY_RECOVERY_TAG in existing.data.tags:
                client.delete_tag(fb_run_id, CLOSED_BY_RECOVERY_TAG)
            client.log_batch(fb_run_id, tags=_run_tags(tags))
            log_params_once(client, fb_run_id, self._params, existing.data.params)
        else:
            name = run_name or self._run_name
            run = client.create_run(experiment_id, tags=tags,
                                    run_name=f'{name}-fallback' if name else None)
            fb_run_id = run.info.run_id
            log_params_once(client, fb_run_id, self._params, {})
        if original and self._run_id is None and fb_run_id != original:
            self._run_id = original  # resuming a server run while the server is down
        self._fallback_run_id = fb_run_id
        self._last_probe = time.monotonic()

    def _maybe_recover(self, force: bool = False, end_status: str | None = None) -> bool:
        """While in fallback: if the server answers (probed at most every probe_interval_s,
        unless ``force``), copy the fallback run to it and log there again. Returns whether
        logging is back on the server."""
        if not self.is_fallback:
            return True
        now = time.monotonic()
        if not force and now - self._last_probe < self._probe_interval_s:
            return False
        self._last_probe = now
        from trainer.tracking import sync as tracking_sync

        try:
            with self._http_limits(MLFLOW_HTTP_REQUEST_MAX_RETRIES='0'):
                if self._client is None:
                    self._client = make_client(self._tracking_uri)
                self._client.search_experiments(max_results=1)
                report = tracking_sync.copy_fallback_run(
                    self._fallback_client, self._fallback_run_id, self._client,
                    self._run_id, experiment=self._experiment, end_status=end_status)
        except Exception as error:  # noqa: BLE001 - still unreachable: stay in fallback
            if not is_store_unavailable(error):
                logger.warning('could not copy the fallback run %s to %s: %s',
                               self._fallback_run_id, self._tracking_uri, error)
            return False
        self._run_id = report.target_run_id
        if end_status is None:  # the run goes on on the server: close the fallback run
            self._fallback_client.set_tag(self._fallback_run_id, CLOSED_BY_RECOVERY_TAG, 'true')
            self._fallback_client.set_terminated(self._fallback_run_id, 'FINISHED')
        logger.warning('MLflow tracking store %s is reachable again: %s; logging there again',
                       self._tracking_uri, report.describe())
        self.fallback_events.append(f'tracking server back: {report.describe()}')
        self._fallback_run_id = None
        if end_status is None:
            self._start_system_metrics(resume=True)
        return True

    def _start_system_metrics(self, resume: bool) -> None:
        """Start MLflow's system-metrics monitor on the server run (not in fallback mode)."""
        if self._system_metrics_every_s <= 0 or self.is_fallback or not self._run_id or \
                self._system_monitor is not None:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            with self._http_limits():
                monitor = SystemMetricsMonitor(
                    self._run_id, sampling_interval=self._system_metrics_every_s,
                    resume_logging=resume, tracking_uri=self._tracking_uri)
            monitor.start()
            self._system_monitor = monitor
        except Exception as error:  # noqa: BLE001 - system metrics must not stop training
            logger.warning('MLflow system metrics are off for this run: %s',
                           str(error).splitlines()[0][:300] if str(error) else
                           type(error).__name__)

    def _stop_system_metrics(self, last_sample: bool = True, wait: bool = True) -> None:
        """Stop the monitor (and log the samples of the last, unfinished interval), waiting at
        most a few seconds (or, with ``wait`` false, not at all): an unreachable server must
        not hold the run's end."""
        monitor, self._system_monitor = self._system_monitor, None
        if monitor is None:
            return

        def finish():
            monitor.finish()
            if last_sample:
                metrics = monitor.aggregate_metrics()
                if metrics:
                    monitor.publish_metrics(metrics)
                    monitor.mlflow_logger.flush()

        stopper = threading.Thread(target=finish, name='ddsp-system-metrics-stop', daemon=True)
        stopper.start()
        if not wait:
            return
        stopper.join(timeout=max(15.0, 2 * self._system_metrics_every_s))
        if stopper.is_alive():
            logger.warning('MLflow system metrics: the monitor did not stop in time; its last '
                           'samples may be missing')

    @staticmethod
    def _find_run(client, run_id: str):
        """The run ``run_id`` in ``client``'s store if it exists there (not deleted), else None."""
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(run_id)
        except MlflowException:
            return None
        return run if run.info.lifecycle_stage != 'deleted' else None

    # ------------------------------------------------------------------ public API
    def start(
        self,
        params: Mapping[str, object],
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
        description: str | None = None,
    ) -> str:
        """Create a run (or resume ``run_id``) and log ``params`` and ``tags`` to it.

        Args:
            params: Run parameters (e.g. the flattened config); values are stringified. Values
                longer than MLflow's limit are truncated with a warning and saved in full as
                artifact ``params/overlong_params.json``.
            tags: Run tags (``ddsp.git_commit``...); values are stringified. None = no tags.
                MLflow's own context tags (user, source, git commit) are added to new runs.
            run_id: Resume this run: metrics/artifacts are appended to it (after copying to it
                what a fallback store holds of it). Params already logged with the same value
                are skipped; a changed value is a warning plus a tag.
            run_name: Display name of the run.
            description: The run's description (MLflow's note).

        Returns:
            The run id (see :attr:`run_id`); a run that so far existed only in the fallback
            store gets a new id on the server once it is copied there.
        """
        with self._lock:
            if self._started:
                raise RuntimeError(f'Tracker already started (run {self.run_id})')
            str_params: dict[str, str] = {}
            overlong: dict[str, str] = {}
            for key, value in dict(params).items():
                if not isinstance(key, str) or not key:
                    raise ValueError(f'param names must be non-empty strings, got {key!r}')
                text = _stringify(value)
                if len(text) > MAX_PARAM_VAL_LENGTH:
                    overlong[key] = text
                str_params[key] = _truncate(text, MAX_PARAM_VAL_LENGTH, f'param {key!r}')
            str_tags: dict[str, str] = {}
            for key, value in dict(tags or {}).items():
                if not isinstance(key, str) or not key:
                    raise ValueError(f'tag names must be non-empty strings, got {key!r}')
                str_tags[key] = _truncate(_stringify(value), MAX_TAG_VAL_LENGTH, f'tag {key!r}')
            if description:
                str_tags[NOTE_TAG] = description
            self._params, self._tags, self._run_name = str_params, str_tags, run_name

            try:
                with self._http_limits():
                    self._start_primary(run_id, run_name)
            except Exception as error:
                if not is_store_unavailable(error):
                    raise
                self._switch_to_fallback(error, 'starting the run', run_id=run_id,
                                         run_name=run_name)
            self._started = True
            self._start_system_metrics(resume=run_id is not None)
            if overlong:
                self._call(lambda client, rid: client.log_dict(
                    rid, overlong, 'params/overlong_params.json'), 'log overlong params')
            return self.run_id

    def _start_primary(self, run_id: str | None, run_name: str | None) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking.context.registry import resolve_tags

        if self._client is None:
            self._client = make_client(self._tracking_uri)
        client = self._client
        if run_id is None:
            experiment_id = ensure_experiment(client, self._experiment,
                                              description=self._experiment_description)
            run = client.create_run(experiment_id, tags=resolve_tags(self._tags),
                                    run_name=run_name)
            self._run_id, self._run_name = run.info.run_id, run.info.run_name
            log_params_once(client, self._run_id, self._params, {})
            return
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            if error.get_http_status_code() >= 500:
                raise
            if self._resume_fallback_only_run(run_id, run_name):
                return
            raise ValueError(f'cannot resume MLflow run {run_id!r}: not found in '
                             f'{self._tracking_uri} ({error})') from error
        if run.info.lifecycle_stage == 'deleted':
            raise ValueError(f'cannot resume MLflow run {run_id!r} in {self._tracking_uri}: '
                             'the run is deleted (restore it with mlflow runs restore)')
        self._copy_pending_fallback(run_id)
        self._run_id, self._run_name = run_id, run_name or run.info.run_name
        if run_name and run.info.run_name != run_name:
            client.update_run(run_id, status='RUNNING', name=run_name)
        else:
            client.update_run(run_id, status='RUNNING')
        client.log_batch(run_id, tags=_run_tags(self._tags))
        log_params_once(client, run_id, self._params, run.data.params)

    def _fallback_store_exists(self) -> bool:
        return (self._fallback_dir / 'mlflow.db').exists()

    def _copy_pending_fallback(self, run_id: str) -> None:
        """Before resuming ``run_id`` on the server, copy to it what a fallback store holds."""
        if not self._fallback_store_exists():
            return
        from trainer.tracking import sync as tracking_sync

        client = self._fallback()
        for fb_run in tracking_sync.fallback_runs_for(client, run_id):
            report = tracking_sync.copy_fallback_run(client, fb_run.info.run_id, self._client,
                                                     run_id, experiment=self._experiment)
            if report.copied:
                logger.warning('copied what the fallback store %s held of run %s: %s',
                               self._fallback_dir, run_id, report.describe())
                self.fallback_events.append(f'fallback store copied: {report.describe()}')

    def _resume_fallback_only_run(self, run_id: str, run_name: str | None) -> bool:
        """A run that exists only in the fallback store (the server was down when it was
        created): copy it to the server as a new run and resume that. Returns False if the
        fallback store has no such run."""
        if not self._fallback_store_exists():
            return False
        from trainer.tracking import sync as tracking_sync

        client = self._fallback()
        if self._find_run(client, run_id) is None:
            return False
        report = tracking_sync.copy_fallback_run(client, run_id, self._client, None,
                                                 experiment=self._experiment)
        logger.warning('Run %s existed only in the local fallback store %s; copied it to %s as '
                       'run %s (%s) and resuming there.', run_id, self._fallback_dir,
                       self._tracking_uri, report.target_run_id, report.describe())
        self.fallback_events.append(f'fallback-only run copied to the server as '
                                    f'{report.target_run_id}')
        new_id = report.target_run_id
        run = self._client.get_run(new_id)
        self._run_id, self._run_name = new_id, run_name or run.info.run_name
        self._client.update_run(new_id, status='RUNNING')
        self._client.log_batch(new_id, tags=_run_tags(self._tags))
        log_params_once(self._client, new_id, self._params, run.data.params)
        return True

    def logged_through(self, key: str) -> int:
        """The highest step at which metric ``key`` is already in the run's history (0 if
        none): a resumed run that replays steps logs only those after it."""
        def op(client, run_id):
            history = client.get_metric_history(run_id, key)
            return max((m.step for m in history), default=0)

        return int(self._call(op, f'reading the history of {key}'))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at a training step (one ``log_batch`` call).

        Args:
            metrics: name → value; anything ``float()`` accepts (Python/NumPy scalars, 0-d
                tensors). NaN and inf are logged as such.
            step: Training step (integer).
        """
        from mlflow.entities import Metric

        step = _check_step(step)
        timestamp = int(time.time() * 1000)
        entries = []
        for key, value in dict(metrics).items():
            if hasattr(value, 'numpy'):
                value = value.numpy()
            try:
                number = float(value)
            except (TypeError, ValueError) as error:
                raise ValueError(f'metric {key!r}: value {value!r} is not a number') from error
            entries.append(Metric(key, number, timestamp, step))
        if entries:
            self._call(lambda client, run_id: client.log_batch(run_id, metrics=entries),
                       'log_metrics')

    def log_audio(self, name: str, audio: np.ndarray, sample_rate: int, step: int,
                  artifact_dir: str | None = None) -> None:
        """Log a 16-bit PCM WAV artifact ``<artifact_dir>/<name>.wav``.

        Args:
            name: File stem (``.wav`` added if missing); no path separators.
            audio: float32 samples, shape [n_samples] or [1, n_samples], amplitude in [-1, 1].
            sample_rate: Sample rate in Hz.
            step: Training step (integer).
            artifact_dir: Artifact folder (default ``audio/step_XXXXXX``; ``'.'``: the root).
        """
        filename = _check_name(name, '.wav')
        step = _check_step(step)
        folder = artifact_dir or f'audio/step_{step:06d}'
        with tempfile.TemporaryDirectory(prefix='ddsp-tracker-') as tmp:
            local = artifacts.write_wav(Path(tmp) / filename, audio, sample_rate)
            self._log_artifact_file(local, None if folder == '.' else folder,
                                    f'log_audio {filename}')

    def log_spectrogram_comparison(
        self,
        name: str,
        original: np.ndarray,
        resynthesis: np.ndarray,
        sample_rate: int,
        step: int,
        artifact_dir: str | None = None,
    ) -> None:
        """Log a PNG artifact ``<artifact_dir>/<name>.png`` with the original's and the
        resynthesis' log-magnitude spectrograms stacked (time in s, frequency in Hz).

        Args:
            name: File stem (``.png`` added if missing); no path separators.
            original: float32 samples, shape [n_samples] or [1, n_samples].
            resynthesis: float32 samples, shape [n_samples'] or [1, n_samples'].
            sample_rate: Sample rate in Hz of both.
            step: Training step (integer).
            artifact_dir: Artifact folder (default ``plots/step_XXXXXX``; ``'.'``: the root).
        """
        filename = _check_name(name, '.png')
        step = _check_step(step)
        figure = artifacts.spectrogram_comparison_figure(
            original, resynthesis, sample_rate, title=f'{filename[:-4]} — step {step}')
        folder = artifact_dir or f'plots/step_{step:06d}'
        path = filename if folder == '.' else f'{folder}/{filename}'
        self._call(lambda client, run_id: client.log_figure(run_id, figure, path),
                   f'log_spectrogram_comparison {filename}')

    def log_dataset(self, name: str, uri: str, digest: str, context: str = 'training',
                    schema: Mapping[str, Any] | None = None,
                    profile: Mapping[str, Any] | None = None) -> None:
        """Record the data as an MLflow dataset input of the run (MLflow's Datasets).

        Args:
            name: the dataset's name (e.g. its directory's name).
            uri: where it is (local path or ``gs://...``).
            digest: its content fingerprint.
            context: how the run used it (``training``, ``evaluation``).
            schema: feature name -> shape.
            profile: counts worth showing (examples, hours...).
        """
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        scheme = uri.split('://', 1)[0] if '://' in uri else 'local'
        entity = Dataset(name=name, digest=str(digest)[:36], source_type=scheme,
                         source=json.dumps({'uri': uri}),
                         schema=json.dumps(dict(schema)) if schema else None,
                         profile=json.dumps(dict(profile)) if profile else None)
        entry = DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])

        def op(client, run_id):
            for attempt in range(3):
                try:
                    return client.log_inputs(run_id, datasets=[entry])
                except Exception as error:
                    # Runs logging the same new dataset at once race to create its row (the
                    # store answers with a UNIQUE-constraint error); once it exists, log again.
                    if attempt == 2 or 'UNIQUE' not in str(error).upper():
                        raise
                    time.sleep(0.2 * (attempt + 1))

        try:
            self._call(op, f'log_dataset {name}')
        except Exception as error:  # noqa: BLE001 - a missing dataset input must not stop training
            if is_store_unavailable(error):
                raise
            logger.warning('could not record the dataset %s as an MLflow input: %s', name,
                           str(error).splitlines()[0][:300])

    def log_dict(self, payload: Mapping[str, Any], artifact_file: str) -> None:
        """Log a JSON (or YAML, by extension) artifact."""
        self._call(lambda client, run_id: client.log_dict(run_id, dict(payload), artifact_file),
                   f'log_dict {artifact_file}')

    def log_file(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log one local file as an artifact (under ``artifact_path``, default the root)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'log_file: {path} is not an existing file')
        self._log_artifact_file(path, artifact_path, f'log_file {path}')

    def log_dir(self, path: str | os.PathLike, artifact_path: str) -> None:
        """Log a local directory's contents (recursively) as artifacts under ``artifact_path``."""
        path = Path(path)
        if not path.is_dir():
            raise NotADirectoryError(f'log_dir: {path} is not an existing directory')
        self._call(lambda client, run_id: client.log_artifacts(run_id, str(path), artifact_path),
                   f'log_dir {path}')

    def _log_artifact_file(self, local: Path, artifact_path: str | None, what: str) -> None:
        self._call(lambda client, run_id: client.log_artifact(run_id, str(local), artifact_path),
                   what)

    def end(self, status: str = 'FINISHED') -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED). Idempotent.

        In fallback mode the fallback run is ended; if the server answers by then, the fallback
        run is copied to the original run, which ends with the same status (else
        ``ddsp-sync`` or the next run on the model directory does that).
        """
        if status not in RUN_END_STATES:
            raise ValueError(f'status must be one of {RUN_END_STATES}, got {status!r}')
        with self._lock:
            if not self._started or self._ended:
                return
            self._stop_system_metrics()
            if self.is_fallback:
                self._fallback_client.set_terminated(self._fallback_run_id, status)
                self._ended = True
                if not self._maybe_recover(force=True, end_status=status):
                    self._tag_original_best_effort()
                return
            self._call(lambda client, run_id: client.set_terminated(run_id, status), 'end')
            self._ended = True

    def _tag_original_best_effort(self) -> None:
        """Tell the server-side run where the rest went, if the server answers at all."""
        if not self._run_id or self._client is None:
            return
        try:
            with self._http_limits(MLFLOW_HTTP_REQUEST_MAX_RETRIES='0'):
                self._client.set_tag(self._run_id, CONTINUED_IN_TAG,
                                     f'{self.fallback_tracking_uri} run {self._fallback_run_id}')
        except Exception as error:  # noqa: BLE001 - most likely still down: nothing to do
            logger.debug('Could not tag original run %s: %s', self._run_id, error)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end('FINISHED' if exc_type is None else 'FAILED')

    def __repr__(self) -> str:
        where = self.fallback_tracking_uri if self.is_fallback else self._tracking_uri
        return f'Tracker(run_id={self.run_id!r}, experiment={self._experiment!r}, store={where!r})'


def _run_tags(tags: Mapping[str, str]):
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in tags.items()]
