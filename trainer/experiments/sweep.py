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
    objectives: {steps_per_sec: maximize}  # optional: a multi-objective sweep (Pareto front)
    space:
      train.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
      model.rnn_channels: {choice: [16, 32]}
      model.mlp_units: [16, 32]  # a plain list: grid values (also a choice)
      train.grad_clip_norm: {uniform: [1.0, 5.0]}
      model.n_harmonics: {int: [8, 32]}
      model.mlp_layers: {int_log: [1, 4]}
    algorithm: tpe               # grid | random (seeded) | qmc (Optuna's Sobol) | tpe | cmaes
    seed: 0
    trials: 8                    # ignored by grid (all its points)
    parallel: 2                  # trials at once (local worker processes)
    report_every: 50             # steps between metric reports (and pruning decisions)
    pruner: median               # none | median | successive_halving
    storage: null                # Optuna storage URL; default sqlite in the output dir
    max_failures: 3
    heartbeat: 60                # seconds; a trial silent 4x as long is retried (0: off)
    output_dir: sweeps/tiny-lr   # local or gs://; trials train into output_dir/trials/HASH

Every trial trains with :func:`trainer.training.train.train`, the code ``ddsp-train`` runs, into its
own model directory named by the trial's hash (overrides, base config and dataset fingerprint), as
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
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import yaml

from trainer.model.config import Config, ConfigError, load_preset
from trainer.tracking.tracker import KIND_TAG as TAG_KIND

logger = logging.getLogger(__name__)

ALGORITHMS = ('grid', 'random', 'tpe', 'qmc', 'cmaes')
#: Algorithms whose sampler proposes each trial from the study's results (ask/tell).
ASKING = ('tpe', 'cmaes')
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
    heartbeat: int = 60
    objectives: tuple = ()  # further (metric, direction) pairs: a multi-objective sweep

    @property
    def directions(self) -> list[str]:
        """The study's directions: ``direction``, then each further objective's."""
        return [self.direction] + [d for _, d in self.objectives]

    @property
    def out(self) -> str:
        return self.output_dir or os.path.join('sweeps', self.name)

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
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
        d['objectives'] = dict(self.objectives)
        return d

    @property
    def sweep_id(self) -> str:
        """A digest of everything that defines the sweep's trials (not its parallelism)."""
        d = self.to_dict()
        for key in ('parallel', 'output_dir', 'tracking_uri', 'storage', 'max_failures',
                    'heartbeat'):
            d.pop(key, None)
        if not d['objectives']:  # single-objective sweeps keep the ids they had
            d.pop('objectives')
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
    objectives = d.get('objectives') or {}
    if not (isinstance(objectives, dict) and all(
            isinstance(k, str) and v in ('minimize', 'maximize') for k, v in objectives.items())):
        raise SweepError(f'{source}: objectives must map metric names to minimize or maximize, '
                         f'got {objectives!r}')
    kwargs['objectives'] = tuple(objectives.items())
    try:
        spec = SweepSpec(**kwargs)
    except TypeError as e:
        raise SweepError(f'{source}: {e}') from None
    if spec.algorithm == 'gp':
        raise SweepError(f'{source}: algorithm gp: Optuna\'s Gaussian-process sampler '
                         '(GPSampler) needs PyTorch, which this project does not install (a '
                         'large dependency for one sampler); use tpe, or cmaes for numeric keys')
    checks = [
        (isinstance(spec.steps, int) and spec.steps > 0, 'steps', 'a positive integer'),
        (spec.direction in ('minimize', 'maximize'), 'direction', 'minimize or maximize'),
        (spec.algorithm in ALGORITHMS, 'algorithm', ' | '.join(ALGORITHMS)),
        (spec.pruner in PRUNERS, 'pruner', ' | '.join(PRUNERS)),
        (isinstance(spec.trials, int) and spec.trials >= 1, 'trials', '>= 1'),
        (isinstance(spec.parallel, int) and spec.parallel >= 1, 'parallel', '>= 1'),
        (isinstance(spec.report_every, int) and spec.report_every >= 1, 'report_every', '>= 1'),
        (isinstance(spec.max_failures, int) and spec.max_failures >= 0, 'max_failures', '>= 0'),
        (isinstance(spec.heartbeat, int) and spec.heartbeat >= 0, 'heartbeat',
         'seconds >= 0 (0: off)'),
    ]
    for ok, key, what in checks:
        if not ok:
            raise SweepError(f'{source}: {key} = {getattr(spec, key)!r}; expected {what}')
    if '://' in spec.out:  # trials are model directories under it: local folders
        raise SweepError(f'{source}: output_dir = {spec.out!r}: the trials\' model directories '
                         'are made under it and must be local folders (their checkpoints are '
                         'logged to each trial\'s MLflow run, which is where to find them)')
    if spec.objectives and spec.algorithm == 'cmaes':
        raise SweepError(f'{source}: algorithm cmaes with objectives: Optuna\'s CMA-ES '
                         'samples single-objective studies only (use tpe or random)')
    if spec.objectives and spec.pruner != 'none':
        raise SweepError(f'{source}: pruner {spec.pruner} with objectives: Optuna prunes '
                         'single-objective studies only (use pruner none)')
    if spec.algorithm == 'grid' and any(p.kind != 'choice' for p in spec.space):
        bad = [p.key for p in spec.space if p.kind != 'choice']
        raise SweepError(f'{source}: algorithm grid needs lists (or choice) for every key; '
                         f'{", ".join(bad)} are distributions (use random, qmc, tpe or cmaes)')
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


