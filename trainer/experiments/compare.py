"""``ddsp-compare``: compare training runs by eye and by ear.

``ddsp-compare --experiment NAME [--experiment NAME ...] | --sweep PARENT_RUN_ID |
--runs ID,ID,... [--metric M] [--out DIR]`` reads any tracking URI and gives a terminal table
of the params that differ and the final and best metrics, overlaid metric curves (PNG), and an
HTML listening report: the same examples' original and each run's resynthesis side by side
with audio players and spectrograms, runs ordered by the metric. The files go to ``--out`` and
are logged as artifacts (``comparison/``) to the sweep's parent run, or to a comparison run
(tagged ``ddsp.kind`` = ``comparison``) in the (first) experiment.

It is built for sweeps of thousands of runs: runs come from paged ``search_runs`` calls, metric
curves from the server's bulk history endpoint (a page of 100 runs per request), and only the
``--listen`` best runs' artifacts are listed and downloaded.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

logger = logging.getLogger(__name__)

PAGE = 1000
BULK_RUNS = 100  # runs per bulk metric-history request (MLflow's limit)
BULK_THREADS = 4  # bulk requests in flight at once (the server's time is mostly its own)
LISTEN_DIRS = ('eval/listen', '.')


class CompareError(ValueError):
    """Bad usage or nothing to compare (exit code 2)."""


def search_all_runs(client, experiment_ids: list[str], filter_string: str = '') -> list:
    """Every run matching, through paged ``search_runs`` calls."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string,
                                  max_results=PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


BULK_ENDPOINT = '/api/2.0/mlflow/metrics/get-history-bulk-interval'


def _server_bulk(store, run_ids: Sequence[str], key: str, max_points: int):
    """[(run id, step, value)] of ``key`` for up to :data:`BULK_RUNS` runs in one request to an
    ``mlflow server``'s bulk-history endpoint (MLflow's REST client has no method for it: its
    fallback asks twice per run); None where the server has no such endpoint."""
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    response = http_request(store.get_host_creds(), BULK_ENDPOINT, 'GET', params={
        'run_ids': list(run_ids), 'metric_key': key, 'max_results': max_points})
    if response.status_code == 404:  # a server older than the endpoint
        return None
    verify_rest_response(response, BULK_ENDPOINT)
    return [(m['run_id'], int(m.get('step', 0)), float(m['value']))
            for m in response.json().get('metrics', [])]


def metric_histories(client, run_ids: Sequence[str], key: str,
                     max_points: int = 1000) -> dict[str, list[tuple[int, float]]]:
    """run id -> [(step, value)] of ``key``, sampled to at most ``max_points`` per run: one
    request per page of :data:`BULK_RUNS` runs to an ``mlflow server`` (its bulk endpoint),
    :data:`BULK_THREADS` pages at a time; one history request per run elsewhere (MLflow's
    database stores have no per-run-sampled bulk query)."""
    import concurrent.futures

    from mlflow.store.tracking.rest_store import RestStore

    store = getattr(getattr(client, '_tracking_client', None), 'store', None)

    def page_of(page: list[str]) -> list[tuple[str, int, float]]:
        points = None
        if isinstance(store, RestStore):
            points = _server_bulk(store, page, key, max_points)
        if points is None:
            points = [(run_id, m.step, m.value) for run_id in page
                      for m in client.get_metric_history(run_id, key)]
        return points

    ids = list(run_ids)
    pages = [ids[start:start + BULK_RUNS] for start in range(0, len(ids), BULK_RUNS)]
    out: dict[str, list[tuple[int, float]]] = {r: [] for r in ids}
    with concurrent.futures.ThreadPoolExecutor(max(1, min(BULK_THREADS, len(pages)))) as pool:
        for points in pool.map(page_of, pages):
            for run_id, step, value in points:
                out[run_id].append((step, value))
    return {k: sorted(v) for k, v in out.items()}


@dataclasses.dataclass
class RunRow:
    """One run in a comparison."""

    run_id: str
    name: str
    status: str
    params: dict
    final: Optional[float]
    best: Optional[float]
    steps: Optional[int]


def differing_params(rows: Sequence[RunRow]) -> list[str]:
    """Param keys whose values differ between the runs (missing counts as a value)."""
    keys = sorted({k for r in rows for k in r.params})
    return [k for k in keys if len({r.params.get(k) for r in rows}) > 1]


