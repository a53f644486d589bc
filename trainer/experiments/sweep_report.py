"""A sweep's summary: its table (Optuna's ``trials_dataframe`` in the sweep's columns), Optuna's
matplotlib plots drawn on the Agg backend, the trials' loss curves from MLflow, the
importances, and the summary logged to the sweep's parent run and written to
``output_dir/sweep/``; the table as ``ddsp-sweep`` prints it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

log = logging.getLogger(__name__)


#: The summary's folder: under the sweep's output directory, and in its parent run's artifacts.
SUMMARY_DIR = 'sweep'


def trials_table(study):
    """The sweep's table, a row per trial: Optuna's ``trials_dataframe`` (numbers, values,
    times, params, the trials' attributes) in the sweep's columns: ``trial``, ``state`` (a
    proposal that was an earlier trial's point, asked again and never run, is ``REASKED``; a
    trial whose worker died and that was enqueued again is ``RETRIED``), ``value`` (the first
    objective's; ``values``: every objective's, in a multi-objective sweep), ``step`` (the
    last reported), ``duration_secs``, ``datetime_start``, ``datetime_complete``, ``digest``,
    ``run_id``, ``error`` (the reason of a FAIL, REASKED or RETRIED row) and ``param.<key>``.

    Returns:
        A pandas DataFrame (no rows for a study without trials).
    """
    import pandas as pd

    from trainer.experiments import sweep as S

    trials = study.get_trials(deepcopy=False)
    if not trials:
        return pd.DataFrame(columns=['trial', 'state', 'value', 'step', 'digest', 'run_id',
                                     'error'])
    frame = study.trials_dataframe(attrs=('number', 'value', 'datetime_start',
                                          'datetime_complete', 'duration', 'params',
                                          'user_attrs'))
    again = S.retried(trials)
    states = ['REASKED' if S.is_duplicate(t) else 'RETRIED' if t.number in again else
              t.state.name for t in trials]

    def error(trial, state):
        reason = trial.user_attrs.get('error')
        if state == 'RETRIED':
            return f'{reason or "its worker stopped (no heartbeat)"}; retried as trial ' \
                   f'{S.retry_of(trials, trial.number).number}'
        return reason or ('its worker stopped (no heartbeat)' if state == 'FAIL' else None)

    def column(name):
        return frame[name] if name in frame else pd.Series(None, frame.index, object)

    objectives = sorted(c for c in frame if c.startswith('values_'))
    table = pd.DataFrame({
        'trial': frame['number'].astype('Int64'), 'state': states,
        'value': frame[objectives[0]] if objectives else frame['value']})
    if objectives:
        table['values'] = frame[objectives].apply(list, axis=1)
    table['step'] = pd.array([max(t.intermediate_values) if t.intermediate_values else None
                              for t in trials], dtype='Int64')
    table['duration_secs'] = frame['duration'].dt.total_seconds().round(3)
    for name in ('datetime_start', 'datetime_complete'):
        table[name] = frame[name].map(
            lambda t: t.isoformat(timespec='seconds') if pd.notna(t) else None)
    for name in ('digest', 'run_id'):
        table[name] = column(f'user_attrs_{name}')
    table['error'] = [error(t, s) for t, s in zip(trials, states, strict=True)]
    params = [c for c in frame if c.startswith('params_')]
    table[[f'param.{c[len("params_"):]}' for c in params]] = frame[params]
    return table


def table_rows(table) -> list[dict]:
    """The table's rows as dicts of plain values (None where a cell is empty)."""
    return table.astype(object).where(table.notna(), None).to_dict('records')


@contextlib.contextmanager
def _agg_pyplot():
    """Optuna's matplotlib plots draw with pyplot: here on the Agg backend (files only: no
    display, no GUI event loop, any thread), the figures made closed after, and a backend the
    process had chosen before set back (matplotlib closes figures when it switches)."""
    import matplotlib
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend(auto_select=False)
    if before != 'agg':
        plt.switch_backend('agg')
    existing = set(plt.get_fignums())
    try:
        yield plt
    finally:
        for number in set(plt.get_fignums()) - existing:
            plt.close(number)
        if before not in (None, 'agg'):
            plt.switch_backend(before)


def _optuna_plots(spec, study, metric: str, importance: dict) -> dict:
    """Optuna's matplotlib plots of the study, as ``{file name: pyplot Figure}``: the trials'
    parameters against the (first) objective in parallel coordinates, the optimization
    history, the parameters' importances (with at least two complete trials) and, in a
    multi-objective sweep, the Pareto front. Call inside :func:`_agg_pyplot`."""
    import warnings

    import optuna

    vis = optuna.visualization.matplotlib
    first = {'target': (lambda t: t.values[0]), 'target_name': metric} if spec.objectives \
        else {'target_name': metric}
    plots = {
        'parallel_coordinates.png': lambda: vis.plot_parallel_coordinate(
            study, params=[p.key for p in spec.space if len(set(p.values)) > 1 or
                           p.kind != 'choice'], **first),  # not a key of one value
        'optimization_history.png': lambda: vis.plot_optimization_history(study, **first)}
    if importance:
        plots['param_importances.png'] = lambda: vis.plot_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), **first)
    if spec.objectives and any(t.state.name == 'COMPLETE'
                               for t in study.get_trials(deepcopy=False)):
        plots['pareto_front.png'] = lambda: vis.plot_pareto_front(
            study, target_names=[metric] + [m for m, _ in spec.objectives])
    figures = {}
    with warnings.catch_warnings():  # Optuna's matplotlib plots are experimental
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        for name, plot in plots.items():
            ax = plot()
            ax.set_title(f'Sweep {spec.name}: {ax.get_title()}')
            figures[name] = ax.figure
    return figures


