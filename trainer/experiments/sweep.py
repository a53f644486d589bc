"""Hyperparameter sweeps: one trial (the pure core of ``ddsp-sweep``; :mod:`pipelines.sweep`
runs the trials as elements of a Beam pipeline), with the names of the modules it is made of:
:mod:`~trainer.experiments.sweep_spec` (the spec), :mod:`~trainer.experiments.sweep_study`
(the Optuna study and search), :mod:`~trainer.experiments.sweep_process` (the supervised trial
process) and :mod:`~trainer.experiments.sweep_report` (the summary's table and plots).

Every trial trains with :func:`trainer.training.train.train`, the code ``ddsp-train`` runs, into its
own model directory named by the trial's hash (overrides, base config and dataset fingerprint), as
an MLflow child run of the sweep's parent run. Running a sweep again skips finished trials and
resumes interrupted ones from their checkpoints: the hash names the model directory, whose
``mlflow_run.json`` names the child run, so a retried trial never makes a second run.
"""


from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from typing import Callable, Optional

from trainer.experiments.sweep_spec import (
    ALGORITHMS,
    ASKING,
    KINDS,
    PRUNERS,
    TAG_ERROR,
    TAG_OVERRIDES,
    TAG_PRUNED_AT,
    TAG_RETRY_OF,
    TAG_STATE,
    TAG_SWEEP,
    TAG_SWEEP_ID,
    TAG_TRIAL,
    TAG_TRIAL_HASH,
    Param,
    SweepError,
    SweepSpec,
    load_spec,
    metric_of,
    metrics_of,
    overrides_of,
    parse_spec,
    trial_dir,
    trial_hash,
)
from trainer.experiments.sweep_study import (
    MAX_REASKS,
    MAX_RETRIES,
    TrialOutcome,
    _reject_duplicate,
    _state,
    distributions,
    fail_dead_trial,
    fail_stale_trials,
    finished,
    finished_digests,
    first_value,
    grid_points,
    is_duplicate,
    make_pruner,
    make_sampler,
    open_study,
    pruner_settings,
    qmc_points,
    random_points,
    retried,
    retry_callback,
    retry_history,
    retry_of,
    same_point,
    space_size,
    start_trial,
    sweep_points,
    sweep_trials,
    tpe_startup_trials,
    trial_seed,
)
from trainer.tracking.store import KIND_TAG as TAG_KIND

#: What the sweep's modules offer under this one name (the CLI, the tests and the benchmarks
#: use ``trainer.experiments.sweep``).
__all__ = [
    'ALGORITHMS', 'ASKING', 'KINDS', 'MAX_REASKS', 'MAX_RETRIES', 'PRUNERS', 'SMOOTHING',
    'TAG_ERROR', 'TAG_KIND', 'TAG_OVERRIDES', 'TAG_PRUNED_AT', 'TAG_RETRY_OF', 'TAG_STATE',
    'TAG_SWEEP', 'TAG_SWEEP_ID', 'TAG_TRIAL', 'TAG_TRIAL_HASH', 'Param', 'Reporter',
    'SweepError', 'SweepSpec', 'TrialOutcome', 'distributions', 'fail_dead_trial',
    'fail_stale_trials', 'finished', 'finished_digests', 'first_value', 'grid_points',
    'is_duplicate', 'load_spec', 'make_pruner', 'make_sampler', 'metric_of', 'metrics_of',
    'open_study', 'overrides_of', 'parse_spec', 'pruner_settings', 'qmc_points',
    'random_points', 'retried', 'retry_callback', 'retry_history', 'retry_of', 'run_trial',
    'same_point', 'space_size', 'start_trial', 'sweep_points', 'sweep_trials',
    'tpe_startup_trials', 'trial_dir', 'trial_hash', 'trial_seed', 'update_parent_progress',
    '_reject_duplicate']

logger = logging.getLogger(__name__)

SMOOTHING = 0.3


