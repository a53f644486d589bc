"""``ddsp-sweep``: hyperparameter sweeps whose trials are elements of a Beam pipeline.

Locally the DirectRunner runs one trial per worker process (``parallel`` of them, the cores
split between them); on Dataflow, GPU workers by pipeline options, exactly as ``ddsp-prepare``
takes them. Each trial is :func:`trainer.experiments.sweep.run_trial` (the code ``ddsp-train`` runs)
in a DoFn::

    plan (grid points / seeded random points / tpe asks, minus finished trials)
      --Reshuffle--> RunTrial (train, report to Optuna, record in MLflow) --> outcomes
    then: the summary, in output_dir/sweep/ and the parent run (best trial or Pareto front,
          trials.csv from Optuna's trials_dataframe, Optuna's plots, loss curves, importances).

Optuna's study (sampler, pruner, the trials' states) lives in its storage (SQLite in the sweep's
output directory by default, or any SQLAlchemy URL, e.g. a Cloud SQL database when the trials
run on Dataflow); MLflow holds one parent run per sweep and one child run per trial.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from trainer.experiments.sweep_report import format_summary, summarize

log = logging.getLogger('ddsp-sweep')


class RunTrial(beam.DoFn):
    """An element of the plan -> :class:`trainer.experiments.sweep.TrialOutcome` (as a dict).

    With a heartbeat (the default) the trial trains in a child process this DoFn supervises
    (:class:`trainer.experiments.sweep.TrialProcess`): when that process dies, the element lives on
    and runs the trial's retry from its checkpoint. Without one, in the worker itself."""

    def __init__(self, spec, parent_run_id: Optional[str], threads: Optional[int] = None):
        self.spec = spec
        self.parent_run_id = parent_run_id
        self.threads = threads
        self.trials = None

    def setup(self):
        from pipelines.runner import claim_worker_gpus

        # a local worker's own GPU(s), before TensorFlow starts here or in the trial process
        # (which inherits the environment)
        claim_worker_gpus()
        if self.spec.heartbeat:
            from trainer.experiments.sweep_process import TrialProcess

            self.trials = TrialProcess(self.threads)
            self.trials.start()  # imports TensorFlow while the pipeline starts
            return
        from ddsp_core import runtime

        runtime.import_tensorflow()
        if self.threads:
            runtime.set_threads(self.threads)  # kept as it is when TensorFlow already runs

    def process(self, element):
        if self.trials is not None:
            yield self.trials.run(self.spec, element, self.parent_run_id)
            return
        from trainer.experiments.sweep import run_trial

        outcome = run_trial(self.spec, element, self.parent_run_id)
        yield outcome.to_dict()

    def teardown(self):
        if self.trials is not None:
            self.trials.close()


def plan(spec, study, fingerprint: str) -> list[dict]:
    """The elements still to run: grid, seeded random or qmc points without a finished
    trial, or for tpe the interrupted trials plus as many new asks as the budget leaves (a
    re-asked duplicate proposal does not count)."""
    from trainer.experiments import sweep as S

    if spec.algorithm not in S.ASKING:
        points = S.sweep_points(spec)
        todo, seen = [], set()
        done = S.finished_digests(study)  # one read of the study, not one per point
        for params in points:
            digest = S.trial_hash(spec, params, fingerprint)
            if digest in seen or digest in done:
                continue
            seen.add(digest)
            todo.append({'mode': 'point', 'params': params})
        return todo
    S.fail_stale_trials(study)  # a dead worker's trial: failed, enqueued again
    trials = S.sweep_trials(study)
    done = [t for t in trials if t.state.name in ('COMPLETE', 'PRUNED', 'FAIL')]
    stale = [t for t in trials if t.state.name == 'RUNNING']
    todo = [{'mode': 'resume', 'number': t.number} for t in stale]
    todo += [{'mode': 'ask'} for _ in range(max(0, spec.trials - len(done) - len(stale)))]
    return todo


