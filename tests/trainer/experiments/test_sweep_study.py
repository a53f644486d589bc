"""The sweep's search without training: its own ask/tell/report code (trainer.experiments.sweep's
open_study, start_trial, Reporter) driven with synthetic objectives, as ddsp-sweep's workers
drive it (every trial opens the study anew, several trials may be in flight)."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import optuna
import pytest

from trainer.experiments import sweep as S

LR = 'train.learning_rate'
CLIP = 'train.grad_clip_norm'


def _spec(tmp_path, **kw):
    d = {'name': 'synthetic', 'preset': 'tiny', 'data': 'unused', 'steps': 100,
         'algorithm': 'tpe', 'trials': 6, 'output_dir': str(tmp_path / 'out'),
         'space': {LR: {'loguniform': [1e-5, 1e-1]}, CLIP: {'uniform': [1.0, 5.0]}}}
    d.update(kw)
    return S.parse_spec(d)


def _elements(spec):
    if spec.algorithm in S.ASKING:
        return [{'mode': 'ask'} for _ in range(spec.trials)]
    return [{'mode': 'point', 'params': p} for p in S.sweep_points(spec)]


def search(spec, objective, parallel=1, one_study=False):
    """Run the sweep's trials with ``objective(params) -> value`` instead of training, up to
    ``parallel`` of them asked before the oldest is told; every trial opens the study anew, as
    in every worker (``one_study``: opened once, quicker). Returns the outcomes: (number,
    params, value) of every trial run, ('SKIPPED', error) for an element with nothing to run."""
    def digest_of(params):
        return S.trial_hash(spec, params, 'synthetic')

    outcomes, in_flight = [], []

    def tell_oldest():
        study, trial, params = in_flight.pop(0)
        value = objective(params)
        study.tell(trial, value)
        outcomes.append((trial.number, params, value))

    opened = S.open_study(spec) if one_study else None
    for element in _elements(spec):
        study = opened if one_study else S.open_study(spec)
        trial, params, skipped = S.start_trial(study, spec, element, digest_of)
        if skipped is not None:
            outcomes.append(('SKIPPED', skipped.error))
            continue
        in_flight.append((study, trial, params))
        if len(in_flight) == parallel:
            tell_oldest()
    while in_flight:
        tell_oldest()
    return outcomes


def bowl(params):
    """A known function: its minimum 0 at learning rate 10**-2.5, clip norm 3.7."""
    return (math.log10(params[LR]) + 2.5) ** 2 + (params[CLIP] - 3.7) ** 2 / 4


@pytest.mark.parametrize('algorithm,parallel', [('tpe', 1), ('tpe', 2), ('tpe', 3),
                                                ('cmaes', 1), ('cmaes', 3)])
def test_asking_samplers_propose_distinct_points_at_any_parallelism(tmp_path, algorithm,
                                                                      parallel):
    spec = _spec(tmp_path, trials=6, algorithm=algorithm)
    outcomes = search(spec, bowl, parallel)
    points = [tuple(sorted(p.items())) for _, p, _ in outcomes]
    assert len(outcomes) == 6 and len(set(points)) == 6, outcomes
    trials = S.open_study(spec).get_trials()
    assert [t.state.name for t in trials] == ['COMPLETE'] * 6  # no proposal had to be re-asked


@pytest.mark.parametrize('parallel', [1, 2])
def test_a_proposal_equal_to_another_trials_point_is_asked_again(tmp_path, parallel):
    """Six points in the space and seven trials: every point once, re-asked proposals recorded
    with the trial they repeated, and the seventh trial not run."""
    spec = _spec(tmp_path, trials=7, space={'model.rnn_channels': [16, 32, 64],
                                             LR: [0.001, 0.003]})
    outcomes = search(spec, lambda p: p[LR] * p['model.rnn_channels'], parallel)
    ran = [o for o in outcomes if o[0] != 'SKIPPED']
    assert len({tuple(sorted(p.items())) for _, p, _ in ran}) == len(ran) == 6
    assert [o for o in outcomes if o[0] == 'SKIPPED'] == [
        ('SKIPPED', 'every one of the 6 points of the space has a trial')]
    study = S.open_study(spec)
    reasked = [t for t in study.get_trials() if S.is_duplicate(t)]
    assert reasked, 'TPE on six points proposes some twice'
    for t in reasked:
        first = study.get_trials()[t.user_attrs['duplicate_of']]
        assert t.params == first.params and t.state.name == 'FAIL'
        assert t.user_attrs['error'].startswith(f'proposed the point of trial {first.number}')


def test_the_same_seed_gives_the_same_points(tmp_path):
    def points(seed, where):
        spec = _spec(tmp_path / where, trials=8, seed=seed)
        return [p for _, p, _ in search(spec, bowl)]

    first = points(0, 'a')
    assert points(0, 'b') == first
    assert points(1, 'c') != first
    assert len({p[LR] for p in first}) == 8


@pytest.mark.slow
def test_tpe_finds_a_better_point_than_random_with_the_same_budget(tmp_path, request):
    """On the bowl, 30 trials: TPE's best beats random's best for most seeds."""
    import tempfile
    from pathlib import Path

    # the study's SQLite file in memory (tmpfs): 600 trials without waiting for the disk
    shm = Path(tempfile.mkdtemp(dir='/dev/shm' if os.path.isdir('/dev/shm') else tmp_path))
    request.addfinalizer(lambda: shutil.rmtree(shm, ignore_errors=True))
    results = []
    for seed in range(10):
        best = {}
        for algorithm in ('tpe', 'random'):
            spec = _spec(shm / f'{algorithm}{seed}', algorithm=algorithm, trials=30,
                         seed=seed)
            best[algorithm] = min(value for _, _, value in search(spec, bowl, one_study=True))
        results.append(best)
    wins = sum(r['tpe'] < r['random'] for r in results)
    print('tpe vs random, best of 30:', [(round(r['tpe'], 4), round(r['random'], 4))
                                         for r in results], f'tpe better in {wins}/10')
    assert wins >= 7, results
    assert np.median([r['tpe'] for r in results]) < np.median([r['random'] for r in results])


def test_cmaes_converges_on_the_bowl_and_beats_its_random_start(tmp_path):
    """CMA-ES through the sweep's ask/tell code: after its random start-up trials its
    proposals close in on the minimum (a CMA-ES run of 24 trials on the bowl, one seed)."""
    spec = _spec(tmp_path, algorithm='cmaes', trials=24, seed=3)
    outcomes = search(spec, bowl, one_study=True)
    startup = S.tpe_startup_trials(spec)
    values = [value for _, _, value in outcomes]
    trials = S.open_study(spec).get_trials()
    assert all('cma:generation' in str(t.system_attrs) or t.number < startup for t in trials)
    assert min(values[startup:]) < min(values[:startup]) / 4, values
    assert np.median(values[-8:]) < np.median(values[:startup]), values


def test_qmc_points_are_optunas_sobol_points_distinct_and_fixed(tmp_path):
    spec = _spec(tmp_path, algorithm='qmc', trials=8)
    points = S.sweep_points(spec)
    assert points == S.sweep_points(spec) and len({p[LR] for p in points}) == 8
    outcomes = search(spec, bowl, parallel=2)
    assert [p for _, p, _ in sorted(outcomes, key=lambda o: o[0])] == points


def loss_curve(params, step):
    """A training loss of one minibatch: learning rates up to 0.01 descend faster the higher
    they are, 0.03 diverges; a minibatch at step 25 of the 0.00645 trial is a bad one."""
    lr = params[LR]
    noise = 0.1 * np.random.default_rng(int(lr * 1e6) * 1000 + step).standard_normal()
    if lr > 0.01:
        return 5.0 + 0.05 * step + noise
    spike = 2.0 if (lr == 0.00645 and step == 25) else 0.0
    return 1.0 + 4.0 * math.exp(-2.0 * lr * step) + noise + spike


def prune_search(spec, log_every=5):
    """The trials of ``spec`` (enqueued points) one after another, logging ``loss_curve`` every
    ``log_every`` steps through the sweep's Reporter, as run_trial's on_log does."""
    def digest_of(params):
        return S.trial_hash(spec, params, 'synthetic')

    states = {}
    for element in _elements(spec):
        study = S.open_study(spec)
        trial, params, _ = S.start_trial(study, spec, element, digest_of)
        report = S.Reporter(spec, trial, 'total_loss')
        for step in range(log_every, spec.steps + 1, log_every):
            if report(step, {'total_loss': loss_curve(params, step)}):
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                states[params[LR]] = f'PRUNED at {step}'
                break
        else:
            study.tell(trial, loss_curve(params, spec.steps))
            states[params[LR]] = 'COMPLETE'
    return states


def test_median_pruning_keeps_a_near_copy_of_the_best_and_prunes_a_diverging_trial(tmp_path):
    """The issue's case: 6 trials of 200 steps reporting every 25; the best trial first, then
    two slower ones, then a near-copy of the best with one bad minibatch at its first report,
    a diverging one and a very slow one."""
    lrs = [0.0063, 0.001, 0.0003, 0.00645, 0.03, 1e-5]
    spec = _spec(tmp_path, algorithm='grid', steps=200, report_every=25, pruner='median',
                 trials=6, space={LR: lrs})
    assert S.pruner_settings(spec) == {'startup': 3, 'warmup': 50}
    states = prune_search(spec)
    assert states[0.0063] == states[0.00645] == 'COMPLETE', states
    assert states[0.03] == 'PRUNED at 50', states
    assert states[1e-5].startswith('PRUNED'), states
    assert states[0.001] == states[0.0003] == 'COMPLETE'  # the start-up trials


def test_the_reporter_smooths_a_training_loss_and_reports_eval_loss_as_it_is(tmp_path):
    spec = _spec(tmp_path, report_every=10, trials=1)
    study = S.open_study(spec)
    trial, _, _ = S.start_trial(study, spec, {'mode': 'ask'}, lambda p: 'x')
    train_report, eval_report = S.Reporter(spec, trial, 'total_loss'), None
    for step, loss in ((5, 2.0), (10, 4.0)):
        train_report(step, {'total_loss': loss})
    assert study.get_trials()[0].intermediate_values == {10: pytest.approx(2.0 + 0.3 * 2.0)}
    eval_report = S.Reporter(spec, trial, 'eval_loss')
    eval_report(20, {'eval_loss': 3.0})
    assert study.get_trials()[0].intermediate_values[20] == 3.0


def test_a_resume_element_whose_trial_was_failed_meanwhile_asks_instead(tmp_path):
    """Planned as 'resume' while RUNNING, failed as stale before its element ran (its worker
    died): the element takes a new (or the retry's) trial instead of training a finished one."""
    import optuna

    spec = _spec(tmp_path, trials=3)
    study = S.open_study(spec)
    dead = study.ask(S.distributions(spec))
    study.tell(dead, state=optuna.trial.TrialState.FAIL)
    # what the heartbeat's stale-trial handling does: a retry of the same point is queued
    optuna.storages.RetryFailedTrialCallback()(study, study.get_trials()[dead.number])
    trial, params, skipped = S.start_trial(
        study, spec, {'mode': 'resume', 'number': dead.number},
        lambda p: S.trial_hash(spec, p, 'synthetic'))
    assert skipped is None and trial.number != dead.number
    assert study.get_trials()[trial.number].state.name == 'RUNNING'
    # the element took the dead trial's retry: the same point, recorded as its retry
    assert trial.params == dead.params and params
    assert dead.number in study.get_trials()[trial.number].system_attrs.get('retry_history', [])


def test_a_dead_trial_is_failed_and_retried_at_once_exactly_once(tmp_path):
    """What the supervisor does when a trial's process dies: the trial is a FAIL with the
    cause and one retry of its point is queued at once (no grace period); a second report of
    the same death, or another worker's stale-trial check, queues no second retry; the retry
    taken by the resumed element is that trial, not a new point; after MAX_RETRIES retries
    there is none."""
    spec = _spec(tmp_path, trials=3, heartbeat=60)
    digest_of = lambda p: S.trial_hash(spec, p, 'synthetic')  # noqa: E731
    study = S.open_study(spec)
    trial, params, _ = S.start_trial(study, spec, {'mode': 'ask'}, digest_of)
    trial.report(1.5, 10)
    dead, retry = S.fail_dead_trial(spec, trial.number, 'killed by SIGKILL')
    assert dead.state.name == 'FAIL' and dead.user_attrs['error'] == 'killed by SIGKILL'
    assert retry.state.name == 'WAITING' and retry.params == params
    assert S.retry_history(retry) == [trial.number] and retry.intermediate_values == {10: 1.5}
    assert S.fail_dead_trial(spec, trial.number, 'again')[1].number == retry.number
    S.fail_stale_trials(study)  # the heartbeat's own check, meanwhile
    waiting = [t for t in study.get_trials() if t.state.name == 'WAITING']
    assert [t.number for t in waiting] == [retry.number]
    # the element resumed after the death takes the retry (same point, not a new ask)
    taken, taken_params, _ = S.start_trial(
        study, spec, {'mode': 'resume', 'number': trial.number}, digest_of)
    assert taken.number == retry.number and taken_params == params
    assert [t.number for t in S.sweep_trials(study)] == [retry.number]  # counted once
    for _ in range(S.MAX_RETRIES):  # the retry dies, and its retry...
        dead, retry = S.fail_dead_trial(spec, taken.number, 'killed')
        if retry is None:
            break
        taken, _, _ = S.start_trial(study, spec, {'mode': 'resume', 'number': taken.number},
                                    digest_of)
    assert retry is None and len(S.retry_history(study.get_trials()[taken.number])) == \
        S.MAX_RETRIES


def test_cmaes_with_objectives_is_refused_when_the_spec_is_read(tmp_path):
    with pytest.raises(S.SweepError, match='cmaes with objectives'):
        _spec(tmp_path, algorithm='cmaes', pruner='none',
              objectives={'steps_per_sec': 'maximize'})


def test_gp_is_refused_with_the_reason(tmp_path, capsys):
    """Optuna's GPSampler needs PyTorch, which the project does not install: one clear line,
    exit 2, from the spec file and from the command line."""
    from pipelines.sweep import main

    with pytest.raises(S.SweepError, match='gp: .*needs PyTorch'):
        _spec(tmp_path, algorithm='gp')
    assert main(['--name', 'x', '--data', str(tmp_path), '--steps', '1', '--algorithm', 'gp',
                 '--space', f'{LR}=' + '{"loguniform": [1e-4, 1e-2]}',
                 '--output_dir', str(tmp_path / 'out')]) == 2
    assert 'needs PyTorch' in capsys.readouterr().err


_OPEN_AT_ONCE = '''
import sys, time
from trainer.experiments import sweep as S
spec = S.parse_spec({'name': 'race', 'preset': 'tiny', 'data': 'unused', 'steps': 10,
                     'algorithm': 'tpe', 'trials': 2, 'output_dir': sys.argv[1],
                     'space': {'train.learning_rate': {'loguniform': [1e-5, 1e-1]}}})
start = float(sys.argv[2])
while time.time() < start:
    pass
print(S.open_study(spec).study_name)
'''


@pytest.mark.slow
def test_processes_opening_a_new_study_at_once_all_get_it(tmp_path):
    """A new sweep's elements (and ``--report`` beside it) open its SQLite storage at the same
    moment: each of them races to create Optuna's tables, and every one must get the study.
    (Without the retry, 4 processes x 5 fresh files failed 6 of 20 opens here.)"""
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONPATH=os.getcwd())
    for attempt in range(3):
        out = tmp_path / f'out{attempt}'
        start = time.time() + 8  # after every interpreter has imported optuna
        procs = [subprocess.Popen([sys.executable, '-c', _OPEN_AT_ONCE, str(out), str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env) for _ in range(4)]
        results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
        for stdout, stderr, rc in results:
            assert rc == 0, stderr[-2000:]
            assert stdout.strip().startswith('race-'), stdout
        names = {stdout.strip() for stdout, _, _ in results}
        assert len(names) == 1
        study = optuna.load_study(study_name=names.pop(),
                                  storage=S.parse_spec({
                                      'name': 'race', 'preset': 'tiny', 'data': 'unused',
                                      'steps': 10, 'algorithm': 'tpe', 'trials': 2,
                                      'output_dir': str(out),
                                      'space': {LR: {'loguniform': [1e-5, 1e-1]}}}).storage_url)
        assert study.get_trials() == []
