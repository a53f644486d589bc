"""The MLflow tracking store, without a run: resolving the URI, one client per store, experiments,
params once, the tags our commands put on runs and links into MLflow's UI.

Shared by :class:`trainer.tracking.tracker.Tracker`, :mod:`trainer.tracking.sync` and every command
that reads or writes runs (eval, transfer, export, sweep, compare).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ddsp_core import runtime

logger = logging.getLogger(__name__)

__all__ = ['FALLBACK_TAG', 'FALLBACK_URI_TAG', 'PARAM_CHANGED_TAG_PREFIX',
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
SQLITE_LOCKED_RETRIES = 8

# HTTP client settings used for this tracker's requests unless the user set the variable:
# a dead server must be detected in seconds, not after MLflow's default ~4 minutes of retries.
HTTP_DEFAULTS = {
    'MLFLOW_HTTP_REQUEST_MAX_RETRIES': '2',
    'MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR': '1',
    'MLFLOW_HTTP_REQUEST_BACKOFF_JITTER': '0.5',
    'MLFLOW_HTTP_REQUEST_TIMEOUT': '10',
}
ENV_LOCK = threading.RLock()



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
    with ENV_LOCK, runtime.environ(dict(env)):
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


def stringify(value: object) -> str:
    import json

    if hasattr(value, 'numpy'):
        value = value.numpy()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def truncate(value: str, limit: int, what: str) -> str:
    if len(value) <= limit:
        return value
    logger.warning('%s is %d characters; MLflow keeps %d, so it is truncated',
                   what, len(value), limit)
    return value[: limit - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK


def check_artifact_name(name: str, suffix: str) -> str:
    """Artifact file name ``<name><suffix>``; rejects empty names and path separators."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f'artifact name must be a non-empty string, got {name!r}')
    if '/' in name or '\\' in name or name in ('.', '..'):
        raise ValueError(f'artifact name {name!r} must be a plain file name (no path separators)')
    return name if name.lower().endswith(suffix) else name + suffix


def check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise ValueError(f'step must be an integer, got {step!r}')
    return int(step)


def is_sqlite_locked(error: BaseException) -> bool:
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
                   truncate(f'{existing[k]} -> {v}', MAX_TAG_VAL_LENGTH, f'tag for {k}'))
            for k, v in changed.items()]
    if new or tags:
        client.log_batch(run_id, params=new, tags=tags)