def ensure_parent_run(spec, client, experiment_id: str, metric: str, fingerprint: str) -> str:
    """The sweep's parent run (one per sweep id; found again by a re-run)."""
    from mlflow.entities import Param, RunTag

    from trainer.experiments import sweep as S

    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{S.TAG_SWEEP_ID}` = '{spec.sweep_id}' and "
                                       f"tags.`{S.TAG_KIND}` = 'sweep'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status='RUNNING')
        return run_id
    n_trials = 'every grid point as' if spec.algorithm == 'grid' else f'{spec.trials}'
    description = (f'Sweep {spec.name}: {spec.algorithm} search over '
                   f'{", ".join(p.key for p in spec.space)} ({n_trials} trials of '
                   f'{spec.steps} steps), optimising {metric} ({spec.direction}). '
                   'The child runs are the trials; sweep/ holds trials.csv, Optuna\'s plots '
                   '(parallel coordinates, optimization history, importances), the loss '
                   'curves and the importances.')
    run = client.create_run(experiment_id, run_name=f'sweep-{spec.name}', tags={
        S.TAG_SWEEP: spec.name, S.TAG_SWEEP_ID: spec.sweep_id, S.TAG_KIND: 'sweep',
        'mlflow.note.content': description, 'ddsp.dataset_fingerprint': fingerprint})
    params = {'sweep.algorithm': spec.algorithm, 'sweep.metric': metric,
              'sweep.direction': spec.direction, 'sweep.trials': spec.trials,
              'sweep.steps': spec.steps, 'sweep.preset': spec.preset,
              'sweep.pruner': spec.pruner, 'sweep.report_every': spec.report_every,
              'sweep.seed': spec.seed, 'sweep.data': spec.data,
              'sweep.overrides': json.dumps(list(spec.overrides))}
    params.update({f'space.{p.key}': json.dumps({p.kind: list(p.values)}) for p in spec.space})
    if spec.objectives:
        params['sweep.objectives'] = json.dumps(dict(spec.objectives))
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     tags=[RunTag('ddsp.sweep.spec', json.dumps(spec.to_dict(),
                                                                default=str)[:7900])])
    return run.info.run_id


def local_parallelism(spec, pipeline_args: Sequence[str]) -> tuple[list[str], Optional[int]]:
    """Pipeline args with the local default (multi-process DirectRunner, one worker per
    parallel trial) and the TensorFlow threads per local worker (cores / workers)."""
    from pipelines import runner

    args = runner.with_local_default(pipeline_args, workers=spec.parallel)
    return args, runner.local_worker_threads(PipelineOptions(args))


def run_sweep(spec, pipeline_args: Sequence[str] = (), summarize_now: bool = True) -> dict:
    """Run (or continue) a sweep. Returns its summary (:func:`summarize`)."""
    from pipelines import runner
    from trainer.experiments import sweep as S
    from trainer.tracking.store import ensure_experiment, make_client, resolve_tracking_uri
    from trainer.training.data import open_source

    source = open_source(spec.data, split='train')
    has_eval = bool(source.manifest and (source.manifest.split_examples('eval') or 0) > 0)
    metric = S.metric_of(spec, has_eval)
    if '://' not in spec.out:
        os.makedirs(spec.out, exist_ok=True)
    study = S.open_study(spec)
    client = make_client(resolve_tracking_uri(spec.tracking_uri))
    experiment_id = ensure_experiment(
        client, spec.experiment_name,
        description=f'ddsp-sweep {spec.name}: a parent run per sweep, a child run per trial.')
    parent = ensure_parent_run(spec, client, experiment_id, metric, source.fingerprint)
    todo = plan(spec, study, source.fingerprint)
    print(f'ddsp-sweep: {spec.name}: {len(todo)} trial(s) to run ({spec.algorithm}, '
          f'{spec.parallel} at a time), optimising {metric}; parent run {parent}',
          file=sys.stderr, flush=True)
    started = time.time()
    if todo:
        args, threads = local_parallelism(spec, pipeline_args)
        options = PipelineOptions(args)
        first = [todo]

        def build():  # a job run again (one of its workers died) runs what is left to do
            work = first.pop() if first else plan(spec, study, source.fingerprint)
            pipeline = beam.Pipeline(options=options)
            _ = (pipeline
                 | 'Plan' >> beam.Create(work)
                 | 'Spread' >> beam.Reshuffle()
                 | 'Trial' >> beam.ParDo(RunTrial(spec, parent, threads)))
            return pipeline

        runner.run_and_wait(build, 'sweep pipeline')
    elapsed = time.time() - started
    summary = summarize(spec, client, parent, metric) if summarize_now else {}
    summary.update({'parent_run_id': parent, 'ran': len(todo), 'wall_secs': elapsed})
    return summary


# ---- CLI --------------------------------------------------------------------------------------
def build_arg_parser() -> argparse.ArgumentParser:
    from ddsp_core import runtime

    p = runtime.command_parser(
        'ddsp-sweep',
        description='Run a hyperparameter sweep of the DDSP trainer (grid, seeded random, '
                    'Optuna QMC or Optuna TPE; median or successive-halving pruning) as a '
                    'Beam pipeline, tracked as an MLflow parent run with a child run per '
                    'trial. Running it '
                    'again continues it: finished trials are skipped, interrupted ones '
                    'resumed.',
        epilog='Locally the trials run on the DirectRunner, --parallel worker processes. Any '
               'other option is passed to Beam (e.g. --runner DataflowRunner --project ... '
               'with GPU workers; give --storage a database all workers reach). See '
               'docs/sweeps.md. Exit codes: 0 done, 1 failed, 2 bad usage.')
    p.add_argument('spec', nargs='?', help='the sweep YAML file (flags below override it)')
    p.add_argument('--name', help='sweep name (required without a spec file)')
    p.add_argument('--data', help='prepared dataset')
    p.add_argument('--preset', help='base preset (default tiny)')
    p.add_argument('--set', dest='overrides', action='append', default=None,
                   metavar='KEY=VALUE', help='base config override (repeatable)')
    p.add_argument('--steps', type=int, help='steps per trial')
    p.add_argument('--space', action='append', default=None, metavar='KEY=JSON',
                   help='a searched key, e.g. \'train.learning_rate={"loguniform": [1e-4, '
                        '1e-2]}\' or \'model.rnn_channels=[16, 32]\' (repeatable)')
    p.add_argument('--algorithm', choices=('grid', 'random', 'tpe', 'qmc', 'cmaes', 'gp'),
                   help='default random (gp is refused: it needs PyTorch)')
    p.add_argument('--trials', type=int, help='number of trials (random, qmc, tpe, cmaes)')
    p.add_argument('--parallel', type=int, help='trials at once (default 2)')
    p.add_argument('--metric', help='metric to optimise (default eval_loss with an eval split)')
    p.add_argument('--direction', choices=('minimize', 'maximize'))
    p.add_argument('--objective', action='append', default=None, metavar='METRIC=DIRECTION',
                   help='a further objective, e.g. steps_per_sec=maximize (repeatable): a '
                        'multi-objective sweep, its Pareto front in the summary')
    p.add_argument('--pruner', choices=('none', 'median', 'successive_halving'))
    p.add_argument('--report_every', type=int, help='steps between metric reports')
    p.add_argument('--seed', type=int)
    p.add_argument('--max_failures', type=int, help='stop after this many failed trials')
    p.add_argument('--heartbeat', type=int,
                   help="seconds between a running trial's heartbeats (default 60; 0: off, "
                        'trials then train in the Beam worker itself). A trial whose process '
                        'dies is retried at once from its checkpoint; one whose whole worker '
                        'stops, once silent for 4 times as long')
    p.add_argument('--storage', help='Optuna storage URL (default sqlite in the output dir)')
    p.add_argument('--output_dir', help='where the trials train (default sweeps/NAME)')
    p.add_argument('--experiment', help='MLflow experiment (default ddsp-sweep-NAME)')
    p.add_argument('--tracking_uri', help='MLflow tracking URI')
    p.add_argument('--verbose', action='store_true', help="TensorFlow's and Beam's own logs")
    return p


def spec_from_args(args):
    from trainer.experiments import sweep as S

    flags = {'name': args.name, 'data': args.data, 'preset': args.preset,
             'steps': args.steps, 'algorithm': args.algorithm, 'trials': args.trials,
             'parallel': args.parallel, 'metric': args.metric, 'direction': args.direction,
             'pruner': args.pruner, 'report_every': args.report_every, 'seed': args.seed,
             'max_failures': args.max_failures, 'heartbeat': args.heartbeat,
             'storage': args.storage,
             'output_dir': args.output_dir, 'experiment': args.experiment,
             'tracking_uri': args.tracking_uri}
    if args.overrides is not None:
        flags['set'] = args.overrides
    if args.objective is not None:
        flags['objectives'] = _key_values(args.objective, '--objective', 'METRIC=DIRECTION',
                                          str.strip)
    if args.space is not None:
        flags['space'] = _key_values(args.space, '--space', 'KEY=JSON', json.loads)
    if args.spec:
        return S.load_spec(args.spec, flags)
    return S.parse_spec({k: v for k, v in flags.items() if v is not None}, 'flags')


def _key_values(items, flag: str, form: str, convert) -> dict:
    """``{key: convert(value)}`` of repeated ``KEY=VALUE`` options; SweepError naming the
    option for an item without ``=`` or a value ``convert`` refuses."""
    from trainer.experiments import sweep as S

    out = {}
    for item in items:
        key, sep, raw = item.partition('=')
        if not sep:
            raise S.SweepError(f'{flag} {item!r}: expected {form}')
        try:
            out[key.strip()] = convert(raw)
        except ValueError as e:  # json.JSONDecodeError is one
            raise S.SweepError(f'{flag} {item!r}: not JSON ({e})') from None
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ddsp_core import runtime
    from pipelines import runner

    opened = runner.open_beam_cli(build_arg_parser(), argv, start_trainer=True)
    if isinstance(opened, int):
        return opened
    args, beam_args = opened
    from trainer.experiments.sweep import SweepError
    from trainer.model.config import ConfigError
    from trainer.tracking.store import resolve_tracking_uri
    from trainer.training.data import DataError

    try:
        spec = spec_from_args(args)
        summary = run_sweep(spec, beam_args)
    except (SweepError, ConfigError, DataError) as e:
        return runtime.usage_error('ddsp-sweep', e)
    except KeyboardInterrupt:
        print('ddsp-sweep: interrupted; run the same command again to continue',
              file=sys.stderr)
        return runtime.EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - report any failure with exit code 1
        return runtime.failure('ddsp-sweep', e, log=log, what='sweep')
    print(format_summary(summary, resolve_tracking_uri(spec.tracking_uri)))
    from trainer.tracking.store import run_link

    link = run_link(resolve_tracking_uri(spec.tracking_uri), summary['parent_run_id'])
    if link:  # the parent's page lists the trials; comparison/ and sweep/ are its artifacts
        print(f'ddsp-sweep: MLflow parent run: {link}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