class Reporter:
    """Reports a trial's metric to Optuna every ``report_every`` steps and asks its pruner.

    An ``eval_*`` metric (the mean loss over the eval split's windows) is reported as it is; a
    training metric (the loss of one minibatch) as its exponential moving average over the
    logged steps (weight :data:`SMOOTHING`), so that one noisy minibatch does not prune a good
    trial. Calling it returns True when the trial should stop (pruned).
    """

    def __init__(self, spec: SweepSpec, trial, metric: str):
        self.spec, self.trial, self.metric = spec, trial, metric
        self.smooth = not metric.startswith('eval_')
        self.average: Optional[float] = None
        self.step = 0

    def __call__(self, step: int, metrics: dict) -> bool:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        if self.smooth:
            self.average = value if self.average is None else \
                self.average + SMOOTHING * (value - self.average)
            value = self.average
        if step % self.spec.report_every or self.spec.objectives:  # Optuna: single only
            return False
        self.trial.report(float(value), step)
        self.step = step
        return self.trial.should_prune()


def run_trial(spec: SweepSpec, element: dict, parent_run_id: Optional[str],
              progress: bool = False,
              on_start: Optional[Callable[[int], None]] = None) -> TrialOutcome:
    """Run one trial of a sweep: train it (or finish it), report to Optuna, record in MLflow.

    Args:
        spec: the sweep.
        element: ``{'mode': 'point', 'params': {...}}`` (grid/random), ``{'mode': 'ask'}``
            (tpe: a new point from the sampler, which has seen every finished trial) or
            ``{'mode': 'resume', 'number': N}`` (an interrupted trial).
        parent_run_id: the sweep's MLflow parent run.
        on_start: called with the trial's number once the trial is the study's (before
            training; :class:`TrialProcess` learns so which trial its child runs).

    Returns:
        A :class:`TrialOutcome`. Failures (bad hyperparameters, divergence, out of memory...)
        are outcomes (state FAIL, the error recorded on the trial and its FAILED child run),
        not exceptions; KeyboardInterrupt propagates (the trial stays RUNNING and is resumed
        by the next run of the sweep).
    """
    import optuna

    from trainer.training.data import open_source
    from trainer.training.train import EarlyStop, train

    study = open_study(spec)
    source = open_source(spec.data, split='train')
    has_eval = bool(source.manifest and (source.manifest.split_examples('eval') or 0) > 0)
    metric = metric_of(spec, has_eval)

    def digest_of(params):
        return trial_hash(spec, params, source.fingerprint)

    failures = sum(_state(t) == 'FAIL' for t in sweep_trials(study))
    if failures >= spec.max_failures > 0 or (spec.max_failures == 0 and failures):
        return TrialOutcome(-1, '', element.get('params') or {}, 'SKIPPED',
                            error=f'not run: {failures} trials failed (max_failures '
                                  f'{spec.max_failures})')
    if element['mode'] == 'point':
        done = finished(study, digest_of(element['params']))
        if done is not None:
            return TrialOutcome(done.number, digest_of(element['params']), dict(done.params),
                                'SKIPPED', first_value(done),
                                run_id=done.user_attrs.get('run_id'))
    trial, params, skipped = start_trial(study, spec, element, digest_of)
    if skipped is not None:
        logger.warning('sweep %s: %s', spec.name, skipped.error)
        return skipped
    digest = digest_of(params)
    history = retry_history(study.get_trials(deepcopy=False)[trial.number])
    if history and 'error' in trial.user_attrs:  # the dead trial's reason, copied: not this one's
        trial.set_user_attr('error', None)
    trial.set_user_attr('digest', digest)
    trial.set_user_attr('overrides', overrides_of(params))
    trial.set_user_attr('worker', f'{socket.gethostname()}:{os.getpid()}')
    if on_start is not None:
        on_start(trial.number)
    model_dir = trial_dir(spec, digest)
    trial.set_user_attr('model_dir', model_dir)
    last: dict[str, float] = {}
    reporter = Reporter(spec, trial, metric)
    beating = _Heartbeat(trial, spec.heartbeat)

    def on_log(step, metrics):
        if not last:  # the child run exists now: remember it on the trial
            run_id = _read_run_id(model_dir)
            if run_id:
                trial.set_user_attr('run_id', run_id)
        last.update(metrics)
        last['_step'] = step
        if reporter(step, metrics):
            raise EarlyStop(f'pruned at step {step}')

    tags = {TAG_SWEEP: spec.name, TAG_SWEEP_ID: spec.sweep_id, TAG_TRIAL: str(trial.number),
            TAG_TRIAL_HASH: digest, TAG_OVERRIDES: json.dumps(overrides_of(params)),
            TAG_KIND: 'trial'}
    if history:  # the same MLflow run as the trial it retries (the same model directory)
        tags[TAG_RETRY_OF] = str(history[0])
    outcome = TrialOutcome(trial.number, digest, params, 'FAIL')
    try:
        config = spec.base_config().with_overrides(overrides_of(params))
        log_every = math.gcd(config.train.log_every or spec.report_every, spec.report_every)
        config = config.with_overrides([f'train.log_every={log_every}'])
        result = train(config, source, model_dir, spec.steps, tracking_uri=spec.tracking_uri,
                       experiment=spec.experiment_name,
                       run_name=f'{spec.name}-trial-{trial.number}-{digest[:6]}',
                       progress=progress, eval_data=source.spec if has_eval else None,
                       eval_every=spec.report_every if has_eval else 0,
                       eval_batches=spec.eval_batches, on_log=on_log, tags=tags,
                       parent_run_id=parent_run_id)
        beating.stop()
        outcome.run_id = result['run_id']
        trial.set_user_attr('resumed_from', int(result.get('resumed_from') or 0))
        outcome.step = result['step']
        values = {m: last.get(m, result['losses'].get(m)) for m in metrics_of(spec, has_eval)}
        value = values[metric]
        bad = [m for m, v in values.items() if v is None or not math.isfinite(v)]
        if result.get('stopped_early'):
            outcome.state, outcome.value = 'PRUNED', value
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif bad:
            outcome.error = f'metric {bad[0]!r} was not reported' if values[bad[0]] is None \
                else f'metric {bad[0]!r} is {values[bad[0]]}'
            trial.set_user_attr('error', outcome.error)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            outcome.state, outcome.value = 'COMPLETE', float(value)
            outcome.values = [float(v) for v in values.values()]
            study.tell(trial, outcome.values if spec.objectives else float(value))
    except KeyboardInterrupt:
        beating.stop()
        raise
    except Exception as e:  # noqa: BLE001 - a failing trial is recorded, the sweep goes on
        beating.stop()
        error = f'{type(e).__name__}: {e}'.splitlines()[0][:2000]
        earlier_error, outcome.error = outcome.error, error
        try:
            stored = study.get_trials(deepcopy=False)[trial.number]  # numbers are indices
        except Exception:  # noqa: BLE001 - the storage itself failing: record a failure below
            stored = None
        if stored is not None and stored.state.is_finished():
            # the failure came after the study recorded the trial (inside tell()): keep what
            # the study holds, so the study and the outcome agree
            logger.warning('sweep %s trial %d: %s after it was recorded %s', spec.name,
                           trial.number, outcome.error, stored.state.name)
            outcome.state = {'COMPLETE': 'COMPLETE', 'PRUNED': 'PRUNED'}.get(
                stored.state.name, 'FAIL')
            outcome.value = first_value(stored) if outcome.state == 'COMPLETE' else \
                outcome.value
            # a FAIL the study holds has its own reason (e.g. the metric was not reported)
            outcome.error = None if outcome.state != 'FAIL' else (earlier_error or error)
        else:
            logger.warning('sweep %s trial %d failed: %s', spec.name, trial.number,
                           outcome.error)
            try:
                trial.set_user_attr('error', outcome.error)
                study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            except Exception as storage_error:  # noqa: BLE001 - the study's storage failing
                # the trial stays RUNNING in the study: the next run of the sweep resumes it
                logger.warning('sweep %s trial %d: could not record the failure in the '
                               'study (%s); it is resumed by the next run of the sweep',
                               spec.name, trial.number, storage_error)
    if outcome.run_id is None:
        outcome.run_id = _read_run_id(model_dir)
    _record_in_mlflow(spec, outcome, tags, parent_run_id, metric)
    return outcome