def _loss_curves(client, rows: list[dict], key: str = 'total_loss'):
    """Overlaid metric histories of the trials' runs (one bulk request per page of runs):
    MLflow's, every logged step (Optuna holds only the reported values)."""
    from matplotlib.figure import Figure

    from trainer.experiments.compare import metric_histories

    runs = [r for r in rows if r.get('run_id')]
    figure = Figure(figsize=(10, 5), layout='constrained')
    ax = figure.subplots()
    histories = metric_histories(client, [r['run_id'] for r in runs], key)
    for row in runs:
        points = histories.get(row['run_id'], [])
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=f'trial {row["trial"]} ({row["state"].lower()})')
    ax.set_xlabel('step')
    ax.set_ylabel(key)
    ax.set_yscale('log')
    if runs:
        ax.legend(fontsize=8, ncol=2)
    ax.set_title(f'{key} of every trial')
    return figure


def _importance(study) -> dict:
    """Optuna's PED-ANOVA importances (of the first objective's value)."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == 'COMPLETE']
    if len(complete) < 2 or not complete[0].params:
        return {}
    try:
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
            target=(lambda t: t.values[0]) if len(study.directions) > 1 else None)
    except Exception as e:  # noqa: BLE001 - too few distinct trials for an importance
        log.info('no hyperparameter importance: %s', e)
        return {}


def write_report(spec, study, metric: str, out_dir: str, client=None) -> dict:
    """Write the sweep's table and plots to ``out_dir``: ``trials.csv`` (:func:`trials_table`),
    ``importance.json`` (:func:`_importance`), Optuna's plots (:func:`_optuna_plots`) and,
    given an MLflow client, ``loss_curves.png``. Returns ``{'table', 'rows', 'importance',
    'files'}``."""
    import shutil

    table = trials_table(study)
    rows = table_rows(table)
    importance = _importance(study)
    shutil.rmtree(out_dir, ignore_errors=True)  # no plot of an earlier run left behind
    os.makedirs(out_dir)
    table.to_csv(os.path.join(out_dir, 'trials.csv'), index=False)
    with open(os.path.join(out_dir, 'importance.json'), 'w') as f:
        json.dump(importance, f, indent=1)
    with _agg_pyplot():
        for name, figure in _optuna_plots(spec, study, metric, importance).items():
            figure.savefig(os.path.join(out_dir, name), dpi=100)
    if client is not None:
        _loss_curves(client, rows).savefig(os.path.join(out_dir, 'loss_curves.png'), dpi=100)
    return {'table': table, 'rows': rows, 'importance': importance,
            'files': sorted(os.listdir(out_dir))}


def summarize(spec, client, parent_run_id: str, metric: str) -> dict:
    """Write the sweep's summary to ``<output_dir>/sweep/`` (:func:`write_report`, then
    ``summary.json``), log that folder to the parent run as ``sweep/`` and end the run;
    return the summary."""
    from trainer.experiments import sweep as S

    study = S.open_study(spec)
    out_dir = os.path.join(spec.out, SUMMARY_DIR)
    report = write_report(spec, study, metric, out_dir, client)
    rows = report['rows']
    complete = [r for r in rows if r['state'] == 'COMPLETE' and r['value'] is not None]
    best, pareto = None, None
    if spec.objectives:  # no single best: the Pareto front (Optuna's plot of it)
        pareto = sorted(t.number for t in study.best_trials) if complete else []
    elif complete:
        best = (min if spec.direction == 'minimize' else max)(complete,
                                                              key=lambda r: r['value'])
    counts = {s: sum(r['state'] == s for r in rows) for s in ('COMPLETE', 'PRUNED', 'FAIL')}
    summary = {'trials': sum(r['state'] not in ('REASKED', 'RETRIED') for r in rows),
               'reasked': sum(r['state'] == 'REASKED' for r in rows),
               'retried': sum(r['state'] == 'RETRIED' for r in rows),
               **{k.lower(): v for k, v in counts.items()},
               'metric': metric, 'best': best, 'importance': report['importance']}
    if pareto is not None:
        summary.update({'objectives': [metric] + [m for m, _ in spec.objectives],
                        'pareto': pareto})
        client.set_tag(parent_run_id, 'ddsp.sweep.pareto_trials', json.dumps(pareto))
    if best is not None:
        client.set_tag(parent_run_id, 'ddsp.sweep.best_trial', str(best['trial']))
        client.set_tag(parent_run_id, 'ddsp.sweep.best_run_id', str(best['run_id']))
        client.set_tag(parent_run_id, 'ddsp.sweep.best_overrides', json.dumps(
            {k[len('param.'):]: v for k, v in best.items() if k.startswith('param.')}))
        client.log_metric(parent_run_id, f'best_{metric}', float(best['value']),
                          step=len(rows))
    with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1, default=str)
    client.log_artifacts(parent_run_id, out_dir, SUMMARY_DIR)
    failed_out = counts['FAIL'] > spec.max_failures
    client.set_terminated(parent_run_id, 'FAILED' if failed_out else 'FINISHED')
    summary['rows'] = rows
    summary['summary_dir'] = out_dir
    return summary


def format_summary(summary: dict, tracking_uri: str) -> str:
    lines = [f'{"trial":>5} {"state":<9} {"value":>10} {"step":>6}  params']
    for row in summary['rows']:
        params = ', '.join(f'{k[6:]}={v}' for k, v in row.items() if k.startswith('param.'))
        value = '/'.join(f'{v:.4g}' for v in row['values']) if row.get('values') else \
            f'{row["value"]:.5g}' if row['value'] is not None else '-'
        lines.append(f'{row["trial"]:>5} {row["state"]:<9} {value:>10} '
                     f'{row["step"] if row["step"] is not None else "-":>6}  {params}'
                     + (f'  [{row["error"][:80]}]' if row.get('error') else ''))
    if summary.get('pareto') is not None:
        lines.append(f'pareto front ({", ".join(summary["objectives"])}): trials '
                     f'{", ".join(map(str, summary["pareto"])) or "none"}')
    best = summary.get('best')
    if best:
        lines.append(f'best: trial {best["trial"]} ({summary["metric"]} {best["value"]:.5g}), '
                     f'run {best["run_id"]}')
    lines.append(f'parent run {summary["parent_run_id"]} at {tracking_uri}')
    return '\n'.join(lines)