def collect(client, runs: Sequence, metric: str, direction: str = 'minimize'
            ) -> tuple[list[RunRow], dict[str, list[tuple[int, float]]]]:
    """Rows ordered by the metric (best first; runs without it last) and the metric curves."""
    histories = metric_histories(client, [r.info.run_id for r in runs], metric)
    rows = []
    for run in runs:
        points = histories.get(run.info.run_id, [])
        values = [v for _, v in points if math.isfinite(v)]
        final = points[-1][1] if points else run.data.metrics.get(metric)
        best = (min(values) if direction == 'minimize' else max(values)) if values else final
        rows.append(RunRow(run.info.run_id, run.info.run_name or run.info.run_id[:8],
                           run.info.status, dict(run.data.params), final, best,
                           points[-1][0] if points else None))
    sign = 1 if direction == 'minimize' else -1
    rows.sort(key=lambda r: (r.final is None or not math.isfinite(r.final),
                             sign * (r.final if r.final is not None and math.isfinite(r.final)
                                     else 0.0)))
    return rows, histories


def format_table(rows: Sequence[RunRow], metric: str, width: int = 24) -> str:
    keys = differing_params(rows)
    head = [f'{"run":<{width}}', f'{"status":<9}', f'{metric + " final":>14}',
            f'{"best":>10}', f'{"step":>7}'] + [k.split('.')[-1][:14].rjust(14) for k in keys]
    lines = [' '.join(head)]
    for r in rows:
        final = f'{r.final:.5g}' if r.final is not None else '-'
        best = f'{r.best:.5g}' if r.best is not None else '-'
        cells = [f'{r.name[:width]:<{width}}', f'{r.status:<9}', f'{final:>14}', f'{best:>10}',
                 f'{r.steps if r.steps is not None else "-":>7}']
        cells += [str(r.params.get(k, '-'))[:14].rjust(14) for k in keys]
        lines.append(' '.join(cells))
    if keys:
        lines.append('params that differ: ' + ', '.join(keys))
    return '\n'.join(lines)


def curves_figure(rows: Sequence[RunRow], histories: dict, metric: str, limit: int = 30):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5.5), layout='constrained')
    ax = figure.subplots()
    for r in list(rows)[:limit]:
        points = histories.get(r.run_id) or []
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=r.name, linewidth=1.2)
    ax.set_xlabel('step')
    ax.set_ylabel(metric)
    if all(v > 0 for pts in histories.values() for _, v in pts if math.isfinite(v)):
        ax.set_yscale('log')
    ax.legend(fontsize=7, ncol=2)
    shown = min(limit, len(rows))
    ax.set_title(f'{metric}: {shown} of {len(rows)} runs (best first)')
    return figure


def _listen_files(client, run_id: str) -> tuple[Optional[str], list[str]]:
    """The folder of a run's listening examples and the example names in it: ``eval/listen/*``
    (``ddsp-eval --listen``) if the run has them, else the latest training summary at the
    artifact root (``latest_original.wav``, ``latest_resynthesis.wav``)."""
    for folder in LISTEN_DIRS:
        try:
            entries = client.list_artifacts(run_id, None if folder == '.' else folder)
        except Exception:  # noqa: BLE001 - an artifact store without the folder
            continue
        names = {Path(e.path).name for e in entries}
        if folder == '.':
            if {'latest_original.wav', 'latest_resynthesis.wav'} <= names:
                return folder, ['.']
            continue
        subdirs = [Path(e.path).name for e in entries if e.is_dir]
        if subdirs:
            return folder, sorted(subdirs)
    return None, []


def data_uri(path: str, mime: str) -> str:
    """A file as a ``data:`` URI (so a page plays or shows it from MLflow's artifact viewer)."""
    return f'data:{mime};base64,' + base64.b64encode(Path(path).read_bytes()).decode()