class _Heartbeat:
    """Records the trial's heartbeat in the study's storage every ``interval`` seconds (in a
    daemon thread) until stopped: a worker that dies stops beating."""

    def __init__(self, trial, interval: int):
        import threading

        self.stopped = threading.Event()
        self.thread = None
        if interval:
            storage, trial_id = trial.storage, trial._trial_id

            def beat():
                while True:
                    try:
                        storage.record_heartbeat(trial_id)
                    except Exception as e:  # noqa: BLE001 - a missed beat; the next may do
                        logger.warning('heartbeat of trial %d: %s', trial.number, e)
                    if self.stopped.wait(interval):
                        return

            self.thread = threading.Thread(target=beat, daemon=True,
                                           name=f'heartbeat-{trial.number}')
            self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None


def _read_run_id(model_dir: str) -> Optional[str]:
    from trainer.model.model_dir import read_run_info

    return read_run_info(model_dir).get('run_id')


def _record_in_mlflow(spec: SweepSpec, outcome: TrialOutcome, tags: dict,
                      parent_run_id: Optional[str], metric: str) -> None:
    """Tag the child run with the trial's state (a run for a trial that failed before training
    started is created here, FAILED with its error) and keep the parent current."""
    from trainer.tracking.store import ensure_experiment, make_client, resolve_tracking_uri

    client = make_client(resolve_tracking_uri(spec.tracking_uri))
    if outcome.run_id is None and outcome.state == 'FAIL':
        experiment_id = ensure_experiment(client, spec.experiment_name)
        run_tags = {**tags, TAG_ERROR: outcome.error or 'failed'}
        if parent_run_id:
            run_tags['mlflow.parentRunId'] = parent_run_id
        run = client.create_run(experiment_id, tags=run_tags,
                                run_name=f'{spec.name}-trial-{outcome.number}-'
                                         f'{outcome.digest[:6]}')
        from mlflow.entities import Param

        client.log_batch(run.info.run_id, params=[
            Param(k, v) for k, v in (spec.base_config().flat() | {
                p.split('=', 1)[0]: p.split('=', 1)[1] for p in overrides_of(outcome.params)
            }).items()])
        client.set_terminated(run.info.run_id, 'FAILED')
        outcome.run_id = run.info.run_id
    if outcome.run_id:
        client.set_tag(outcome.run_id, TAG_STATE, outcome.state)
        if outcome.error:
            client.set_tag(outcome.run_id, TAG_ERROR, outcome.error[:5000])
        if outcome.state == 'PRUNED':
            client.set_tag(outcome.run_id, TAG_PRUNED_AT, str(outcome.step))
    if parent_run_id:
        update_parent_progress(spec, client, parent_run_id, metric)


def update_parent_progress(spec: SweepSpec, client, parent_run_id: str, metric: str) -> None:
    """The parent run's running summary: trials by state, and the best value so far."""
    study = open_study(spec)
    trials = sweep_trials(study)
    counts = {s: sum(_state(t) == s for t in trials) for s in ('COMPLETE', 'PRUNED', 'FAIL')}
    done = sum(counts.values())
    metrics = {f'trials_{s.lower()}': float(n) for s, n in counts.items()}
    complete = [t for t in trials if _state(t) == 'COMPLETE' and t.values]
    if spec.objectives:  # no single best: the Pareto front
        metrics['pareto_front_trials'] = float(len(study.best_trials)) if complete else 0.0
    elif complete:
        best = min(complete, key=first_value) if spec.direction == 'minimize' else \
            max(complete, key=first_value)
        metrics[f'best_{metric}'] = float(best.value)
        client.set_tag(parent_run_id, 'ddsp.sweep.best_trial', str(best.number))
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(parent_run_id, metrics=[Metric(k, v, now, done) for k, v in
                                             metrics.items()])
