"""Copy what a run logged to its local fallback store back to the tracking server.

When the tracking server is unreachable, :class:`trainer.tracking.tracker.Tracker` logs to a local
store in ``<model_dir>/mlruns``. This module copies such a fallback run to its run on the server, or
to a new server run when the run was created while the server was down: params it lacks, every
metric point at a step the server run does not have yet (so copying twice duplicates nothing),
artifacts it lacks (or holds in an older version), the user tags, and the final status. The tracker
does it as soon as the server answers again; :func:`sync_model_dir` (``ddsp-sync MODEL_DIR``,
``ddsp-train --sync_tracking``) does it for a model directory by hand.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import tempfile
from pathlib import Path
from typing import Optional

from ddsp_core import runtime
from trainer.model import model_dir as model_dir_lib
from trainer.tracking.store import (
    CLOSED_BY_RECOVERY_TAG,
    CONTINUED_IN_TAG,
    FALLBACK_TAG,
    FALLBACK_URI_TAG,
    RUN_END_STATES,
    ensure_experiment,
    log_params_once,
    make_client,
)

logger = logging.getLogger(__name__)

#: Tag on a fallback run: the server run it was copied to.
SYNCED_TO_TAG = 'ddsp.synced_to_run_id'
#: Tag on a server run created from a fallback-only run.
SYNCED_FROM_TAG = 'ddsp.synced_from_fallback_run_id'
_NOT_COPIED_TAGS = (FALLBACK_TAG, FALLBACK_URI_TAG, SYNCED_TO_TAG, CLOSED_BY_RECOVERY_TAG,
                    'mlflow.runName')


@dataclasses.dataclass
class SyncReport:
    """What one copy did."""

    source_run_id: str
    target_run_id: str
    metric_points: int = 0
    artifacts: int = 0
    params: int = 0
    status: Optional[str] = None

    @property
    def copied(self) -> bool:
        return bool(self.metric_points or self.artifacts or self.params)

    def describe(self) -> str:
        status = f', run marked {self.status}' if self.status else ''
        return (f'{self.metric_points} metric points and {self.artifacts} artifacts copied from '
                f'fallback run {self.source_run_id} to run {self.target_run_id}{status}')


def _walk_artifacts(client, run_id: str, path: Optional[str] = None) -> dict[str, int]:
    """artifact path -> size, for every file of a run."""
    out = {}
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            out.update(_walk_artifacts(client, run_id, info.path))
        else:
            out[info.path] = int(info.file_size or 0)
    return out


def fallback_runs_for(client, run_id: str) -> list:
    """Runs of a fallback store that continue server run ``run_id`` or were copied to it."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = []
    for tag in (FALLBACK_TAG, SYNCED_TO_TAG):
        runs.extend(client.search_runs(experiments, filter_string=f"tags.`{tag}` = '{run_id}'"))
    unique = {r.info.run_id: r for r in runs}
    return [unique[k] for k in sorted(unique)]


def copy_fallback_run(src, src_run_id: str, dst, dst_run_id: Optional[str], *,
                      experiment: str, end_status: Optional[str] = None,
                      finalize_running: bool = False) -> SyncReport:
    """Copy a fallback run to the server.

    Args:
        src: client of the fallback store.
        src_run_id: the fallback run.
        dst: client of the tracking server.
        dst_run_id: the server run it continues; None for a run created while the server was
            down (a new server run is made, or the one an earlier copy made is reused).
        experiment: the experiment of a new server run.
        end_status: end the server run with this status.
        finalize_running: without ``end_status``: if the fallback run is still RUNNING (its
            process died), end the server run KILLED; else it gets the fallback run's final
            status, or stays as it is while the fallback run is running. A fallback run that
            was closed because logging went back to the server mid-run leaves the server run's
            status alone.

    Returns:
        A :class:`SyncReport`.
    """
    from mlflow.entities import Metric, RunTag

    run = src.get_run(src_run_id)
    tags = run.data.tags
    if dst_run_id is None:
        dst_run_id = tags.get(SYNCED_TO_TAG)
    if dst_run_id is None:
        experiment_id = ensure_experiment(dst, experiment)
        new_tags = {k: v for k, v in tags.items() if k not in _NOT_COPIED_TAGS}
        new_tags[SYNCED_FROM_TAG] = src_run_id
        name = run.info.run_name or ''
        name = name[:-len('-fallback')] if name.endswith('-fallback') else name
        created = dst.create_run(experiment_id, tags=new_tags, run_name=name or None)
        dst_run_id = created.info.run_id
        src.set_tag(src_run_id, SYNCED_TO_TAG, dst_run_id)
    report = SyncReport(src_run_id, dst_run_id)
    target = dst.get_run(dst_run_id)

    missing_params = {k: v for k, v in run.data.params.items() if k not in target.data.params}
    log_params_once(dst, dst_run_id, missing_params, target.data.params)
    report.params = len(missing_params)

    points = []
    for key in sorted(run.data.metrics):
        have = {m.step for m in dst.get_metric_history(dst_run_id, key)}
        points.extend(Metric(key, m.value, m.timestamp, m.step)
                      for m in src.get_metric_history(src_run_id, key) if m.step not in have)
    if points:
        dst.log_batch(dst_run_id, metrics=points)
    report.metric_points = len(points)

    # Artifacts the server run lacks; one it has at the same path (the summaries at stable paths)
    # is replaced only while the fallback run holds the newest records, i.e. unless the server
    # run went on after it.
    newest_here = CLOSED_BY_RECOVERY_TAG not in tags
    wanted = _walk_artifacts(src, src_run_id)
    present = _walk_artifacts(dst, dst_run_id) if wanted else {}
    todo = sorted(p for p, size in wanted.items()
                  if p not in present or (newest_here and present[p] != size))
    if todo:
        with tempfile.TemporaryDirectory(prefix='ddsp-sync-') as tmp:
            for path in todo:
                local = src.download_artifacts(src_run_id, path, tmp)
                folder = os.path.dirname(path)
                dst.log_artifact(dst_run_id, local, folder or None)
    report.artifacts = len(todo)

    user_tags = [RunTag(k, v) for k, v in tags.items()
                 if k not in _NOT_COPIED_TAGS and not k.startswith('mlflow.')
                 and target.data.tags.get(k) != v]
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')
    user_tags.append(RunTag(CONTINUED_IN_TAG,
                            f'{src.tracking_uri} run {src_run_id} (copied here {when})'))
    dst.log_batch(dst_run_id, tags=user_tags)

    status = end_status
    if status is None and CLOSED_BY_RECOVERY_TAG not in tags:  # else the server run went on
        if run.info.status in RUN_END_STATES:
            status = run.info.status
        elif finalize_running:
            status = 'KILLED'
    if status is not None:
        dst.set_terminated(dst_run_id, status)
        report.status = status
    return report


