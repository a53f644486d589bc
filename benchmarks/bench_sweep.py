"""Sweep throughput: 4 `tiny` trials on 2 local workers against the same 4 one after another.

Writes a small synthetic prepared dataset (1 s records, train and eval splits), then runs the
same grid sweep twice with ddsp-sweep's own code (``pipelines.sweep.run_sweep``): ``parallel=2``
(two DirectRunner worker processes, one thread each) and ``parallel=1``, alternating the order
over ``--repeats``. Reports the wall times, their ratio (target <= 0.55) and the per-trial
overhead: wall time per trial minus the mean training time of a trial's MLflow run (scheduling,
worker start-up, MLflow bookkeeping; target < 5 s), as JSON.

A second baseline is what a user does without ddsp-sweep: the same 4 trainings as 4
``ddsp-train`` processes one after another (``python -m trainer.training.train``, same preset, steps
and learning rates; no eval-split passes, which the sweep's trials also make); ``--no_cli`` skips
it.

A third mode, ``--scale N [N ...]``, measures how the overhead grows with the number of
trials: a TPE sweep of N trials (``--steps`` each, one ``eval_loss`` at the end) per N on 2
workers with Optuna's study and MLflow's runs on a throw-away PostgreSQL server
(``tests/postgres_server.py``, an ``mlflow server`` on it), both on 127.0.0.1. Besides the
per-trial overhead above it reports, per block of 20 trials in start order, the mean gap
between one trial's MLflow run ending and the next one starting on the same worker process
(the trial's ``worker`` attribute): asking the sampler, opening the study, recording the
outcome, the parent's progress.

    python benchmarks/bench_sweep.py                 # 4 trials x 60 steps, 1 repeat
    python benchmarks/bench_sweep.py --steps 300 --repeats 2 --out results.json
    python benchmarks/bench_sweep.py --scale 20 200 --steps 30 --out results.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402 - after the path insert


def run_once(root: Path, data: Path, parallel: int, steps: int, tag: str) -> dict:
    from mlflow.tracking import MlflowClient

    from pipelines.sweep import run_sweep
    from trainer.experiments import sweep as S

    uri = f'sqlite:///{root / "mlflow.db"}'
    spec = S.parse_spec({
        'name': f'bench-{tag}-p{parallel}', 'preset': 'tiny', 'data': str(data),
        'steps': steps, 'algorithm': 'grid', 'parallel': parallel, 'report_every': steps,
        'space': {'train.learning_rate': list(LEARNING_RATES)},
        'set': ['train.summary_every=0'], 'output_dir': str(root / f'out-{tag}-p{parallel}'),
        'tracking_uri': uri})
    start = time.perf_counter()
    summary = run_sweep(spec)
    wall = time.perf_counter() - start
    client = MlflowClient(uri)
    durations = [(client.get_run(r['run_id']).info.end_time -
                  client.get_run(r['run_id']).info.start_time) / 1000.0
                 for r in summary['rows'] if r['run_id']]
    return {'parallel': parallel, 'wall_secs': wall, 'trials': len(summary['rows']),
            'complete': summary['complete'], 'mean_trial_run_secs': statistics.mean(durations),
            'overhead_per_trial_secs': wall * parallel / len(durations)
            - statistics.mean(durations)}


LEARNING_RATES = (0.001, 0.002, 0.003, 0.004)


def run_cli(root: Path, data: Path, steps: int, tag: str) -> dict:
    """The 4 trainings as 4 ddsp-train processes, one after another."""
    import subprocess

    uri = f'sqlite:///{root / "mlflow-cli.db"}'
    start = time.perf_counter()
    for lr in LEARNING_RATES:
        cmd = [sys.executable, '-m', 'trainer.training.train', '--preset', 'tiny',
               '--data', str(data), '--steps', str(steps),
               '--model_dir', str(root / f'cli-{tag}-{lr}'),
               '--set', f'train.learning_rate={lr}', '--set', 'train.summary_every=0',
               '--tracking_uri', uri, '--experiment', 'bench-cli', '--no_progress']
        subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {'mode': 'ddsp-train x4', 'wall_secs': time.perf_counter() - start}


def run_scale(root: Path, data: Path, trials: int, steps: int) -> dict:
    """A TPE sweep of ``trials`` trials on 2 workers, study and runs on PostgreSQL."""
    from mlflow.tracking import MlflowClient

    from pipelines.sweep import run_sweep
    from tests.postgres_server import PostgresServer
    from tests.trainer.mlflow_server import MlflowServer
    from trainer.experiments import sweep as S

    with PostgresServer() as postgres, MlflowServer(
            root / f'mlflow-{trials}',
            backend_store_uri=postgres.create_database('mlflow')) as server:
        spec = S.parse_spec({
            'name': f'scale-{trials}', 'preset': 'tiny', 'data': str(data), 'steps': steps,
            'algorithm': 'tpe', 'trials': trials, 'parallel': 2, 'report_every': steps,
            'space': {'train.learning_rate': {'loguniform': [1e-4, 1e-2]},
                      'train.grad_clip_norm': {'uniform': [1.0, 5.0]}},
            'set': ['train.summary_every=0'], 'output_dir': str(root / f'scale-{trials}'),
            'storage': postgres.create_database('optuna'), 'tracking_uri': server.uri})
        start = time.perf_counter()
        summary = run_sweep(spec)
        wall = time.perf_counter() - start
        client = MlflowClient(server.uri)
        runs = {r.info.run_id: r.info for r in client.search_runs(
            [client.get_experiment_by_name(spec.experiment_name).experiment_id],
            max_results=5000)}
        trials_run = [t for t in S.sweep_trials(S.open_study(spec))
                      if t.user_attrs.get('run_id') in runs]
    spans = sorted((runs[t.user_attrs['run_id']].start_time / 1000.0,
                    runs[t.user_attrs['run_id']].end_time / 1000.0, t.user_attrs['worker'])
                   for t in trials_run)
    durations = [end - begin for begin, end, _ in spans]
    gaps, last_end = [], {}
    for begin, end, worker in spans:
        if worker in last_end:
            gaps.append((begin, begin - last_end[worker]))
        last_end[worker] = end
    blocks = [statistics.mean(g for _, g in gaps[i:i + 20]) for i in range(0, len(gaps), 20)]
    return {'trials': trials, 'steps': steps, 'wall_secs': wall,
            'complete': summary['complete'], 'fail': summary['fail'],
            'reasked': summary['reasked'], 'mean_trial_run_secs': statistics.mean(durations),
            'overhead_per_trial_secs': wall * 2 / len(durations) - statistics.mean(durations),
            'mean_gap_between_runs_secs': statistics.mean(g for _, g in gaps),
            'gap_per_20_trials_secs': blocks}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=60)
    p.add_argument('--repeats', type=int, default=1)
    p.add_argument('--out', help='also write the JSON here')
    p.add_argument('--no_cli', action='store_true',
                   help='skip the 4-ddsp-train-processes baseline')
    p.add_argument('--scale', type=int, nargs='+', metavar='N',
                   help='instead: TPE sweeps of N trials each on PostgreSQL, 2 workers')
    args = p.parse_args(argv)

    from ddsp_core import records, runtime
    from trainer import testing
    from trainer.tracking.store import quiet_mlflow_logging

    runtime.import_tensorflow()
    quiet_mlflow_logging()
    root = Path(tempfile.mkdtemp(prefix='bench-sweep-'))
    data = root / 'data'
    layout = records.Layout(16000, 250, 1.0)
    testing.write_dataset(data, layout, n_examples=16, n_shards=2, seed=0)
    testing.write_dataset(data, layout, n_examples=4, n_shards=1, seed=1, split='eval')
    if args.scale:
        return common.emit({'scale': [run_scale(root, data, n, args.steps) for n in args.scale],
                            **common.machine()}, args.out)
    runs, cli = [], []
    for i in range(args.repeats):
        order = (2, 1, 'cli') if i % 2 == 0 else ('cli', 1, 2)
        for parallel in order:
            if parallel == 'cli':
                if not args.no_cli:
                    cli.append(run_cli(root, data, args.steps, f'r{i}'))
                continue
            runs.append(run_once(root, data, parallel, args.steps, f'r{i}'))
    par = statistics.median(r['wall_secs'] for r in runs if r['parallel'] == 2)
    seq = statistics.median(r['wall_secs'] for r in runs if r['parallel'] == 1)
    cli_wall = statistics.median(r['wall_secs'] for r in cli) if cli else None
    return common.emit({
        'trials': 4, 'steps': args.steps, 'repeats': args.repeats,
        'parallel_wall_secs': par, 'sequential_wall_secs': seq, 'ratio': par / seq,
        'ddsp_train_x4_wall_secs': cli_wall,
        'ratio_vs_ddsp_train_x4': par / cli_wall if cli_wall else None,
        'target_ratio': 0.55,
        'overhead_per_trial_secs': statistics.median(
            r['overhead_per_trial_secs'] for r in runs),
        'runs': runs, 'cli_runs': cli, **common.machine(),
    }, args.out)


if __name__ == '__main__':
    sys.exit(main())
