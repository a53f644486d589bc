"""A sweep's spec: the YAML keys (or the same as flags), their validation, the searched
parameters and a trial's name (its hash). Imports no Optuna at module level.

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
    heartbeat: 60                # seconds; a dead trial process: retried at once; a dead
                                 # worker: once silent 4x as long (0: off)
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
import math
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from trainer.model.config import Config, ConfigError, load_preset

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
TAG_RETRY_OF = 'ddsp.sweep.retry_of'


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


def trial_dir(spec: SweepSpec, digest: str) -> str:
    return os.path.join(spec.out, 'trials', digest)


def metric_of(spec: SweepSpec, has_eval: bool) -> str:
    return spec.metric or ('eval_loss' if has_eval else 'total_loss')


def metrics_of(spec: SweepSpec, has_eval: bool) -> list[str]:
    """Every objective's metric: the sweep's metric, then the further objectives'."""
    return [metric_of(spec, has_eval)] + [m for m, _ in spec.objectives]