def listening_report(client, rows: Sequence[RunRow], metric: str, title: str,
                     listen: int = 8) -> str:
    """A self-contained HTML page: for each example, the original once, then each of the
    ``listen`` best runs' resynthesis with its spectrogram (audio and images embedded, so
    MLflow's artifact viewer plays them)."""
    chosen = [r for r in rows if r.final is not None][:listen]
    cells: dict[str, list[tuple[RunRow, dict]]] = {}
    originals: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix='ddsp-compare-') as tmp:
        for r in chosen:
            folder, examples = _listen_files(client, r.run_id)
            for example in examples:
                target = os.path.join(tmp, r.run_id, example)
                os.makedirs(target, exist_ok=True)
                if folder == '.':  # the latest summary: three files at the root
                    files = {name[len('latest_'):]: client.download_artifacts(r.run_id, name,
                                                                              target)
                             for name in ('latest_original.wav', 'latest_resynthesis.wav',
                                          'latest_spectrogram.png')}
                else:
                    local = client.download_artifacts(r.run_id, f'{folder}/{example}', target)
                    files = {p.name: str(p) for p in Path(local).iterdir()}
                name = 'latest training summary' if example == '.' else example
                if 'original.wav' in files and name not in originals:
                    originals[name] = data_uri(files['original.wav'], 'audio/wav')
                entry = {}
                if 'resynthesis.wav' in files:
                    entry['audio'] = data_uri(files['resynthesis.wav'], 'audio/wav')
                if 'spectrogram.png' in files:
                    entry['png'] = data_uri(files['spectrogram.png'], 'image/png')
                cells.setdefault(name, []).append((r, entry))
    examples = [{'name': name,
                 'original': originals.get(name),
                 'cells': [{'run': r.name, 'value': r.final, **entry} for r, entry in entries]}
                for name, entries in sorted(cells.items())]
    return render_listening_page(
        title, metric, examples,
        f'{len(chosen)} runs, best {metric} first; each row plays the original, then every '
        "run's resynthesis of the same example.")


def render_listening_page(title: str, metric: str, examples: Sequence[dict], intro: str) -> str:
    """The self-contained listening page (``templates/listening_report.html``).

    ``examples``: ``{'name', 'original': data URI or None, 'cells': [{'run', 'value' (the
    example's ``metric``), 'audio'?, 'png'?: data URIs}]}``, one row per example."""
    return _report_template().render(title=title, metric=metric, intro=intro,
                                      examples=examples)


