"""MLflow experiment tracking for training runs, robust to an unreachable tracking server.

:class:`Tracker` wraps one :class:`mlflow.tracking.MlflowClient` (no fluent/global MLflow state,
so several trackers can coexist in one process). Conventions (see docs/design):

- params: flattened config keys (``a.b``), values stringified;
- artifacts: ``audio/step_XXXXXX/<name>.wav``, ``plots/step_XXXXXX/<name>.png``, plus whatever
  the trainer logs with :meth:`Tracker.log_file` / :meth:`Tracker.log_dir`.

If the tracking store fails with a connection-type error (at start or mid-run), the tracker warns
once and carries on in a local SQLite store under ``local_fallback_dir`` (a run there tagged
``ddsp.fallback_for_run_id`` with the original run id), so training never stops or hangs because
of tracking. Browse it with ``mlflow ui --backend-store-uri sqlite:///<local_fallback_dir>/mlflow.db``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from trainer import artifacts

logger = logging.getLogger(__name__)

__all__ = ['Tracker', 'FALLBACK_TAG', 'FALLBACK_URI_TAG']

#: Tag on a fallback run: id of the run on the (unreachable) tracking server it continues.
FALLBACK_TAG = 'ddsp.fallback_for_run_id'
#: Tag on a fallback run: the tracking URI that could not be reached.
FALLBACK_URI_TAG = 'ddsp.fallback_from_uri'
#: Tag set on the original run (if reachable again at the end) pointing at the fallback store.
CONTINUED_IN_TAG = 'ddsp.continued_in_fallback'
#: Prefix of tags recording a param whose value changed on resume (MLflow params are immutable).
PARAM_CHANGED_TAG_PREFIX = 'ddsp.param_changed.'

# MLflow limits (mlflow.utils.validation in 3.x); values are re-read from MLflow when available.
try:
    from mlflow.utils.validation import (
        MAX_METRICS_PER_BATCH,
        MAX_PARAM_VAL_LENGTH,
        MAX_PARAMS_TAGS_PER_BATCH,
        MAX_TAG_VAL_LENGTH,
    )
except ImportError:  # pragma: no cover - older/newer layouts
    MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH = 1000, 100
    MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH = 6000, 8000

_RUN_END_STATES = ('FINISHED', 'FAILED', 'KILLED')
_TRUNCATION_MARK = '...[truncated]'

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


def _stringify(value: object) -> str:
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


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


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


def _is_store_unavailable(error: BaseException) -> bool:
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


def _resolve_tracking_uri(tracking_uri: str | None) -> str:
    if tracking_uri:
        return str(tracking_uri)
    from_env = os.environ.get('MLFLOW_TRACKING_URI')
    if from_env:
        return from_env
    import mlflow

    # MLflow's own default (sqlite:///<cwd>/mlflow.db, or ./mlruns if one with data exists), the
    # store `mlflow ui` opens when started in the same directory. Made absolute here so that a
    # later chdir does not move it.
    return mlflow.get_tracking_uri()


class Tracker:
    """Log one training run to MLflow, falling back to a local store if the server fails.

    Args:
        tracking_uri: MLflow tracking URI (``http://host:port``, ``sqlite:///path.db``...).
            Default: env ``MLFLOW_TRACKING_URI``, else MLflow's default local store in the
            current directory.
        experiment: Experiment name; created if missing.
        local_fallback_dir: Directory of the local fallback store (SQLite ``mlflow.db`` +
            ``artifacts/``), used only if the tracking store fails. Default
            ``<cwd>/mlruns-fallback``; the trainer passes ``<model_dir>/mlruns``.
        http_timeout_s: Per-request timeout for HTTP tracking servers (seconds), unless env
            ``MLFLOW_HTTP_REQUEST_TIMEOUT`` is set.
        http_max_retries: Retries per HTTP request before falling back, unless env
            ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is set.

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
    ) -> None:
        if not isinstance(experiment, str) or not experiment.strip():
            raise ValueError(f'experiment must be a non-empty name, got {experiment!r}')
        self._tracking_uri = _resolve_tracking_uri(tracking_uri)
        self._experiment = experiment
        fallback = local_fallback_dir if local_fallback_dir else Path.cwd() / 'mlruns-fallback'
        self._fallback_dir = Path(fallback).expanduser().resolve()
        http = dict(_HTTP_DEFAULTS)
        http['MLFLOW_HTTP_REQUEST_TIMEOUT'] = str(int(http_timeout_s))
        http['MLFLOW_HTTP_REQUEST_MAX_RETRIES'] = str(int(http_max_retries))
        with _ENV_LOCK:
            self._http_env = {k: v for k, v in http.items() if k not in os.environ}
        self._lock = threading.RLock()
        self._client = None          # primary MlflowClient, created lazily in start()
        self._run_id: str | None = None       # run on the primary store (or the run resumed)
        self._fallback_client = None
        self._fallback_run_id: str | None = None
        self._started = False
        self._ended = False
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._run_name: str | None = None

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
        """True once logging has switched to the local fallback store."""
        return self._fallback_run_id is not None

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _http_limits(self) -> Iterator[None]:
        """Temporarily apply this tracker's HTTP retry/timeout settings (MLflow reads them from
        the environment at each request; there is no per-client setting)."""
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in self._http_env}
            os.environ.update(self._http_env)
            try:
                yield
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def _require_running(self) -> None:
        if not self._started:
            raise RuntimeError('Tracker.start() must be called before logging')
        if self._ended:
            raise RuntimeError(f'run {self.run_id} has already ended; start a new Tracker')

    def _call(self, op: _Op, what: str) -> T:
        """Run ``op(client, run_id)`` on the primary store, switching to the fallback store the
        first time the primary is unavailable."""
        with self._lock:
            self._require_running()
            if not self.is_fallback:
                try:
                    with self._http_limits():
                        return op(self._client, self._run_id)
                except Exception as error:
                    if not _is_store_unavailable(error):
                        raise
                    self._switch_to_fallback(error, what)
            return op(self._fallback_client, self._fallback_run_id)

    def _switch_to_fallback(self, error: BaseException, what: str, run_id: str | None = None,
                            run_name: str | None = None) -> None:
        original = run_id or self._run_id
        logger.warning(
            'MLflow tracking store %s is unavailable (%s failed: %s). Logging run %s from now '
            'on to the local fallback store %s (open it with: mlflow ui --backend-store-uri %s).',
            self._tracking_uri, what, str(error).splitlines()[0][:300] if str(error) else
            type(error).__name__, original or '(new run)', self._fallback_dir,
            self.fallback_tracking_uri,
        )
        from mlflow.tracking import MlflowClient

        self._fallback_dir.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=self.fallback_tracking_uri)
        experiment_id = self._ensure_experiment(
            client, artifact_location=(self._fallback_dir / 'artifacts').as_uri())
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
            self._log_tags(client, fb_run_id, tags)
            self._log_params(client, fb_run_id, self._params, existing.data.params)
        else:
            name = run_name or self._run_name
            run = client.create_run(experiment_id, tags=tags,
                                    run_name=f'{name}-fallback' if name else None)
            fb_run_id = run.info.run_id
            self._log_params(client, fb_run_id, self._params, {})
        if original and self._run_id is None and fb_run_id != original:
            self._run_id = original  # resuming a server run while the server is down
        self._fallback_client = client
        self._fallback_run_id = fb_run_id

    @staticmethod
    def _find_run(client, run_id: str):
        """The run ``run_id`` in ``client``'s store if it exists there (not deleted), else None."""
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(run_id)
        except MlflowException:
            return None
        return run if run.info.lifecycle_stage != 'deleted' else None

    def _ensure_experiment(self, client, artifact_location: str | None = None) -> str:
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(self._experiment)
        if experiment is None:
            try:
                return client.create_experiment(self._experiment,
                                                artifact_location=artifact_location)
            except MlflowException as error:  # created concurrently (parallel sweep trials)
                experiment = client.get_experiment_by_name(self._experiment)
                if experiment is None:
                    raise error
        if experiment.lifecycle_stage == 'deleted':
            raise ValueError(
                f'MLflow experiment {self._experiment!r} (id {experiment.experiment_id}) in '
                f'{client.tracking_uri} is deleted; restore it (mlflow experiments restore '
                f'--experiment-id {experiment.experiment_id}) or choose another experiment name')
        return experiment.experiment_id

    def _log_tags(self, client, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in tags.items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run_id, tags=chunk, synchronous=True)

    def _log_params(self, client, run_id: str, params: Mapping[str, str],
                    existing: Mapping[str, str]) -> None:
        """Log ``params`` not yet in ``existing``; identical values are skipped, changed ones
        (MLflow params are immutable) become a warning plus a ``ddsp.param_changed.*`` tag."""
        from mlflow.entities import Param

        new, changed = [], {}
        for key, value in params.items():
            if key not in existing:
                new.append(Param(key, value))
            elif existing[key] != value:
                changed[key] = value
        for key, value in changed.items():
            logger.warning('Run %s: param %r was %r and is now %r; MLflow params cannot change, '
                           'recording the new value as tag %s%s', run_id, key, existing[key],
                           value, PARAM_CHANGED_TAG_PREFIX, key)
        for chunk in _chunks(new, MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run_id, params=chunk, synchronous=True)
        if changed:
            self._log_tags(client, run_id, {
                f'{PARAM_CHANGED_TAG_PREFIX}{k}': _truncate(f'{existing[k]} -> {v}',
                                                            MAX_TAG_VAL_LENGTH, f'tag for {k}')
                for k, v in changed.items()})

    # ------------------------------------------------------------------ public API
    def start(
        self,
        params: Mapping[str, object],
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
    ) -> str:
        """Create a run (or resume ``run_id``) and log ``params`` and ``tags`` to it.

        Args:
            params: Run parameters (e.g. the flattened config); values are stringified. Values
                longer than MLflow's limit are truncated with a warning and saved in full as
                artifact ``params/overlong_params.json``.
            tags: Run tags (``ddsp.git_commit``...); values are stringified. None = no tags.
            run_id: Resume this run: metrics/artifacts are appended to it. Params already logged
                with the same value are skipped; a changed value is a warning plus a tag.
            run_name: Display name of the run.

        Returns:
            The run id (see :attr:`run_id`).
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
            self._params, self._tags, self._run_name = str_params, str_tags, run_name

            try:
                with self._http_limits():
                    self._start_primary(run_id, run_name)
            except Exception as error:
                if not _is_store_unavailable(error):
                    raise
                self._switch_to_fallback(error, 'starting the run', run_id=run_id,
                                         run_name=run_name)
            self._started = True
            if overlong:
                self._log_json_artifact(overlong, 'params', 'overlong_params.json')
            return self.run_id

    def _start_primary(self, run_id: str | None, run_name: str | None) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        if self._client is None:
            self._client = MlflowClient(tracking_uri=self._tracking_uri)
        client = self._client
        if run_id is None:
            experiment_id = self._ensure_experiment(client)
            run = client.create_run(experiment_id, tags=self._tags, run_name=run_name)
            self._run_id, self._run_name = run.info.run_id, run.info.run_name
            self._log_params(client, self._run_id, self._params, {})
            return
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            if error.get_http_status_code() >= 500:
                raise
            if self._resume_fallback_only_run(run_id):
                return
            raise ValueError(f'cannot resume MLflow run {run_id!r}: not found in '
                             f'{self._tracking_uri} ({error})') from error
        if run.info.lifecycle_stage == 'deleted':
            raise ValueError(f'cannot resume MLflow run {run_id!r} in {self._tracking_uri}: '
                             'the run is deleted (restore it with mlflow runs restore)')
        self._run_id, self._run_name = run_id, run_name or run.info.run_name
        if run_name and run.info.run_name != run_name:
            client.update_run(run_id, status='RUNNING', name=run_name)
        else:
            client.update_run(run_id, status='RUNNING')
        self._log_tags(client, run_id, self._tags)
        self._log_params(client, run_id, self._params, run.data.params)

    def _resume_fallback_only_run(self, run_id: str) -> bool:
        """Resume ``run_id`` in the fallback store if it only exists there (the server was down
        when the run was created). Returns False if there is no such run."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        if not (self._fallback_dir / 'mlflow.db').exists():
            return False
        client = MlflowClient(tracking_uri=self.fallback_tracking_uri)
        try:
            run = client.get_run(run_id)
        except MlflowException:
            return False
        logger.warning('Run %s is not in %s but is in the local fallback store %s; resuming it '
                       'there.', run_id, self._tracking_uri, self._fallback_dir)
        client.update_run(run_id, status='RUNNING')
        self._log_tags(client, run_id, self._tags)
        self._log_params(client, run_id, self._params, run.data.params)
        self._fallback_client, self._fallback_run_id = client, run_id
        return True

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at a training step (one batch request per 1000 metrics).

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
        if not entries:
            return

        def op(client, run_id):
            for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=chunk, synchronous=True)

        self._call(op, 'log_metrics')

    def log_audio(self, name: str, audio: np.ndarray, sample_rate: int, step: int) -> None:
        """Log a 16-bit PCM WAV artifact ``audio/step_XXXXXX/<name>.wav``.

        Args:
            name: File stem (``.wav`` added if missing); no path separators.
            audio: float32 samples, shape [n_samples] or [1, n_samples], amplitude in [-1, 1].
            sample_rate: Sample rate in Hz.
            step: Training step (integer).
        """
        filename = _check_name(name, '.wav')
        step = _check_step(step)
        with tempfile.TemporaryDirectory(prefix='ddsp-tracker-') as tmp:
            local = artifacts.write_wav(Path(tmp) / filename, audio, sample_rate)
            self._log_artifact_file(local, f'audio/step_{step:06d}', f'log_audio {filename}')

    def log_spectrogram_comparison(
        self,
        name: str,
        original: np.ndarray,
        resynthesis: np.ndarray,
        sample_rate: int,
        step: int,
    ) -> None:
        """Log a PNG artifact ``plots/step_XXXXXX/<name>.png`` with the original's and the
        resynthesis' log-magnitude spectrograms stacked (time in s, frequency in Hz).

        Args:
            name: File stem (``.png`` added if missing); no path separators.
            original: float32 samples, shape [n_samples] or [1, n_samples].
            resynthesis: float32 samples, shape [n_samples'] or [1, n_samples'].
            sample_rate: Sample rate in Hz of both.
            step: Training step (integer).
        """
        filename = _check_name(name, '.png')
        step = _check_step(step)
        title = f'{filename[:-4]} — step {step}'
        with tempfile.TemporaryDirectory(prefix='ddsp-tracker-') as tmp:
            local = artifacts.spectrogram_comparison_png(
                Path(tmp) / filename, original, resynthesis, sample_rate, title=title)
            self._log_artifact_file(local, f'plots/step_{step:06d}',
                                    f'log_spectrogram_comparison {filename}')

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

    def _log_json_artifact(self, payload: Mapping[str, object], artifact_path: str,
                           filename: str) -> None:
        with tempfile.TemporaryDirectory(prefix='ddsp-tracker-') as tmp:
            local = Path(tmp) / filename
            local.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding='utf-8')
            self._log_artifact_file(local, artifact_path, f'log {artifact_path}/{filename}')

    def end(self, status: str = 'FINISHED') -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED). Idempotent.

        In fallback mode the fallback run is ended, and the original run too if its server is
        reachable again (tagged ``ddsp.continued_in_fallback`` with where the rest went).
        """
        if status not in _RUN_END_STATES:
            raise ValueError(f'status must be one of {_RUN_END_STATES}, got {status!r}')
        with self._lock:
            if not self._started or self._ended:
                return
            self._call(lambda client, run_id: client.set_terminated(run_id, status), 'end')
            self._ended = True
            if self.is_fallback and self._run_id and self._run_id != self._fallback_run_id:
                self._try_close_original(status)

    def _try_close_original(self, status: str) -> None:
        saved = self._http_env
        self._http_env = {**saved, 'MLFLOW_HTTP_REQUEST_MAX_RETRIES': '0'}
        try:
            with self._http_limits():
                self._client.set_tag(
                    self._run_id, CONTINUED_IN_TAG,
                    f'{self.fallback_tracking_uri} run {self._fallback_run_id}')
                self._client.set_terminated(self._run_id, status)
        except Exception as error:  # the server is most likely still down: nothing to do
            logger.debug('Could not close original run %s: %s', self._run_id, error)
        finally:
            self._http_env = saved

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end('FINISHED' if exc_type is None else 'FAILED')

    def __repr__(self) -> str:
        where = self.fallback_tracking_uri if self.is_fallback else self._tracking_uri
        return f'Tracker(run_id={self.run_id!r}, experiment={self._experiment!r}, store={where!r})'

