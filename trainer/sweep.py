"""Hyperparameter sweeps: the spec, the search space, and one trial (the pure core of
``ddsp-sweep``; :mod:`pipelines.sweep` runs the trials as elements of a Beam pipeline).

A sweep is a YAML file (or the same as flags)::

    name: tiny-lr
    preset: tiny                 # base preset, plus --set overrides
    set: [train.log_every=5]
    data: data/violin            # a prepared dataset (its eval split reports the metric)
    steps: 300
    metric: eval_loss            # default eval_loss when the dataset has an eval split
    direction: minimize
    space:
      train.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
      model.rnn_channels: {choice: [16, 32]}
      model.mlp_units: [16, 32]  # a plain list: grid values (also a choice)
      train.grad_clip_norm: {uniform: [1.0, 5.0]}
      model.n_harmonics: {int: [8, 32]}
      model.mlp_layers: {int_log: [1, 4]}
    algorithm: tpe               # grid | random (seeded) | tpe (Optuna's ask/tell)
    seed: 0
    trials: 8                    # ignored by grid (all its points)
    parallel: 2                  # trials at once (local worker processes)
    report_every: 50             # steps between metric reports (and pruning decisions)
    pruner: median               # none | median | successive_halving
    storage: null                # Optuna storage URL; default sqlite in the output dir
    max_failures: 3
    output_dir: sweeps/tiny-lr   # local or gs://; trials train into output_dir/trials/HASH

Every trial trains with :func:`trainer.train.train`, the code ``ddsp-train`` runs, into its own
model directory named by the trial's hash (overrides, base config and dataset fingerprint), as
an MLflow child run of the sweep's parent run. Running a sweep again skips finished trials and
resumes interrupted ones from their checkpoints: the hash names the model directory, whose
``mlflow_run.json`` names the child run, so a retried trial never makes a second run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from trainer.config import Config, ConfigError, load_preset

logger = logging.getLogger(__name__)

ALGORITHMS = ('grid', 'random', 'tpe')
PRUNERS = ('none', 'median', 'successive_halving')
KINDS = ('choice', 'uniform', 'loguniform', 'int', 'int_log')
TAG_SWEEP = 'ddsp.sweep.name'
TAG_SWEEP_ID = 'ddsp.sweep.id'
TAG_TRIAL = 'ddsp.sweep.trial'
TAG_TRIAL_HASH = 'ddsp.sweep.trial_hash'
TAG_OVERRIDES = 'ddsp.sweep.overrides'
TAG_STATE = 'ddsp.sweep.state'
TAG_ERROR = 'ddsp.sweep.error'
TAG_PRUNED_AT = 'ddsp.sweep.pruned_at_step'
TAG_KIND = 'ddsp.kind'


class SweepError(ValueError):
    """A bad sweep spec; the message names the key (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a config key and its distribution."""

    key: str
    kind: str
    values: tuple

    def distribution(self):
        """The Optuna distribution."""
        import optuna

        d = optuna.distributions
        if self.kind == 'choice':
            return d.CategoricalDistribution(list(self.values))
        lo, hi = self.values
        if self.kind == 'uniform':
            return d.FloatDistribution(float(lo), float(hi))
        if self.kind == 'loguniform':
            return d.FloatDistribution(float(lo), float(hi), log=True)
        if self.kind == 'int':
            return d.IntDistribution(int(lo), int(hi))
        return d.IntDistribution(int(lo), int(hi), log=True)

    def sample(self, rng: np.random.Generator):
        """A random value (the seeded ``random`` algorithm)."""
        if self.kind == 'choice':
            return self.values[int(rng.integers(len(self.values)))]
        lo, hi = self.values
        if self.kind == 'uniform':
            return float(rng.uniform(lo, hi))
        if self.kind == 'loguniform':
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if self.kind == 'int':
            return int(rng.integers(int(lo), int(hi) + 1))
        return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi + 0.999)) - 0.4999)))


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep (see the module docstring for the keys)."""

    name: str
    data: str
    steps: int
    space: tuple[Param, ...]
    preset: str = 'tiny'
    overrides: tuple[str, ...] = ()
    metric: Optional[str] = None
    direction: str = 'minimize'
    algorithm: str = 'random'
    seed: int = 0
    trials: int = 8
    parallel: int = 2
    report_every: int = 50
    pruner: str = 'none'
    storage: Optional[str] = None
    max_failures: int = 3
    output_dir: Optional[str] = None
    experiment: Optional[str] = None
    tracking_uri: Optional[str] = None
    eval_batches: int = 4

    @property
    def out(self) -> str:
        return self.output_dir or os.path.join('sweeps', self.name)

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        if '://' in self.out:
            raise SweepError('storage: a gs:// output_dir needs an explicit Optuna storage URL '
                             '(e.g. a Cloud SQL database: postgresql://...)')
        return f'sqlite:///{os.path.abspath(os.path.join(self.out, "optuna.db"))}'

    @property
    def experiment_name(self) -> str:
        return self.experiment or f'ddsp-sweep-{self.name}'

    def base_config(self) -> Config:
        return load_preset(self.preset).with_overrides(list(self.overrides))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d['space'] = {p.key: {p.kind: list(p.values)} for p in self.space}
        d['overrides'] = list(self.overrides)
        return d

    @property
    def sweep_id(self) -> str:
        """A digest of everything that defines the sweep's trials (not its parallelism)."""
        d = self.to_dict()
        for key in ('parallel', 'output_dir', 'tracking_uri', 'storage', 'max_failures'):
            d.pop(key, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _param(key: str, value: Any) -> Param:
    if isinstance(value, list):
        if not value:
            raise SweepError(f'space.{key}: an empty list')
        return Param(key, 'choice', tuple(value))
    if not isinstance(value, dict) or len(value) != 1:
        raise SweepError(f'space.{key}: expected a list or one of {{{", ".join(KINDS)}: ...}}, '
                         f'got {value!r}')
    (kind, args), = value.items()
    if kind not in KINDS:
        raise SweepError(f'space.{key}: unknown kind {kind!r}; expected one of '
                         f'{", ".join(KINDS)}')
    if kind == 'choice':
        if not isinstance(args, list) or not args:
            raise SweepError(f'space.{key}: choice needs a non-empty list')
        return Param(key, kind, tuple(args))
    if not (isinstance(args, list) and len(args) == 2 and
            all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
        raise SweepError(f'space.{key}: {kind} needs [low, high], got {args!r}')
    lo, hi = args
    if not lo < hi:
        raise SweepError(f'space.{key}: {kind} needs low < high, got {args!r}')
    if kind in ('loguniform', 'int_log') and lo <= 0:
        raise SweepError(f'space.{key}: {kind} needs low > 0, got {lo!r}')
    if kind.startswith('int') and not (float(lo).is_integer() and float(hi).is_integer()):
        raise SweepError(f'space.{key}: {kind} bounds must be integers, got {args!r}')
    return Param(key, kind, (lo, hi))


_FIELDS = {f.name for f in dataclasses.fields(SweepSpec)} | {'set'}


def parse_spec(d: dict, source: str = 'sweep') -> SweepSpec:
    """Validate a sweep spec (a dict from YAML or flags).

    Raises:
        SweepError: unknown keys, bad values, a space key the config does not have (names it).
    """
    if not isinstance(d, dict):
        raise SweepError(f'{source}: expected a mapping')
    unknown = sorted(set(d) - _FIELDS)
    if unknown:
        raise SweepError(f'{source}: unknown key(s) {", ".join(unknown)}; valid: '
                         f'{", ".join(sorted(_FIELDS - {"overrides"}))}')
    for key in ('name', 'data', 'steps', 'space'):
        if d.get(key) in (None, '', {}):
            raise SweepError(f'{source}: {key} is required')
    space = d['space']
    if not isinstance(space, dict):
        raise SweepError(f'{source}: space must map config keys to distributions')
    kwargs = {k: v for k, v in d.items() if k not in ('set', 'space')}
    kwargs['overrides'] = tuple(d.get('set') or d.get('overrides') or ())
    kwargs['space'] = tuple(_param(k, v) for k, v in sorted(space.items()))
    try:
        spec = SweepSpec(**kwargs)
    except TypeError as e:
        raise SweepError(f'{source}: {e}') from None
    checks = [
        (isinstance(spec.steps, int) and spec.steps > 0, 'steps', 'a positive integer'),
        (spec.direction in ('minimize', 'maximize'), 'direction', 'minimize or maximize'),
        (spec.algorithm in ALGORITHMS, 'algorithm', ' | '.join(ALGORITHMS)),
        (spec.pruner in PRUNERS, 'pruner', ' | '.join(PRUNERS)),
        (isinstance(spec.trials, int) and spec.trials >= 1, 'trials', '>= 1'),
        (isinstance(spec.parallel, int) and spec.parallel >= 1, 'parallel', '>= 1'),
        (isinstance(spec.report_every, int) and spec.report_every >= 1, 'report_every', '>= 1'),
        (isinstance(spec.max_failures, int) and spec.max_failures >= 0, 'max_failures', '>= 0'),
    ]
    for ok, key, what in checks:
        if not ok:
            raise SweepError(f'{source}: {key} = {getattr(spec, key)!r}; expected {what}')
    if spec.algorithm == 'grid' and any(p.kind != 'choice' for p in spec.space):
        bad = [p.key for p in spec.space if p.kind != 'choice']
        raise SweepError(f'{source}: algorithm grid needs lists (or choice) for every key; '
                         f'{", ".join(bad)} are distributions (use random or tpe)')
    base = spec.base_config()  # preset and overrides valid
    for p in spec.space:  # every key exists and every value converts
        for value in (p.values if p.kind == 'choice' else p.values[:1]):
            try:
                base.with_overrides([f'{p.key}={_override_value(value)}'])
            except ConfigError as e:
                raise SweepError(f'{source}: space.{p.key}: {e}') from None
    return spec


def load_spec(path: str | os.PathLike, overrides: Optional[dict] = None) -> SweepSpec:
    """Read a sweep YAML file; ``overrides`` (flag values that are not None) replace keys."""
    path = Path(path)
    if not path.exists():
        raise SweepError(f'{path}: no such sweep file')
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SweepError(f'{path}: not valid YAML ({e})') from None
    if not isinstance(d, dict):
        raise SweepError(f'{path}: expected a mapping at the top level')
    d.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return parse_spec(d, str(path))


def _override_value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def overrides_of(params: dict[str, Any]) -> list[str]:
    """``--set`` overrides of a trial's params, sorted by key."""
    return [f'{k}={_override_value(params[k])}' for k in sorted(params)]


def trial_hash(spec: SweepSpec, params: dict[str, Any], dataset_fingerprint: str) -> str:
    """A stable name of a trial: its overrides, the base config and the dataset's content."""
    h = hashlib.sha256()
    h.update(json.dumps(spec.base_config().to_dict(), sort_keys=True).encode())
    h.update(json.dumps(overrides_of(params)).encode())
    h.update(f'steps={spec.steps}|data={dataset_fingerprint}'.encode())
    return h.hexdigest()[:12]


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in a fixed order."""
    import itertools

    keys = [p.key for p in spec.space]
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*[p.values for p in spec.space])]


def random_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """``spec.trials`` points drawn from the space with ``spec.seed`` (the same every run)."""
    rng = np.random.default_rng(spec.seed)
    return [{p.key: p.sample(rng) for p in spec.space} for _ in range(spec.trials)]


def distributions(spec: SweepSpec) -> dict:
    return {p.key: p.distribution() for p in spec.space}


def make_pruner(spec: SweepSpec):
    import optuna

    if spec.pruner == 'median':
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    if spec.pruner == 'successive_halving':
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def make_sampler(spec: SweepSpec):
    import optuna

    if spec.algorithm == 'tpe':
        return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=2)
    return optuna.samplers.RandomSampler(seed=spec.seed)  # grid/random points are enqueued


SQLITE_LOCK_TIMEOUT_SECS = 120


def open_study(spec: SweepSpec):
    """The sweep's Optuna study (created on first use) in its storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = spec.storage_url
    if storage.startswith('sqlite:///'):
        os.makedirs(os.path.dirname(storage[len('sqlite:///'):]), exist_ok=True)
        # Trials in several processes write to one SQLite file: wait for its lock (SQLite's
        # default is 5 s, and a "database is locked" in the middle of tell() leaves a trial
        # finished in the study but reported as failed).
        storage = optuna.storages.RDBStorage(
            storage, engine_kwargs={'connect_args': {'timeout': SQLITE_LOCK_TIMEOUT_SECS}})
    return optuna.create_study(
        study_name=f'{spec.name}-{spec.sweep_id}', storage=storage,
        direction=spec.direction, sampler=make_sampler(spec), pruner=make_pruner(spec),
        load_if_exists=True)


def trial_dir(spec: SweepSpec, digest: str) -> str:
    return os.path.join(spec.out, 'trials', digest)


@dataclasses.dataclass
class TrialOutcome:
    """What one trial did."""

    number: int
    digest: str
    params: dict
    state: str  # COMPLETE, PRUNED, FAIL, SKIPPED (already finished)
    value: Optional[float] = None
    step: int = 0
    run_id: Optional[str] = None
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def metric_of(spec: SweepSpec, has_eval: bool) -> str:
    return spec.metric or ('eval_loss' if has_eval else 'total_loss')


# ---- one trial ---------------------------------------------------------------------------------
_FINISHED = ('COMPLETE', 'PRUNED', 'FAIL')


def _trials_by_digest(study) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        digest = t.user_attrs.get('digest') or t.system_attrs.get('fixed_params_digest')
        if digest:
            out.setdefault(digest, []).append(t)
    return out


def _state(trial) -> str:
    return trial.state.name


def finished(study, digest: str):
    """The finished trial of that hash (COMPLETE, PRUNED or FAIL), or None."""
    for t in _trials_by_digest(study).get(digest, []):
        if _state(t) in _FINISHED:
            return t
    return None


def _enqueued_digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(overrides_of(params)).encode()).hexdigest()[:16]


def _acquire(study, spec: SweepSpec, element: dict, digest_of):
    """The Optuna trial to run for an element: a resumed one, an enqueued point, or a new ask."""
    import optuna

    dists = distributions(spec)
    mode = element['mode']
    if mode == 'resume':
        frozen = study.get_trials(deepcopy=False)[element['number']]
        return optuna.trial.Trial(study, frozen._trial_id), dict(frozen.params)
    if mode == 'point':
        params = element['params']
        digest = digest_of(params)
        for t in _trials_by_digest(study).get(digest, []):
            if _state(t) == 'RUNNING':  # interrupted earlier: go on with it
                return optuna.trial.Trial(study, t._trial_id), dict(t.params)
        study.enqueue_trial(params, user_attrs={'digest': digest}, skip_if_exists=False)
    trial = study.ask(dists)
    return trial, dict(trial.params)


def run_trial(spec: SweepSpec, element: dict, parent_run_id: Optional[str],
              progress: bool = False) -> TrialOutcome:
    """Run one trial of a sweep: train it (or finish it), report to Optuna, record in MLflow.

    Args:
        spec: the sweep.
        element: ``{'mode': 'point', 'params': {...}}`` (grid/random), ``{'mode': 'ask'}``
            (tpe: a new point from the sampler, which has seen every finished trial) or
            ``{'mode': 'resume', 'number': N}`` (an interrupted trial).
        parent_run_id: the sweep's MLflow parent run.

    Returns:
        A :class:`TrialOutcome`. Failures (bad hyperparameters, divergence, out of memory...)
        are outcomes (state FAIL, the error recorded on the trial and its FAILED child run),
        not exceptions; KeyboardInterrupt propagates (the trial stays RUNNING and is resumed
        by the next run of the sweep).
    """
    import optuna

    from trainer.data import open_source
    from trainer.train import EarlyStop, train

    study = open_study(spec)
    source = open_source(spec.data, split='train')
    has_eval = bool(source.manifest and (source.manifest.split_examples('eval') or 0) > 0)
    metric = metric_of(spec, has_eval)

    def digest_of(params):
        return trial_hash(spec, params, source.fingerprint)

    failures = sum(_state(t) == 'FAIL' for t in study.get_trials(deepcopy=False))
    if failures >= spec.max_failures > 0 or (spec.max_failures == 0 and failures):
        return TrialOutcome(-1, '', element.get('params') or {}, 'SKIPPED',
                            error=f'not run: {failures} trials failed (max_failures '
                                  f'{spec.max_failures})')
    if element['mode'] == 'point':
        done = finished(study, digest_of(element['params']))
        if done is not None:
            return TrialOutcome(done.number, digest_of(element['params']), dict(done.params),
                                'SKIPPED', done.value, run_id=done.user_attrs.get('run_id'))
    trial, params = _acquire(study, spec, element, digest_of)
    digest = digest_of(params)
    other = finished(study, digest)
    if other is not None and other.number != trial.number:  # tpe proposed a point again
        study.tell(trial, other.value if _state(other) == 'COMPLETE' else None,
                   state=other.state if _state(other) != 'COMPLETE' else None)
        return TrialOutcome(trial.number, digest, params, 'SKIPPED', other.value,
                            run_id=other.user_attrs.get('run_id'))
    trial.set_user_attr('digest', digest)
    trial.set_user_attr('overrides', overrides_of(params))
    model_dir = trial_dir(spec, digest)
    trial.set_user_attr('model_dir', model_dir)
    last: dict[str, float] = {}
    reported = {'step': 0}

    def on_log(step, metrics):
        if not last:  # the child run exists now: remember it on the trial
            run_id = _read_run_id(model_dir)
            if run_id:
                trial.set_user_attr('run_id', run_id)
        last.update(metrics)
        last['_step'] = step
        if step % spec.report_every == 0 and metric in metrics and \
                math.isfinite(metrics[metric]):
            trial.report(float(metrics[metric]), step)
            reported['step'] = step
            if trial.should_prune():
                raise EarlyStop(f'pruned at step {step}')

    tags = {TAG_SWEEP: spec.name, TAG_SWEEP_ID: spec.sweep_id, TAG_TRIAL: str(trial.number),
            TAG_TRIAL_HASH: digest, TAG_OVERRIDES: json.dumps(overrides_of(params)),
            TAG_KIND: 'trial'}
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
        outcome.run_id = result['run_id']
        outcome.step = result['step']
        value = last.get(metric, result['losses'].get(metric))
        if result.get('stopped_early'):
            outcome.state, outcome.value = 'PRUNED', value
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif value is None or not math.isfinite(value):
            outcome.error = f'metric {metric!r} was not reported'
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            outcome.state, outcome.value = 'COMPLETE', float(value)
            study.tell(trial, float(value))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - a failing trial is recorded, the sweep goes on
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
            outcome.value = stored.value if outcome.state == 'COMPLETE' else outcome.value
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


def _read_run_id(model_dir: str) -> Optional[str]:
    path = Path(model_dir) / 'mlflow_run.json'
    try:
        return json.loads(path.read_text()).get('run_id') if path.exists() else None
    except (OSError, ValueError):
        return None


def _record_in_mlflow(spec: SweepSpec, outcome: TrialOutcome, tags: dict,
                      parent_run_id: Optional[str], metric: str) -> None:
    """Tag the child run with the trial's state (a run for a trial that failed before training
    started is created here, FAILED with its error) and keep the parent current."""
    from trainer.tracking import ensure_experiment, make_client, resolve_tracking_uri

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
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(_state(t) == s for t in trials) for s in ('COMPLETE', 'PRUNED', 'FAIL')}
    done = sum(counts.values())
    metrics = {f'trials_{s.lower()}': float(n) for s, n in counts.items()}
    complete = [t for t in trials if _state(t) == 'COMPLETE' and t.value is not None]
    if complete:
        best = min(complete, key=lambda t: t.value) if spec.direction == 'minimize' else \
            max(complete, key=lambda t: t.value)
        metrics[f'best_{metric}'] = float(best.value)
        client.set_tag(parent_run_id, 'ddsp.sweep.best_trial', str(best.number))
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(parent_run_id, metrics=[Metric(k, v, now, done) for k, v in
                                             metrics.items()])
