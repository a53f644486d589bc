"""ddsp-compare on a sweep of many runs: wall time against a real `mlflow server` (HTTP).

Starts an `mlflow server` on 127.0.0.1 (SQLite backend), creates a parent run and N child runs
(differing params, a `total_loss` history of S steps each, the latest summary audio and
spectrogram for each), then times ``trainer.compare.compare`` (paged searches, bulk metric
histories, audio for the --listen best runs only) and, for scale, the per-run history requests
it avoids. Reports JSON.

    python benchmarks/bench_compare.py                  # 200 runs x 100 steps
    python benchmarks/bench_compare.py --runs 500 --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--runs', type=int, default=200)
    p.add_argument('--steps', type=int, default=100)
    p.add_argument('--listen', type=int, default=8)
    p.add_argument('--out', help='also write the JSON here')
    args = p.parse_args(argv)

    from mlflow.entities import Metric, Param

    from tests.trainer.mlflow_server import MlflowServer
    from trainer import artifacts
    from trainer.compare import compare, metric_histories, search_all_runs
    from trainer.tracking import make_client, quiet_mlflow_logging

    quiet_mlflow_logging()
    root = Path(tempfile.mkdtemp(prefix='bench-compare-'))
    sr = 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(sr // 2) / sr)).astype(np.float32)
    for name in ('latest_original.wav', 'latest_resynthesis.wav'):
        artifacts.write_wav(root / name, tone, sr)
    artifacts.spectrogram_comparison_png(root / 'latest_spectrogram.png', tone, tone, sr)
    with MlflowServer(root / 'server') as server:
        client = make_client(server.uri)
        experiment = client.create_experiment('bench-compare')
        parent = client.create_run(experiment, run_name='sweep-bench').info.run_id
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        for i in range(args.runs):
            run = client.create_run(experiment, run_name=f'trial-{i}',
                                    tags={'mlflow.parentRunId': parent})
            lr = float(10 ** rng.uniform(-4, -2))
            floor = float(rng.uniform(2, 6))
            now = int(time.time() * 1000)
            losses = [Metric('total_loss', floor + 5 * np.exp(-s / 30), now, s)
                      for s in range(1, args.steps + 1)]
            client.log_batch(run.info.run_id, metrics=losses, params=[
                Param('train.learning_rate', f'{lr:.3g}'), Param('model.rnn_channels', '32'),
                Param('model.mlp_units', str(16 * (1 + i % 3)))])
            for name in ('latest_original.wav', 'latest_resynthesis.wav',
                         'latest_spectrogram.png'):
                client.log_artifact(run.info.run_id, str(root / name))
            client.set_terminated(run.info.run_id)
        setup_secs = time.perf_counter() - started
        runs = search_all_runs(client, [experiment], f"tags.`mlflow.parentRunId` = '{parent}'")
        t0 = time.perf_counter()
        result = compare(client, runs, 'total_loss', str(root / 'cmp'), 'bench',
                         listen=args.listen, log_to_run=parent)
        compare_secs = time.perf_counter() - t0
        t0 = time.perf_counter()
        bulk = metric_histories(client, [r.info.run_id for r in runs], 'total_loss')
        bulk_secs = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in runs:
            client.get_metric_history(r.info.run_id, 'total_loss')
        per_run_secs = time.perf_counter() - t0
    text = json.dumps({
        'runs': len(runs), 'steps': args.steps, 'listen': args.listen,
        'compare_secs': compare_secs, 'bulk_history_secs': bulk_secs,
        'per_run_history_secs': per_run_secs, 'setup_secs': setup_secs,
        'points_read': sum(len(v) for v in bulk.values()),
        'best': result['best'].name, 'cpu_count': os.cpu_count(),
    }, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
