"""Parity over several runs: the held-out loss curves of several ``bench_parity.py`` reports,
ours and the reference's, pooled per checkpoint.

One run of each side does not separate the two implementations: each one's run-to-run spread
(its initialisation and data order) is as large as the gap between them. This reads several
reports made on the same data with the same settings (checked as ``--reference_from`` checks
them: :func:`bench_parity.incomparable`) and writes, per checkpoint, each side's mean, standard
deviation, lowest and highest held-out loss (the reference's ``SpectralLoss``), the ratio of the
means (ours / reference), and how many of each side's runs had a collapsed harmonic part.

Our curves come from the ``--ours`` reports (they must share ``our_warmup_steps``: one setting
of ours at a time); the reference's curves from every report given, ``--ours`` and
``--reference`` alike, each distinct curve once (reports made with ``--reference_from`` repeat
the curve they borrowed). A JSON (--json) and a plot beside it (every run thin, each side's mean
thick, its range shaded)::

    python benchmarks/bench_parity_summary.py \\
        --ours results/parity_seed0.json results/parity_seed1.json \\
        --reference results/parity_run1.json --json results/parity_summary.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_parity, common  # noqa: E402

LOSS = 'reference_spectral_loss'


def _fail(message: str):
    sys.exit(f'bench_parity_summary: error: {message}')


def load(path: Path) -> dict:
    """A bench_parity report, or exit naming the file and what is wrong with it."""
    try:
        report = json.loads(Path(path).read_text())
        curves, settings = report['curves'], report['settings']
    except (OSError, ValueError, KeyError, TypeError) as e:
        _fail(f'{path}: not a bench_parity report ({type(e).__name__}: {e})')
    if not (isinstance(curves, dict) and isinstance(settings, dict)):
        _fail(f'{path}: not a bench_parity report (its curves or settings are not objects)')
    for name, rows in curves.items():
        for row in rows or []:
            if not isinstance(row.get('step'), int) or not isinstance(row.get(LOSS), (int, float)):
                _fail(f'{path}: a {name} row without a step or a {LOSS}: {row}')
    return report


def _key(rows: list[dict]) -> tuple:
    return tuple((r['step'], r[LOSS]) for r in rows)


def pool(ours: dict[str, dict], references: dict[str, dict]) -> dict:
    """``{'ours': [run...], 'reference': [run...]}`` from reports by path; a run is
    ``{'source': path, 'seed': ..., 'rows': [...]}``. Refuses reports made on other data or with
    other settings than the first of ``ours``, and ``ours`` of different warm-ups."""
    if not ours:
        _fail('no --ours report')
    first_path, first = next(iter(ours.items()))
    first_rows = [r for curve in first['curves'].values() for r in curve or []]
    for path, report in {**ours, **references}.items():
        if path != first_path:
            problem = bench_parity.incomparable(report, first['settings'], first.get('data'),
                                                first_rows)
            if problem:
                _fail(f'{path} and {first_path} are not comparable: {problem}')
    warmups = {p: r['settings'].get('our_warmup_steps') for p, r in ours.items()}
    if len(set(warmups.values())) > 1:
        _fail('the --ours reports trained ours with different warm-ups '
              f'(our_warmup_steps: {warmups}); summarise one setting at a time')
    runs: dict[str, list] = {'ours': [], 'reference': []}
    seen: dict[str, set] = {'ours': set(), 'reference': set()}
    for side, reports in (('ours', ours), ('reference', {**ours, **references})):
        for path, report in reports.items():
            rows = report['curves'].get(side) or []
            if not rows or _key(rows) in seen[side]:
                continue
            seen[side].add(_key(rows))
            runs[side].append({'source': str(path), 'rows': rows,
                               'seed': report['settings'].get(
                                   'our_seed' if side == 'ours' else 'reference_seed')})
    if not runs['reference']:
        _fail('none of the reports has a reference curve')
    return runs


def _stats(values: list[float]) -> dict:
    return {'n': len(values), 'mean': statistics.fmean(values),
            'std': statistics.stdev(values) if len(values) > 1 else None,
            'min': min(values), 'max': max(values)}


def per_checkpoint(runs: dict) -> list[dict]:
    """For every step all runs of both sides reached: each side's statistics of the held-out
    loss, the ratio of the means, and the count of collapsed harmonic parts."""
    steps = sorted(set.intersection(*({r['step'] for r in run['rows']}
                                      for side in runs.values() for run in side)))
    table = []
    for step in steps:
        row = {'step': step}
        for side, side_runs in runs.items():
            at = [next(r for r in run['rows'] if r['step'] == step) for run in side_runs]
            row[side] = _stats([r[LOSS] for r in at])
            row[side]['collapsed'] = sum(bool(r.get('harmonic_collapsed')) for r in at)
        row['ours_mean_over_reference_mean'] = row['ours']['mean'] / row['reference']['mean']
        row['within_3_percent_or_better'] = row['ours_mean_over_reference_mean'] <= 1.03
        row['ours_worst_over_reference_best'] = row['ours']['max'] / row['reference']['min']
        table.append(row)
    if not table:
        _fail('the runs share no checkpoint')
    return table


def markdown(table: list[dict]) -> str:
    """The per-checkpoint table as Markdown (for RESULTS.md and docs/quality.md)."""
    def side(s):
        spread = f' ± {s["std"]:.2f}' if s['std'] is not None else ''
        return f'{s["mean"]:.2f}{spread} ({s["min"]:.2f}-{s["max"]:.2f})'

    n_ours, n_ref = table[0]['ours']['n'], table[0]['reference']['n']
    lines = [f'| step | ours, {n_ours} runs: mean ± sd (range) | reference, {n_ref} runs | '
             'ours / reference (means) | collapsed ours / reference |',
             '|---|---|---|---|---|']
    for r in table:
        lines.append(f'| {r["step"]} | {side(r["ours"])} | {side(r["reference"])} | '
                     f'{r["ours_mean_over_reference_mean"]:.3f} | '
                     f'{r["ours"]["collapsed"]} / {r["reference"]["collapsed"]} |')
    return '\n'.join(lines)


def plot(runs: dict, table: list[dict], png: Path) -> None:
    fig, ax = common.figure((7, 4.5))
    steps = [r['step'] for r in table]
    for side, colour in (('reference', 'tab:blue'), ('ours', 'tab:orange')):
        for run in runs[side]:
            ax.plot([r['step'] for r in run['rows']], [r[LOSS] for r in run['rows']], '-',
                    color=colour, alpha=0.35, linewidth=1)
        ax.fill_between(steps, [r[side]['min'] for r in table], [r[side]['max'] for r in table],
                        color=colour, alpha=0.12)
        ax.plot(steps, [r[side]['mean'] for r in table], 'o-', color=colour, linewidth=2.5,
                label=f'{side}: mean of {len(runs[side])} runs')
    ax.set_xlabel('training step')
    ax.set_ylabel("held-out loss (reference's SpectralLoss)")
    ax.set_title('solo_instrument, ours vs the reference: every run, the means, the ranges')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(png)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='bench_parity_summary.py', description=__doc__,
                                formatter_class=common.HelpFormatter)
    p.add_argument('--ours', type=Path, nargs='+', required=True,
                   help='reports whose curve of ours counts (one warm-up setting)')
    p.add_argument('--reference', type=Path, nargs='*', default=[],
                   help='more reports whose reference curve counts (every report given lends '
                        'its reference curve; repeats count once)')
    p.add_argument('--json', type=Path,
                   default=common.ROOT / 'benchmarks' / 'results' / 'parity_summary.json',
                   help='where the summary goes (the plot beside it, .png)')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    ours = {str(p): load(p) for p in args.ours}
    references = {str(p): load(p) for p in args.reference if str(p) not in ours}
    runs = pool(ours, references)
    table = per_checkpoint(runs)
    summary = {'benchmark': 'bench_parity_summary', 'date': time.strftime('%Y-%m-%d %H:%M:%S %z'),
               'command': ' '.join([Path(sys.executable).name, *sys.argv]),
               'settings': {k: next(iter(ours.values()))['settings'].get(k)
                            for k in (*bench_parity.SHARED_SETTINGS, 'our_warmup_steps')},
               'runs': {side: [{k: v for k, v in run.items() if k != 'rows'}
                               | {'loss': {str(r['step']): r[LOSS] for r in run['rows']}}
                               for run in side_runs] for side, side_runs in runs.items()},
               'checkpoints': table}
    path = common.write_json(args.json, summary)
    plot(runs, table, path.with_suffix('.png'))
    print(markdown(table))
    print(f'wrote {path} and {path.with_suffix(".png")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