def sync_model_dir(model_dir: str | os.PathLike, tracking_uri: Optional[str] = None,
                   run_live: Optional[bool] = None) -> list[SyncReport]:
    """Copy every run of ``<model_dir>/mlruns`` (the fallback store) to the tracking server.

    Args:
        model_dir: a model directory of ``ddsp-train``.
        tracking_uri: the server (default: the one ``mlflow_run.json`` names, else
            ``MLFLOW_TRACKING_URI`` / MLflow's default).
        run_live: whether a training process still holds the model dir (then runs are not
            ended); default: found out from the model dir's lock.

    Returns:
        One report per fallback run (empty when there is no fallback store).

    Raises:
        FileNotFoundError: ``model_dir`` does not exist.
        mlflow.exceptions.MlflowException, requests errors: the server is unreachable.
    """
    from trainer.model.model_dir import ModelDirLock, ModelDirLocked
    from trainer.tracking.store import resolve_tracking_uri

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f'{model_dir} is not a directory')
    store = model_dir_lib.fallback_dir(model_dir) / model_dir_lib.FALLBACK_DB
    if not store.exists():
        return []
    info = model_dir_lib.read_run_info(model_dir)
    uri = resolve_tracking_uri(tracking_uri or info.get('tracking_uri'))
    experiment = info.get('experiment') or 'ddsp'
    lock = ModelDirLock(model_dir)
    if run_live is None:
        try:
            lock.acquire()
            run_live = False
        except ModelDirLocked:
            run_live = True
    try:
        src = make_client(f'sqlite:///{store}')
        dst = make_client(uri)
        reports = []
        experiments = [e.experiment_id for e in src.search_experiments()]
        for run in (src.search_runs(experiments) if experiments else []):
            tags = run.data.tags
            target = tags.get(FALLBACK_TAG) or tags.get(SYNCED_TO_TAG)
            report = copy_fallback_run(src, run.info.run_id, dst, target, experiment=experiment,
                                       finalize_running=not run_live)
            reports.append(report)
            if info.get('run_id') == run.info.run_id and report.target_run_id != run.info.run_id:
                info['run_id'] = report.target_run_id  # resume on the server from now on
                info['tracking_uri'] = uri
                model_dir_lib.write_run_info(model_dir, info)  # read on resume
        return reports
    finally:
        lock.release()


def main(argv: Optional[list[str]] = None) -> int:
    """``ddsp-sync MODEL_DIR``: copy a model directory's fallback store to the tracking server.
    Exit codes: 0 done (or nothing to copy), 1 the server is unreachable, 2 bad usage."""
    parser = runtime.command_parser(
        'ddsp-sync', allow_abbrev=True,
        description='Copy the MLflow records a training run kept in <model_dir>/mlruns while '
                    'its tracking server was unreachable to the server run (metrics, artifacts, '
                    'status; nothing is copied twice).')
    parser.add_argument('model_dir', help='a ddsp-train --model_dir')
    parser.add_argument('--tracking_uri', default=None,
                        help='the tracking server (default: the one the run used, from '
                             'mlflow_run.json)')
    args = runtime.open_cli(parser, argv)
    if isinstance(args, int):
        return args
    try:
        reports = sync_model_dir(args.model_dir, args.tracking_uri)
    except FileNotFoundError as e:
        return runtime.usage_error('ddsp-sync', e)
    except Exception as e:  # noqa: BLE001 - an unreachable server has many error types
        return runtime.failure('ddsp-sync', f'cannot reach the tracking server '
                               f'({type(e).__name__}: '
                               f'{str(e).splitlines()[0][:300] if str(e) else ""})')
    if not reports:
        print(f'ddsp-sync: {args.model_dir} has no fallback store; nothing to copy')
    for report in reports:
        print(f'ddsp-sync: {report.describe()}')
    return 0


if __name__ == '__main__':
    import sys

    sys.exit(main())
