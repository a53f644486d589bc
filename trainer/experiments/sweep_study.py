"""A sweep's Optuna study: the points of grid, random and qmc sweeps, the samplers and
pruner, the study in its storage (heartbeats, the retry of a dead trial), and how an element
of the sweep gets its trial: resumed, enqueued, or asked at a point no other trial has.
"""


from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from typing import Any, Callable, Optional

import numpy as np

from trainer.experiments.sweep_spec import SweepSpec, overrides_of


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


def retry_callback():
    """Optuna's retry of a failed trial (``RetryHeartbeatStaleTrialCallback``): a WAITING copy
    of the trial (its point, attributes and reports) whose ``retry_history`` lists the trials
    it retries, at most :data:`MAX_RETRIES` times. The study's storage calls it for a trial
    failed as stale; :func:`fail_dead_trial` calls it for a trial whose process died."""
    import optuna

    with warnings.catch_warnings():  # an experimental class
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=MAX_RETRIES, inherit_intermediate_values=True)


def retry_history(trial) -> list[int]:
    """The trials a (frozen) trial retries, the first the original; [] for a trial that is
    not a retry (Optuna's ``RetryHeartbeatStaleTrialCallback.retry_history``)."""
    import optuna

    with warnings.catch_warnings():  # an experimental function
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        return list(optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial))


def open_study(spec: SweepSpec):
    """The sweep's Optuna study (created on first use) in its storage.

    With ``spec.heartbeat`` seconds, a running trial records a heartbeat that often; one
    without a heartbeat for four times as long (its worker died) is failed by
    :func:`fail_stale_trials` and :func:`retry_callback` enqueues it again (at most
    :data:`MAX_RETRIES` times): same point, so same model directory, checkpoint and MLflow
    run. (A trial whose process dies under a :class:`TrialProcess` is failed and retried at
    once, :func:`fail_dead_trial`.)
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
        heartbeat = {'heartbeat_interval': spec.heartbeat, 'grace_period': 4 * spec.heartbeat,
                     'heartbeat_stale_trial_callback': retry_callback()}
    storage = _rdb_storage(url, engine_kwargs, heartbeat)
    return optuna.create_study(
        study_name=f'{spec.name}-{spec.sweep_id}', storage=storage,
        directions=spec.directions, sampler=make_sampler(spec), pruner=make_pruner(spec),
        load_if_exists=True)


# What a database says when another process created Optuna's schema between this one's
# check and its CREATE (SQLite, PostgreSQL, MySQL): the schema is there, so open it again.
_SCHEMA_RACE = ('already exists', 'unique constraint failed: alembic_version',
                'duplicate key value', 'duplicate entry')
SCHEMA_RACE_ATTEMPTS = 8


def _rdb_storage(url: str, engine_kwargs: dict, heartbeat: dict):
    """Optuna's RDBStorage on ``url``; when it is new and several processes open it at once
    (a sweep's elements, ``--report`` beside a starting sweep) all of them get it."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(SCHEMA_RACE_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeat_interval is experimental
                warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                  **heartbeat)
        except sqlalchemy.exc.DBAPIError as e:
            text = str(e.orig if e.orig is not None else e).lower()
            if attempt + 1 == SCHEMA_RACE_ATTEMPTS or not any(m in text for m in _SCHEMA_RACE):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError('unreachable')


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


def first_value(trial) -> Optional[float]:
    """A trial's value (its first objective's in a multi-objective study), or None."""
    return trial.values[0] if trial.values else None


_FINISHED = ('COMPLETE', 'PRUNED', 'FAIL')
MAX_REASKS = 10


def is_duplicate(trial) -> bool:
    """A trial the sweep asked for and did not run: the sampler proposed an earlier trial's
    point (recorded as an Optuna FAIL naming that trial, and re-asked)."""
    return 'duplicate_of' in trial.user_attrs


def retried(trials) -> set[int]:
    """The numbers of trials whose worker died and that were enqueued again (by
    :func:`retry_callback`, which lists them in the retry's ``retry_history``)."""
    return {n for t in trials for n in retry_history(t)}


def retry_of(trials, number: int):
    """The trial that retries trial ``number`` (its last ``retry_history`` entry), or None."""
    for t in trials:
        history = retry_history(t)
        if history and history[-1] == number:
            return t
    return None


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
        trial, params, other = _ask_new_point(study, spec, 'the point of trial',
                                              'not run twice')
        if other is None:
            return trial, params, None
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
        trial, params, other = _ask_new_point(study, spec, 'proposed the point of trial',
                                              'asked again')
        if other is None:
            return trial, params, None
    digest = digest_of(params)
    return None, params, TrialOutcome(
        trial.number, digest, params, 'SKIPPED',
        first_value(other) if _state(other) == 'COMPLETE' else None,
        run_id=other.user_attrs.get('run_id'),
        error=f'not run: {1 + MAX_REASKS} proposals were points of other trials (the last '
              f'trial {other.number}, {_state(other)})')


def _ask_new_point(study, spec: SweepSpec, what: str, then: str):
    """Ask the study for a trial; ``(trial, params, None)`` when no other trial has its
    point, else ``(trial, params, other)`` with the trial rejected as ``other``'s duplicate
    (:func:`_reject_duplicate`, ``what``/``then`` its reason)."""
    trial = _ask(study, spec)
    params = dict(trial.params)
    other = same_point(study, trial, params)
    if other is not None:
        _reject_duplicate(study, trial, other, what, then)
    return trial, params, other


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


def fail_dead_trial(spec: SweepSpec, number: int, reason: str):
    """Fail trial ``number``, whose process died, and enqueue its retry (:func:`retry_callback`,
    as the study's stale-trial check does, without waiting for its grace period): exactly
    once, whichever of this and another worker's stale-trial check fails it first (the
    study's storage refuses to finish a trial twice).

    Returns:
        ``(trial, retry)``: the trial as the study then holds it (FAIL, or what it was told
        before its process died) and its retry (None when it was retried
        :data:`MAX_RETRIES` times already).
    """
    import optuna

    study = open_study(spec)
    trial = study.get_trials(deepcopy=False)[number]  # numbers are indices
    if _state(trial) == 'RUNNING':
        try:
            optuna.trial.Trial(study, trial._trial_id).set_user_attr('error', reason)
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            pass  # finished meanwhile (another worker's stale-trial check retried it)
        else:  # a copy: the callback appends to the trial's retry history
            retry_callback()(study, study.get_trials(deepcopy=True)[number])
    trials = study.get_trials(deepcopy=False)
    return trials[number], retry_of(trials, number)