def qmc_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """``spec.trials`` points of Optuna's QMC sampler (a scrambled Sobol sequence seeded with
    ``spec.seed``; the first point is its independent sampler's, from which it learns the
    space): they do not depend on results, so like random points they are drawn here, once,
    and enqueued."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.QMCSampler(
            seed=spec.seed, independent_sampler=optuna.samplers.RandomSampler(seed=spec.seed))
    study = optuna.create_study(sampler=sampler)
    points = []
    for _ in range(spec.trials):
        trial = study.ask(distributions(spec))
        points.append(dict(trial.params))
        study.tell(trial, 0.0)
    return points


def sweep_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The points of a grid, random or qmc sweep (fixed by the spec; tpe asks as it goes)."""
    return {'grid': grid_points, 'random': random_points, 'qmc': qmc_points}[spec.algorithm](
        spec)


def distributions(spec: SweepSpec) -> dict:
    return {p.key: p.distribution() for p in spec.space}


def pruner_settings(spec: SweepSpec) -> dict[str, int]:
    """The pruner's patience: no trial is pruned before ``startup`` trials have finished (a
    median of one trial is no median; Optuna's default 5, at most half a small sweep) or before
    its first quarter of the steps (the warm-up, when every learning rate's loss is still
    noisy)."""
    trials = space_size(spec) if spec.algorithm == 'grid' else spec.trials
    return {'startup': min(5, max(1, trials // 2)),
            'warmup': max(spec.report_every, spec.steps // 4)}


def make_pruner(spec: SweepSpec):
    import optuna

    patience = pruner_settings(spec)
    if spec.pruner == 'median':
        return optuna.pruners.MedianPruner(n_startup_trials=patience['startup'],
                                           n_warmup_steps=patience['warmup'])
    if spec.pruner == 'successive_halving':
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=patience['warmup'])
    return optuna.pruners.NopPruner()


def tpe_startup_trials(spec: SweepSpec) -> int:
    """TPE's random start-up trials: a fifth of the budget, 2 to 10 (Optuna's default)."""
    return max(2, min(10, spec.trials // 5))


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial ``number`` of a sweep seeded ``seed``: every trial draws
    from its own stream, whichever worker asks for it and however many ask at once."""
    digest = hashlib.sha256(f'{seed}:{number}'.encode()).digest()
    return int.from_bytes(digest[:4], 'little')


def _trial_seeded_sampler(make: Callable[[int], Any], seed: int):
    """An Optuna sampler that, for each trial, delegates to ``make(trial_seed(seed, number))``.

    Every element of the sweep's pipeline opens the study with a new sampler object, so a
    sampler seeded once with the sweep's seed would make every trial its first draw; this one
    seeds by the trial's number, which the study hands out once.
    """
    import optuna

    class TrialSeededSampler(optuna.samplers.BaseSampler):
        def __init__(self):
            self._by_number: dict[int, Any] = {}

        def _for(self, trial):
            if trial.number not in self._by_number:
                self._by_number[trial.number] = make(trial_seed(seed, trial.number))
            return self._by_number[trial.number]

        def before_trial(self, study, trial):
            self._for(trial).before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._for(trial).sample_independent(study, trial, param_name,
                                                       param_distribution)

        def after_trial(self, study, trial, state, values):
            self._for(trial).after_trial(study, trial, state, values)
            self._by_number.pop(trial.number, None)

        def reseed_rng(self):
            pass  # the seed of every trial is fixed by its number

    return TrialSeededSampler()


def make_sampler(spec: SweepSpec):
    import optuna

    if spec.algorithm == 'cmaes':
        # CMA-ES keeps its state in the study's trials, so a new sampler per trial resumes it;
        # its start-up trials and the keys it cannot search (choices) come from a seeded
        # random sampler
        startup = tpe_startup_trials(spec)
        return _trial_seeded_sampler(lambda seed: optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=startup, warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed)), spec.seed)
    if spec.algorithm == 'tpe':
        # constant_liar: a running trial counts as a bad result, so asks made while others
        # run propose elsewhere
        startup = tpe_startup_trials(spec)
        return _trial_seeded_sampler(lambda seed: optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, constant_liar=True),
            spec.seed)
    # grid, random and qmc points are enqueued whole (see sweep_points): nothing is drawn
    return optuna.samplers.RandomSampler(seed=spec.seed)


SQLITE_LOCK_TIMEOUT_SECS = 120


MAX_RETRIES = 2


def open_study(spec: SweepSpec):
    """The sweep's Optuna study (created on first use) in its storage.

    With ``spec.heartbeat`` seconds, a running trial records a heartbeat that often; one
    without a heartbeat for four times as long (its worker died) is failed by
    :func:`fail_stale_trials` and Optuna's ``RetryHeartbeatStaleTrialCallback`` enqueues it
    again (at most :data:`MAX_RETRIES` times): same point, so same model directory, checkpoint
    and MLflow run.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = spec.storage_url
    engine_kwargs = {}
    if url.startswith('sqlite:///'):
        os.makedirs(os.path.dirname(url[len('sqlite:///'):]), exist_ok=True)
        # Trials in several processes write to one SQLite file: wait for its lock (SQLite's
        # default is 5 s, and a "database is locked" in the middle of tell() leaves a trial
        # finished in the study but reported as failed).
        engine_kwargs = {'connect_args': {'timeout': SQLITE_LOCK_TIMEOUT_SECS}}
    else:
        # every element opens the study anew: without a pool its connections close with it
        # (a pool per opened study would hold a server's connections until garbage collection)
        import sqlalchemy.pool

        engine_kwargs = {'poolclass': sqlalchemy.pool.NullPool}
    heartbeat = {}
    if spec.heartbeat:
        with warnings.catch_warnings():  # an experimental class
            warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRIES, inherit_intermediate_values=True)
        heartbeat = {'heartbeat_interval': spec.heartbeat, 'grace_period': 4 * spec.heartbeat,
                     'heartbeat_stale_trial_callback': retry}
    with warnings.catch_warnings():  # heartbeat_interval is experimental
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
    return optuna.create_study(
        study_name=f'{spec.name}-{spec.sweep_id}', storage=storage,
        directions=spec.directions, sampler=make_sampler(spec), pruner=make_pruner(spec),
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
    values: Optional[list] = None  # every objective's (a multi-objective sweep)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def metric_of(spec: SweepSpec, has_eval: bool) -> str:
    return spec.metric or ('eval_loss' if has_eval else 'total_loss')


def metrics_of(spec: SweepSpec, has_eval: bool) -> list[str]:
    """Every objective's metric: the sweep's metric, then the further objectives'."""
    return [metric_of(spec, has_eval)] + [m for m, _ in spec.objectives]


def first_value(trial) -> Optional[float]:
    """A trial's value (its first objective's in a multi-objective study), or None."""
    return trial.values[0] if trial.values else None


# ---- one trial ---------------------------------------------------------------------------------
_FINISHED = ('COMPLETE', 'PRUNED', 'FAIL')
MAX_REASKS = 10
SMOOTHING = 0.3


def is_duplicate(trial) -> bool:
    """A trial the sweep asked for and did not run: the sampler proposed an earlier trial's
    point (recorded as an Optuna FAIL naming that trial, and re-asked)."""
    return 'duplicate_of' in trial.user_attrs


def retried(trials) -> set[int]:
    """The numbers of trials whose worker died and that were enqueued again (by Optuna's
    RetryHeartbeatStaleTrialCallback, which lists them in the retry's ``retry_history``)."""
    return {n for t in trials for n in t.system_attrs.get('retry_history', ())}


def sweep_trials(study) -> list:
    """The study's trials without the duplicates and the retried ones (the sweep's own
    trials, each point once)."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    return [t for t in trials if not is_duplicate(t) and t.number not in again]


def fail_stale_trials(study) -> None:
    """Fail the running trials whose heartbeat stopped (their worker died); the retry
    callback enqueues each again."""
    import optuna

    with warnings.catch_warnings():  # experimental
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _ask(study, spec: SweepSpec):
    """``study.ask`` over the sweep's space (the trials record their heartbeats themselves,
    see :class:`_Heartbeat`, so Optuna's warning that heartbeats need optimize() does not
    apply)."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Heartbeat of storage is supposed')
        return study.ask(distributions(spec))


def _trials_by_digest(study) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in sweep_trials(study):
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


def finished_digests(study) -> set[str]:
    """The hashes that have a finished trial (:func:`finished` of all of them, one read)."""
    return {digest for digest, trials in _trials_by_digest(study).items()
            if any(_state(t) in _FINISHED for t in trials)}


def _enqueued_digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(overrides_of(params)).encode()).hexdigest()[:16]


def space_size(spec: SweepSpec) -> float:
    """How many distinct points the space has (infinite with a continuous distribution)."""
    if any(p.kind != 'choice' for p in spec.space):
        return math.inf
    return math.prod(len(p.values) for p in spec.space)


def same_point(study, trial, params: dict):
    """Another trial with the point ``params``, finished or running (also one that runs at
    the same time: then both ask again, and neither trains the point twice), or None."""
    key = overrides_of(params)
    for t in sweep_trials(study):
        if t.number != trial.number and t.params and \
                _state(t) in _FINISHED + ('RUNNING',) and overrides_of(t.params) == key:
            return t
    return None


def start_trial(study, spec: SweepSpec, element: dict, digest_of):
    """The Optuna trial to run for an element: a resumed one, an enqueued point, or a new ask
    at a point no other trial has (re-asked up to :data:`MAX_REASKS` times, the second half
    of them with a seeded random point, which the sampler takes as enqueued).

    Returns:
        ``(trial, params, None)`` to run, or ``(None, params, outcome)`` when there is nothing
        to run (the point is another trial's): the SKIPPED outcome to return.
    """
    import optuna

    mode = element['mode']
    fail_stale_trials(study)
    if mode == 'resume':
        frozen = study.get_trials(deepcopy=False)[element['number']]
        if _state(frozen) == 'RUNNING':
            return optuna.trial.Trial(study, frozen._trial_id), dict(frozen.params), None
        # failed as stale since the sweep was planned (its worker died): the retry the
        # study enqueued for it is what the ask below takes
        mode = 'ask'
    if mode == 'point':
        params = element['params']
        digest = digest_of(params)
        waiting = False
        for t in _trials_by_digest(study).get(digest, []):
            if _state(t) == 'RUNNING':  # interrupted earlier: go on with it
                return optuna.trial.Trial(study, t._trial_id), dict(t.params), None
            waiting = waiting or _state(t) == 'WAITING'  # a retry is enqueued already
        if not waiting:
            study.enqueue_trial(params, user_attrs={'digest': digest}, skip_if_exists=False)
        # the oldest waiting trial: this point, or another element's point or retry (which
        # then runs this point's)
        trial = _ask(study, spec)
        params = dict(trial.params)
        other = same_point(study, trial, params)
        if other is None:
            return trial, params, None
        _reject_duplicate(study, trial, other, 'the point of trial', 'not run twice')
        return None, params, TrialOutcome(
            trial.number, digest_of(params), params, 'SKIPPED', error=f'not run: the point of '
            f'trial {other.number} ({_state(other)})')
    points = {json.dumps(overrides_of(t.params)) for t in sweep_trials(study) if t.params}
    if len(points) >= space_size(spec):
        return None, {}, TrialOutcome(-1, '', {}, 'SKIPPED', error=f'every one of the '
                                      f'{len(points)} points of the space has a trial')
    visited = [json.loads(p) for p in points]
    for attempt in range(1 + MAX_REASKS):
        if attempt > MAX_REASKS // 2:  # the sampler insists (e.g. TPE on a few choices)
            study.enqueue_trial(_fallback_point(spec, visited, attempt), skip_if_exists=False)
        trial = _ask(study, spec)
        params = dict(trial.params)
        other = same_point(study, trial, params)
        if other is None:
            return trial, params, None
        _reject_duplicate(study, trial, other, 'proposed the point of trial', 'asked again')
    digest = digest_of(params)
    return None, params, TrialOutcome(
        trial.number, digest, params, 'SKIPPED',
        first_value(other) if _state(other) == 'COMPLETE' else None,
        run_id=other.user_attrs.get('run_id'),
        error=f'not run: {1 + MAX_REASKS} proposals were points of other trials (the last '
              f'trial {other.number}, {_state(other)})')


def _reject_duplicate(study, trial, other, what: str, then: str) -> None:
    """Record ``trial`` as a FAIL whose point is ``other``'s (``duplicate_of`` and the reason
    in its user attributes): it is never trained."""
    import optuna

    trial.set_user_attr('duplicate_of', other.number)
    trial.set_user_attr('error', f'{what} {other.number} ({_state(other)}); {then}')
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _fallback_point(spec: SweepSpec, visited: list, attempt: int) -> dict[str, Any]:
    """A seeded random point for an ask the sampler keeps answering with old points: one
    without a trial when the space is a few choices, else a draw from the space."""
    import itertools

    rng = np.random.default_rng([spec.seed, len(visited), attempt])
    if space_size(spec) <= 10_000:
        keys = [p.key for p in spec.space]
        free = [dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*[p.values for p in spec.space])
                if overrides_of(dict(zip(keys, combo, strict=True))) not in visited]
        if free:
            return free[int(rng.integers(len(free)))]
    return {p.key: p.sample(rng) for p in spec.space}


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


def _trial_worker(connection, threads: Optional[int]) -> None:
    """The child process of a :class:`TrialProcess`: TensorFlow imported once, then trial
    after trial as the parent sends them (``None``: stop)."""
    from ddsp_core import runtime

    runtime.import_tensorflow()
    if threads:
        runtime.set_threads(threads)
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the parent went away
            return
        if message is None:
            return
        spec, element, parent_run_id = message
        try:
            outcome = run_trial(spec, element, parent_run_id,
                                on_start=lambda number: connection.send(('started', number)))
        except BaseException as e:  # the parent raises it; an interrupt also ends this process
            connection.send(('error', f'{type(e).__name__}: {e}'))
            raise
        connection.send(('outcome', outcome.to_dict()))


def _exit_reason(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        import signal

        try:
            return f'was killed by {signal.Signals(-exitcode).name}'
        except ValueError:
            return f'was killed by signal {-exitcode}'
    return f'exited with code {exitcode}'


class TrialProcess:
    """Runs a sweep's trials in a child process it supervises, so that a trial whose process
    dies (kill -9, the kernel's out-of-memory killer) is retried within the same sweep run.

    The child (started with ``spawn``, TensorFlow imported once) runs :func:`run_trial` for
    each element and tells the parent the trial's number when it starts. If the child dies,
    the parent waits until the study fails that trial as stale (its heartbeat stopped for the
    grace period, four heartbeats: Optuna's heartbeat, :func:`fail_stale_trials`), whose
    retry callback enqueues the same point again; then it resumes the element in a new child,
    which takes that retry: the same model directory, so training goes on from the trial's
    last checkpoint in the same MLflow run (``mlflow_run.json`` names it). After
    :data:`MAX_RETRIES` deaths of one element its outcome is a FAIL naming the cause.

    The supervisor is the Beam element's process (:class:`pipelines.sweep.RunTrial`), so it
    outlives the trial's process on any runner."""

    def __init__(self, threads: Optional[int] = None):
        self.threads = threads
        self.process = None
        self.connection = None

    def start(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context('spawn')  # no fork of a process with threads
        parent, child = context.Pipe()
        self.process = context.Process(target=_trial_worker, args=(child, self.threads),
                                       name='ddsp-sweep-trial', daemon=True)
        self.process.start()
        child.close()
        self.connection = parent

    def close(self) -> None:
        if self.process is None:
            return
        try:
            self.connection.send(None)
        except OSError:
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()
        self.process = self.connection = None

    def _run_once(self, spec: SweepSpec, element: dict, parent_run_id: Optional[str],
                  started: list) -> Optional[dict]:
        """The outcome, or None when the child died (the trial's number, if it got one, is
        appended to ``started``)."""
        if self.process is None or not self.process.is_alive():
            self.close()
            self.start()
        try:
            self.connection.send((spec, element, parent_run_id))
            while True:
                kind, value = self.connection.recv()
                if kind == 'started':
                    started.append(value)
                elif kind == 'outcome':
                    return value
                else:
                    raise RuntimeError(f'sweep {spec.name}: the trial process failed: {value}')
        except (EOFError, OSError):  # the child died
            return None

    def run(self, spec: SweepSpec, element: dict, parent_run_id: Optional[str]) -> dict:
        """Run ``element`` (see :func:`run_trial`) to its outcome (as a dict), through
        deaths of the trial's process."""
        for _ in range(MAX_RETRIES + 1):
            started: list[int] = []
            outcome = self._run_once(spec, element, parent_run_id, started)
            if outcome is not None:
                return outcome
            self.process.join(10)
            reason = (f'its trial process (pid {self.process.pid}) '
                      f'{_exit_reason(self.process.exitcode)}')
            self.close()
            if not started:  # died before it had a trial: run the element again
                logger.warning('sweep %s: %s before starting a trial; starting it again',
                               spec.name, reason)
                continue
            number = started[-1]
            logger.warning('sweep %s trial %d: %s; retried once the study fails it (%d s '
                           'without a heartbeat)', spec.name, number, reason,
                           4 * spec.heartbeat)
            if not _wait_until_failed(spec, number):
                return TrialOutcome(number, '', {}, 'FAIL', error=f'{reason}; the trial is '
                                    'still RUNNING in the study after its grace period').to_dict()
            element = {'mode': 'resume', 'number': number}
        return TrialOutcome(started[-1] if started else -1, '', {}, 'FAIL', error=(
            f'{reason}: {MAX_RETRIES + 1} times, not retried again')).to_dict()


def _wait_until_failed(spec: SweepSpec, number: int) -> bool:
    """Wait for the study to fail trial ``number`` as stale (True), at most a few heartbeats
    past its grace period (False)."""
    study = open_study(spec)
    deadline = time.monotonic() + 6 * spec.heartbeat + 30
    while time.monotonic() < deadline:
        fail_stale_trials(study)
        if _state(study.get_trials(deepcopy=False)[number]) != 'RUNNING':
            return True
        time.sleep(max(0.2, spec.heartbeat / 4))
    return False


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
    from trainer.tracking.tracker import ensure_experiment, make_client, resolve_tracking_uri

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
