"""The sweep's summary (trainer.experiments.sweep_report) without training or MLflow: the table
from Optuna's trials_dataframe, Optuna's plots on the Agg backend."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import optuna
import pandas as pd
from matplotlib.figure import Figure

from trainer.experiments import sweep as S
from trainer.experiments.sweep_report import format_summary, write_report


def test_the_report_is_optunas_table_and_plots_drawn_on_agg(tmp_path, monkeypatch):
    """write_report (no training, no MLflow): trials.csv is Optuna's trials_dataframe in the
    sweep's columns (a FAIL's reason, a REASKED duplicate), Optuna's plots are PNG files drawn
    by the Agg canvas even when the process had another backend, which is set back, and no
    figure is left open."""
    spec = S.parse_spec({'name': 'report', 'data': 'unused', 'steps': 10, 'algorithm': 'tpe',
                         'heartbeat': 0,
                         'output_dir': str(tmp_path / 'out'), 'space': {
                             'train.learning_rate': {'loguniform': [1e-4, 1e-2]},
                             'train.grad_clip_norm': {'uniform': [1.0, 5.0]}}})
    study = S.open_study(spec)
    for value in (3.0, 2.0, 2.5):
        trial = study.ask(S.distributions(spec))
        trial.report(value + 1, 5)
        study.tell(trial, value)
    failed = study.ask(S.distributions(spec))
    failed.set_user_attr('error', 'ValueError: diverged')
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    duplicate = study.ask(S.distributions(spec))
    S._reject_duplicate(study, duplicate, study.get_trials()[1], 'proposed the point of trial',
                        'asked again')
    canvases, savefig = [], Figure.savefig
    monkeypatch.setattr(Figure, 'savefig', lambda self, *a, **k: (
        canvases.append(type(self.canvas).__name__), savefig(self, *a, **k))[1])
    plt.switch_backend('svg')  # another backend chosen before (a display's, a notebook's)
    try:
        report = write_report(spec, study, 'eval_loss', str(tmp_path / 'sweep'))
        assert matplotlib.get_backend() == 'svg' and not plt.get_fignums()
    finally:
        plt.switch_backend('agg')
    assert report['files'] == ['importance.json', 'optimization_history.png',
                               'parallel_coordinates.png', 'param_importances.png',
                               'trials.csv']
    assert canvases == ['FigureCanvasAgg'] * 3
    for name in report['files']:
        if name.endswith('.png'):
            assert plt.imread(tmp_path / 'sweep' / name).shape[0] >= 300
    table = pd.read_csv(tmp_path / 'sweep' / 'trials.csv')
    assert list(table['state']) == ['COMPLETE'] * 3 + ['FAIL', 'REASKED']
    assert list(table['value'][:3]) == [3.0, 2.0, 2.5] and list(table['step'][:3]) == [5] * 3
    trials = study.get_trials()
    assert list(table['param.train.learning_rate']) == [
        t.params['train.learning_rate'] for t in trials]
    assert table['duration_secs'][0] >= 0 and table['datetime_start'].notna().all()
    assert table['error'][3] == 'ValueError: diverged'
    assert table['error'][4].startswith('proposed the point of trial 1')
    assert report['rows'][1]['trial'] == 1 and report['rows'][1]['step'] == 5
    assert set(report['importance']) == {'train.learning_rate', 'train.grad_clip_norm'}
    text = format_summary({**report, 'parent_run_id': 'p'}, 'x')
    assert '    3 FAIL               -      -  train.grad_clip_norm=' in text
