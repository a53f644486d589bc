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
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from trainer.tracking.media import RunMedia
from trainer.tracking.store import (
    CLOSED_BY_RECOVERY_TAG,
    CONTINUED_IN_TAG,
    DEFAULT_PROBE_SECS,
    ENV_LOCK,
    FALLBACK_TAG,
    FALLBACK_URI_TAG,
    HTTP_DEFAULTS,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
    NOTE_TAG,
    PROBE_ENV,
    RUN_END_STATES,
    SQLITE_LOCKED_RETRIES,
    check_step,
    ensure_experiment,
    http_settings,
    is_sqlite_locked,
    is_store_unavailable,
    log_params_once,
    make_client,
    resolve_tracking_uri,
    stringify,
    truncate,
)

logger = logging.getLogger(__name__)

__all__ = ['Tracker']

T = TypeVar('T')
_Op = Callable[[Any, str], T]

class Tracker(RunMedia):
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
        http = dict(HTTP_DEFAULTS)
        http['MLFLOW_HTTP_REQUEST_TIMEOUT'] = str(int(http_timeout_s))
        http['MLFLOW_HTTP_REQUEST_MAX_RETRIES'] = str(int(http_max_retries))
        with ENV_LOCK:
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
        for attempt in range(SQLITE_LOCKED_RETRIES + 1):
            try:
                with self._http_limits():
                    return op(self._client, run_id)
            except Exception as error:
                if attempt < SQLITE_LOCKED_RETRIES and is_sqlite_locked(error):
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
                text = stringify(value)
                if len(text) > MAX_PARAM_VAL_LENGTH:
                    overlong[key] = text
                str_params[key] = truncate(text, MAX_PARAM_VAL_LENGTH, f'param {key!r}')
            str_tags: dict[str, str] = {}
            for key, value in dict(tags or {}).items():
                if not isinstance(key, str) or not key:
                    raise ValueError(f'tag names must be non-empty strings, got {key!r}')
                str_tags[key] = truncate(stringify(value), MAX_TAG_VAL_LENGTH, f'tag {key!r}')
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

        step = check_step(step)
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
