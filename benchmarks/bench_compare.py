"""ddsp-compare on a sweep of many runs: wall time and peak memory against a real `mlflow server`.

Starts an `mlflow server` on 127.0.0.1 (SQLite backend, or ``--backend postgresql``: a
throw-away PostgreSQL server from ``tests/postgres_server.py``), creates a sweep parent and N
child runs (differing params, a `total_loss` history of S steps each), then runs
``ddsp-compare --sweep PARENT`` against the server as a user does (``python -m
trainer.experiments.compare`` in a child process) and reports its wall time and peak RSS as JSON.

The runs are written straight into the server's backend store (an ``MlflowClient`` on the
store's URL, ``log_batch``, ``--threads`` at a time) so that 10,000 runs take minutes, not an
hour; the audio and spectrogram a listening report plays are uploaded through the server for
the ``--artifact_runs`` best runs only (ddsp-compare lists and downloads artifacts of the
``--listen`` best runs only, so the other runs' artifacts do not change what it does).
``--per_run`` also times one ``get-history`` request per run, for scale; ``--endpoints N``
times, N times in alternation, fetching every run's history through the server's two bulk
endpoints: the sampled one ``ddsp-compare`` uses (``get-history-bulk-interval``, one query
per run) and the UI's unsampled one (``ajax-api/.../get-history-bulk``, one query per 100
runs, at most 25,000 points a request).

    python benchmarks/bench_compare.py                  # 200 runs x 100 steps, SQLite
    python benchmarks/bench_compare.py --backend postgresql --runs 10000 --out results.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import common  # noqa: E402 - after the path insert


def populate(store_uri: str, experiment: str, parent: str, runs: int, steps: int,
             threads: int) -> list[tuple[float, str]]:
    """Create the child runs in the backend store directly; (final loss, run id) of each."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri)
    rng = np.random.default_rng(0)
    floors = rng.uniform(2, 6, runs)
    rates = 10 ** rng.uniform(-4, -2, runs)

    def one(i: int) -> tuple[float, str]:
        run = client.create_run(experiment, run_name=f'trial-{i}',
                                tags={'mlflow.parentRunId': parent, 'ddsp.kind': 'trial'})
        now = int(time.time() * 1000)
        losses = [Metric('total_loss', float(floors[i] + 5 * np.exp(-s / 30)), now, s)
                  for s in range(1, steps + 1)]
        client.log_batch(run.info.run_id, metrics=losses, params=[
            Param('train.learning_rate', f'{rates[i]:.3g}'), Param('model.rnn_channels', '32'),
            Param('model.mlp_units', str(16 * (1 + i % 3)))],
            tags=[RunTag('ddsp.trial', str(i))])
        client.set_terminated(run.info.run_id)
        return losses[-1].value, run.info.run_id

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(runs)))