def _report_template():
    """The listening report's jinja2 template (``templates/listening_report.html``), with
    autoescaping: run names, metric names and example names are user data."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader('trainer.experiments', 'templates'),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template('listening_report.html')


def select_runs(client, experiments: Optional[Sequence[str]], sweep: Optional[str],
                run_ids: Optional[str]) -> tuple[list, Optional[str], str]:
    """(runs, run id to log the report to or None, a title).

    ``experiments``: every training run of these experiments (:func:`trainer.tracking.store.
    is_training_run`: ``ddsp-train`` runs, sweep trials, runs older versions logged without a
    kind), never a sweep's parent or a comparison run."""
    from trainer.tracking.store import is_training_run

    experiments = list(experiments) if experiments else None
    if sum(x is not None for x in (experiments, sweep, run_ids)) != 1:
        raise CompareError('give exactly one of --experiment, --sweep, --runs')
    if run_ids is not None:
        ids = [r.strip() for r in run_ids.split(',') if r.strip()]
        if len(ids) < 1:
            raise CompareError('--runs: no run id')
        return [client.get_run(r) for r in ids], None, f'{len(ids)} runs'
    if sweep is not None:
        parent = client.get_run(sweep)
        runs = search_all_runs(client, [parent.info.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{sweep}'")
        name = parent.data.tags.get('ddsp.sweep.name', parent.info.run_name)
        return runs, sweep, f'sweep {name}'
    ids = []
    for name in experiments:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise CompareError(f'--experiment {name!r}: no such experiment at '
                               f'{client.tracking_uri}')
        if found.experiment_id not in ids:
            ids.append(found.experiment_id)
    runs = [r for r in search_all_runs(client, ids) if is_training_run(r)]
    return runs, None, ('experiment ' if len(experiments) == 1 else 'experiments ') + \
        ', '.join(experiments)


def compare(client, runs: Sequence, metric: str, out: str, title: str,
            direction: str = 'minimize', listen: int = 8,
            log_to_run: Optional[str] = None, experiment_id: Optional[str] = None) -> dict:
    """Write the table, curves and listening report to ``out`` and log them."""
    if not runs:
        raise CompareError(f'{title}: no runs to compare')
    rows, histories = collect(client, runs, metric, direction)
    if all(r.final is None for r in rows):
        raise CompareError(f'{title}: no run has the metric {metric!r}')
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = format_table(rows, metric)
    (out_dir / 'table.txt').write_text(table + '\n')
    (out_dir / 'runs.json').write_text(json.dumps([dataclasses.asdict(r) for r in rows],
                                                  indent=2, default=str) + '\n')
    curves_figure(rows, histories, metric).savefig(str(out_dir / 'curves.png'))
    (out_dir / 'listening_report.html').write_text(
        listening_report(client, rows, metric, f'DDSP comparison: {title}', listen))
    target = log_to_run
    if target is None and experiment_id is not None:
        from trainer.tracking.store import KIND_TAG

        created = client.create_run(experiment_id, run_name=f'compare-{metric}', tags={
            KIND_TAG: 'comparison',
            'mlflow.note.content': f'ddsp-compare of {title} on {metric}: open '
                                   'comparison/listening_report.html to listen.'})
        target = created.info.run_id
        client.set_terminated(target, 'FINISHED')
    if target is not None:
        client.log_artifacts(target, str(out_dir), 'comparison')
    return {'rows': rows, 'table': table, 'out': str(out_dir), 'logged_to': target,
            'best': rows[0]}


def build_arg_parser() -> argparse.ArgumentParser:
    from ddsp_core import runtime

    p = runtime.command_parser(
        'ddsp-compare',
        description='Compare DDSP training runs: a table of the params that differ and the '
                    'final and best metrics, overlaid metric curves, and an HTML listening '
                    'report with each run\'s resynthesis of the same examples.')
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument('--experiment', action='append', metavar='NAME',
                       help='every training run (ddsp-train runs and sweep trials; not sweep '
                            'parents or comparisons) of an MLflow experiment; repeat it to '
                            'compare the runs of several experiments')
    which.add_argument('--sweep', help='the trials of a sweep (its parent run id)')
    which.add_argument('--runs', help='comma-separated run ids')
    p.add_argument('--metric', default='total_loss', help='metric to order and plot by')
    p.add_argument('--direction', default='minimize', choices=('minimize', 'maximize'))
    p.add_argument('--listen', type=int, default=8,
                   help='runs in the listening report (the best ones)')
    p.add_argument('--out', default='comparison', help='output directory')
    p.add_argument('--tracking_uri', default=None, help='MLflow tracking URI')
    p.add_argument('--no_log', action='store_true', help='write files only, log nothing')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ddsp_core import runtime

    args = runtime.open_cli(build_arg_parser(), argv)
    if isinstance(args, int):
        return args
    from trainer.tracking.store import make_client, quiet_mlflow_logging, resolve_tracking_uri

    quiet_mlflow_logging()
    client = make_client(resolve_tracking_uri(args.tracking_uri))
    try:
        runs, parent, title = select_runs(client, args.experiment, args.sweep, args.runs)
        experiment_id = None
        if not args.no_log and parent is None and runs:
            experiment_id = runs[0].info.experiment_id
        result = compare(client, runs, args.metric, args.out, title, args.direction,
                         args.listen, None if args.no_log else parent, experiment_id)
    except CompareError as e:
        return runtime.usage_error('ddsp-compare', e)
    except Exception as e:  # noqa: BLE001 - an unreachable store, a missing run...
        return runtime.failure('ddsp-compare', e)
    print(result['table'])
    print(f'ddsp-compare: best {result["best"].name} ({args.metric} '
          f'{result["best"].final:.5g}); files in {result["out"]}'
          + (f', logged to run {result["logged_to"]}' if result['logged_to'] else ''),
          file=sys.stderr)
    for line in links(client, runs, result, args.listen):
        print(f'ddsp-compare: {line}', file=sys.stderr)
    return 0


def links(client, runs: Sequence, result: dict, best: int) -> list[str]:
    """Where to look in MLflow's UI: the listening report logged to a run, and the ``best``
    runs side by side in MLflow's run comparison."""
    from trainer.tracking.store import run_link, ui_hint, ui_link

    out = []
    if result['logged_to']:
        link = run_link(client.tracking_uri, result['logged_to'],
                        'comparison/listening_report.html', client=client)
        if link:
            out.append(f'listening report: {link}')
    chosen = [r.run_id for r in result['rows']][:max(best, 2)]
    experiments = sorted({r.info.experiment_id for r in runs
                          if r.info.run_id in set(chosen)})
    out.append(f'the {len(chosen)} best runs side by side: ' + ui_hint(
        client.tracking_uri, ui_link(client.tracking_uri, compare_run_ids=chosen,
                                     experiment_ids=experiments)))
    return out


if __name__ == '__main__':
    sys.exit(main())