def run_compare(uri: str, parent: str, out: Path, listen: int,
                profile: str | None = None) -> dict:
    """``ddsp-compare --sweep`` in a child process: wall seconds, peak RSS (MB), exit code."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2')
    command = [sys.executable] + (['-m', 'cProfile', '-o', profile] if profile else []) + [
        '-m', 'trainer.experiments.compare', '--sweep', parent, '--tracking_uri',
               uri, '--out', str(out), '--listen', str(listen)]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return {'command': ' '.join(command), 'compare_secs': wall,
            'compare_peak_rss_mb': usage.ru_maxrss / 1024, 'exit_code': process.returncode,
            'stderr_tail': stderr.decode(errors='replace')[-600:]}


def time_bulk_endpoints(client, run_ids: list[str], rounds: int) -> dict:
    """Seconds to fetch every run's ``total_loss`` history, 100 runs a request, one request
    at a time, through each bulk endpoint; ``rounds`` rounds, the two in alternation."""
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    creds = client._tracking_client.store.get_host_creds()
    endpoints = {
        'interval': ('/api/2.0/mlflow/metrics/get-history-bulk-interval', 'run_ids', 1000),
        'unsampled': ('/ajax-api/2.0/mlflow/metrics/get-history-bulk', 'run_id', 25000)}
    pages = [run_ids[i:i + 100] for i in range(0, len(run_ids), 100)]
    secs: dict[str, list[float]] = {name: [] for name in endpoints}
    for _ in range(rounds):
        for name, (path, ids_param, max_results) in endpoints.items():
            start = time.perf_counter()
            for page in pages:
                response = http_request(creds, path, 'GET', params={
                    ids_param: page, 'metric_key': 'total_loss', 'max_results': max_results})
                verify_rest_response(response, path)
            secs[name].append(round(time.perf_counter() - start, 2))
    return secs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--runs', type=int, default=200)
    p.add_argument('--steps', type=int, default=100)
    p.add_argument('--listen', type=int, default=8)
    p.add_argument('--backend', choices=('sqlite', 'postgresql'), default='sqlite')
    p.add_argument('--threads', type=int, default=4, help='threads writing the runs')
    p.add_argument('--artifact_runs', type=int, default=20,
                   help='the best runs that get the listening files')
    p.add_argument('--per_run', action='store_true',
                   help='also time one get-history request per run')
    p.add_argument('--profile', metavar='PATH', help='run ddsp-compare under cProfile, stats here')
    p.add_argument('--endpoints', type=int, default=0, metavar='N',
                   help='also time the two bulk history endpoints, N rounds in alternation')
    p.add_argument('--out', help='also write the JSON here')
    args = p.parse_args(argv)

    from tests.postgres_server import PostgresServer
    from tests.trainer.mlflow_server import MlflowServer
    from trainer.tracking import artifacts
    from trainer.tracking.store import make_client, quiet_mlflow_logging

    quiet_mlflow_logging()
    root = Path(tempfile.mkdtemp(prefix='bench-compare-'))
    sr = 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(sr // 2) / sr)).astype(np.float32)
    for name in ('latest_original.wav', 'latest_resynthesis.wav'):
        artifacts.write_wav(root / name, tone, sr)
    artifacts.spectrogram_comparison_png(root / 'latest_spectrogram.png', tone, tone, sr)
    with ExitStack() as stack:
        store_uri = None
        if args.backend == 'postgresql':
            store_uri = stack.enter_context(PostgresServer()).create_database('mlflow')
        server = stack.enter_context(MlflowServer(root / 'server', backend_store_uri=store_uri))
        store_uri = server.backend_store_uri
        client = make_client(server.uri)
        experiment = client.create_experiment('bench-compare')
        parent = client.create_run(experiment, run_name='sweep-bench').info.run_id
        started = time.perf_counter()
        finals = populate(store_uri, experiment, parent, args.runs, args.steps, args.threads)
        for _, run_id in sorted(finals)[:args.artifact_runs]:
            for name in ('latest_original.wav', 'latest_resynthesis.wav',
                         'latest_spectrogram.png'):
                client.log_artifact(run_id, str(root / name))
        setup_secs = time.perf_counter() - started
        result = run_compare(server.uri, parent, root / 'cmp', args.listen, args.profile)
        table = (root / 'cmp' / 'table.txt').read_text().splitlines() \
            if result['exit_code'] == 0 else []
        endpoints = time_bulk_endpoints(client, [r for _, r in finals], args.endpoints)
        per_run_secs = None
        if args.per_run:
            t0 = time.perf_counter()
            for _, run_id in finals:
                client.get_metric_history(run_id, 'total_loss')
            per_run_secs = time.perf_counter() - t0
    common.emit({
        'runs': args.runs, 'steps': args.steps, 'listen': args.listen, 'backend': args.backend,
        **result, 'table_rows': len(table) - 2 if table else 0,
        'best': table[1].split()[0] if len(table) > 1 else None,
        'expected_best': f'trial-{int(np.argmin([f for f, _ in finals]))}',
        'per_run_history_secs': per_run_secs, 'bulk_endpoint_secs': endpoints,
        'setup_secs': setup_secs,
        'cpu_count': os.cpu_count(),
    }, args.out)
    return 0 if result['exit_code'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
