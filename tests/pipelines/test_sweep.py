"""ddsp-sweep and ddsp-compare against a real `mlflow server` (SQLite backend): trials on two
DirectRunner workers, a failing trial, idempotent re-runs, TPE, pruning, the listening report."""

from __future__ import annotations

import json
import os
import re

import pytest
from mlflow.tracking import MlflowClient

from ddsp_core import records
from tests.browser import browser as _browser
from tests.browser import wait as _wait
from tests.markers import gives
from tests.trainer.mlflow_server import MlflowServer
from trainer import testing
from trainer.experiments import sweep as S

LAYOUT = records.Layout(16000, 250, 1.0)


@pytest.fixture(scope='module')
@gives('server')
def server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp('sweep-server')) as s:
        yield s


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp('sweep-data')
    testing.write_dataset(d, LAYOUT, n_examples=8, n_shards=2, seed=0)
    testing.write_dataset(d, LAYOUT, n_examples=4, n_shards=1, seed=9, split='eval')
    return d


def _spec(tmp_path, server, dataset, **kw):
    d = {'name': kw.pop('name', 'grid'), 'preset': 'tiny', 'data': str(dataset), 'steps': 20,
         'space': {'train.learning_rate': [0.003], 'data.example_secs': [0.2, 0.4, 0.5, 5.0]},
         'algorithm': 'grid', 'parallel': 2, 'report_every': 10,
         'output_dir': str(tmp_path / 'out'), 'tracking_uri': server.uri,
         'set': ['train.summary_every=100']}
    d.update(kw)
    return S.parse_spec(d)


def _runs(client, spec):
    experiment = client.get_experiment_by_name(spec.experiment_name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.fixture(scope='module')
@gives('trains')
def grid_sweep(tmp_path_factory, server, dataset):
    from pipelines.sweep import run_sweep

    tmp = tmp_path_factory.mktemp('grid')
    spec = _spec(tmp, server, dataset)
    summary = run_sweep(spec)
    return spec, summary


@pytest.mark.slow
def test_grid_sweep_one_parent_four_children_and_a_failing_trial(grid_sweep, server):
    spec, summary = grid_sweep
    client = MlflowClient(server.uri)
    runs = _runs(client, spec)
    parents = [r for r in runs if r.data.tags.get(S.TAG_KIND) == 'sweep']
    children = [r for r in runs if r.data.tags.get('mlflow.parentRunId')]
    assert len(parents) == 1 and len(children) == 4 and len(runs) == 5
    parent = parents[0]
    assert all(c.data.tags['mlflow.parentRunId'] == parent.info.run_id for c in children)
    assert parent.data.params['sweep.algorithm'] == 'grid'
    assert parent.data.params['sweep.metric'] == 'eval_loss'  # the dataset has an eval split
    by_window = {c.data.params['data.example_secs']: c for c in children}
    assert set(by_window) == {'0.2', '0.4', '0.5', '5.0'}
    failed = by_window['5.0']
    assert failed.info.status == 'FAILED'
    assert failed.data.tags[S.TAG_STATE] == 'FAIL'
    assert 'longer than the 1 s examples' in failed.data.tags[S.TAG_ERROR]
    for secs in ('0.2', '0.4', '0.5'):
        child = by_window[secs]
        assert child.info.status == 'FINISHED' and child.data.tags[S.TAG_STATE] == 'COMPLETE'
        assert child.data.params['train.learning_rate'] == '0.003'
        assert child.data.params['model.rnn_channels'] == '32'  # the full config as params
        assert json.loads(child.data.tags[S.TAG_OVERRIDES]) == [
            f'data.example_secs={secs}', 'train.learning_rate=0.003']
        assert len(child.data.tags[S.TAG_TRIAL_HASH]) == 12
        assert 'eval_loss' in child.data.metrics
    assert summary['complete'] == 3 and summary['fail'] == 1
    best = min((c for c in children if c.info.status == 'FINISHED'),
               key=lambda c: c.data.metrics['eval_loss'])
    assert summary['best']['run_id'] == best.info.run_id
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == 'FINISHED'
    assert parent.data.tags['ddsp.sweep.best_run_id'] == best.info.run_id
    assert parent.data.metrics['best_eval_loss'] == pytest.approx(
        best.data.metrics['eval_loss'])
    listed = {a.path for a in client.list_artifacts(parent.info.run_id, 'sweep')}
    assert {'sweep/trials.csv', 'sweep/parallel_coordinates.png', 'sweep/loss_curves.png',
            'sweep/optimization_history.png', 'sweep/importance.json',
            'sweep/summary.json'} <= listed
    assert {f'sweep/{name}' for name in os.listdir(os.path.join(spec.out, 'sweep'))} == listed
    csv_text = client.download_artifacts(parent.info.run_id, 'sweep/trials.csv')
    assert open(csv_text).read().count('\n') == 5  # header + 4 trials


@pytest.mark.slow
def test_rerun_trains_nothing_and_creates_no_run(grid_sweep, server):
    from pipelines.sweep import run_sweep

    spec, _ = grid_sweep
    client = MlflowClient(server.uri)
    before = {r.info.run_id for r in _runs(client, spec)}
    again = run_sweep(spec)
    assert again['ran'] == 0
    assert {r.info.run_id for r in _runs(client, spec)} == before
    # A trial retried by Beam (the same element again) finds its model dir and its run.
    from trainer.training.data import open_source

    fingerprint = open_source(spec.data).fingerprint
    params = {'train.learning_rate': 0.003, 'data.example_secs': 0.5}
    outcome = S.run_trial(spec, {'mode': 'point', 'params': params}, again['parent_run_id'])
    assert outcome.state == 'SKIPPED' and outcome.digest == S.trial_hash(spec, params,
                                                                         fingerprint)
    assert {r.info.run_id for r in _runs(client, spec)} == before


@pytest.mark.trains
def test_an_error_inside_tell_after_the_study_recorded_the_trial_keeps_them_in_agreement(
        tmp_path, server, dataset, monkeypatch):
    """A failure inside Optuna's tell() after it stored the trial's state (as a "database is
    locked" from another worker can be) neither fails the trial nor raises out of run_trial
    (which would fail the sweep's bundle)."""
    import optuna

    spec = _spec(tmp_path, server, dataset, name='tellfail', steps=4, report_every=2,
                 space={'train.learning_rate': [0.003]})
    real_open = S.open_study

    def open_study(spec):
        study = real_open(spec)
        real_tell = study.tell

        def tell(trial, *args, **kwargs):
            real_tell(trial, *args, **kwargs)
            raise optuna.exceptions.StorageInternalError('database is locked (injected)')

        study.tell = tell
        return study

    monkeypatch.setattr(S, 'open_study', open_study)
    outcome = S.run_trial(spec, {'mode': 'point', 'params': {'train.learning_rate': 0.003}},
                          None)
    monkeypatch.undo()
    (stored,) = S.open_study(spec).get_trials()
    assert stored.state.name == 'COMPLETE' and 'error' not in stored.user_attrs
    assert outcome.state == 'COMPLETE' and outcome.value == stored.value
    assert outcome.error is None and outcome.step == 4
    run = MlflowClient(server.uri).get_run(outcome.run_id)
    assert run.data.tags[S.TAG_STATE] == 'COMPLETE'


def test_tpe_proposals_follow_the_results_of_earlier_trials(tmp_path, server, dataset):
    import optuna

    def proposal(good_value):
        spec = _spec(tmp_path / str(good_value), server, dataset, name=f'tpe{good_value}',
                     algorithm='tpe', trials=6,
                     space={'train.learning_rate': {'loguniform': [1e-4, 1e-1]}})
        study = S.open_study(spec)
        for lr, value in ((1e-4, good_value), (1e-1, 1.0 - good_value)):
            study.add_trial(optuna.trial.create_trial(
                params={'train.learning_rate': lr}, distributions=S.distributions(spec),
                value=value))
        asked = [study.ask(S.distributions(spec)).params['train.learning_rate']
                 for _ in range(3)]
        return sum(asked) / len(asked)

    low_good, high_good = proposal(0.0), proposal(1.0)
    # After its start-up trials, TPE proposes near the better of the earlier results.
    assert low_good < 3e-3 < high_good, (low_good, high_good)


@pytest.mark.slow
@pytest.mark.trains
def test_median_pruner_stops_a_losing_trial_before_its_last_step(tmp_path, server, dataset):
    from pipelines.sweep import run_sweep

    spec = _spec(tmp_path, server, dataset, name='prune', pruner='median', parallel=1,
                 steps=30, report_every=5,
                 space={'train.learning_rate': [0.01, 1e-7]})
    summary = run_sweep(spec)
    rows = {r['param.train.learning_rate']: r for r in summary['rows']}
    assert rows[0.01]['state'] == 'COMPLETE'
    pruned = rows[1e-7]
    assert pruned['state'] == 'PRUNED' and pruned['step'] < 30, pruned
    run = MlflowClient(server.uri).get_run(pruned['run_id'])
    assert run.data.tags[S.TAG_STATE] == 'PRUNED'
    assert int(run.data.tags[S.TAG_PRUNED_AT]) == pruned['step']
    assert max(m.step for m in MlflowClient(server.uri).get_metric_history(
        run.info.run_id, 'total_loss')) == pruned['step']


@pytest.mark.slow
def test_compare_names_the_best_run_and_plays_every_run(grid_sweep, server, tmp_path):
    from trainer.experiments.compare import main

    spec, summary = grid_sweep
    code = main(['--sweep', summary['parent_run_id'], '--metric', 'eval_loss',
                 '--tracking_uri', server.uri, '--out', str(tmp_path / 'cmp')])
    assert code == 0
    table = (tmp_path / 'cmp' / 'table.txt').read_text().splitlines()
    best_name = table[1].split()[0]
    client = MlflowClient(server.uri)
    assert client.get_run(summary['best']['run_id']).info.run_name.startswith(best_name[:20])
    assert 'params that differ: data.example_secs' in '\n'.join(table)
    report = (tmp_path / 'cmp' / 'listening_report.html').read_text()
    finished = summary['complete']  # the failed trial has no resynthesis
    assert len(re.findall(r'<audio controls', report)) == 1 + finished  # original + each run
    assert len(re.findall(r'<img alt="spectrogram"', report)) == finished
    assert (tmp_path / 'cmp' / 'curves.png').stat().st_size > 10_000
    listed = {a.path for a in client.list_artifacts(summary['parent_run_id'], 'comparison')}
    assert 'comparison/listening_report.html' in listed


def test_bad_specs_name_the_key(tmp_path, server, dataset):
    for space, needle in (({'model.nope': [1, 2]}, 'model.nope'),
                          ({'train.learning_rate': {'loguniform': [0, 1]}}, 'low > 0'),
                          ({'train.learning_rate': {'gauss': [0, 1]}}, 'unknown kind')):
        with pytest.raises(S.SweepError, match=needle):
            _spec(tmp_path, server, dataset, space=space)
    with pytest.raises(S.SweepError, match='grid needs lists'):
        _spec(tmp_path, server, dataset,
              space={'train.learning_rate': {'uniform': [0.001, 0.01]}})
    with pytest.raises(S.SweepError, match='unknown key'):
        S.parse_spec({'name': 'x', 'data': 'd', 'steps': 1, 'space': {'a': [1]}, 'trails': 3})


@pytest.mark.slow
def test_mlflow_ui_shows_the_sweep_compare_view_and_the_report(grid_sweep, server, tmp_path):
    """What a user sees in MLflow's own UI (a real chromium): the trials under their parent,
    a common audio artifact in the compare view, the listening report with its players."""
    import json as _json
    from pathlib import Path

    from selenium.webdriver.common.by import By

    from trainer.experiments.compare import main as compare_main

    spec, summary = grid_sweep
    parent = summary['parent_run_id']
    assert compare_main(['--sweep', parent, '--metric', 'eval_loss', '--tracking_uri',
                         server.uri, '--out', str(tmp_path / 'cmp')]) == 0
    client = MlflowClient(server.uri)
    experiment_id = client.get_experiment_by_name(spec.experiment_name).experiment_id
    children = [r for r in _runs(client, spec) if r.data.tags.get('mlflow.parentRunId')]
    finished = [r for r in children if r.info.status == 'FINISHED']
    shots = Path(__file__).resolve().parents[2] / 'test-artifacts' / 'ui'
    shots.mkdir(parents=True, exist_ok=True)
    browser = _browser(tmp_path)
    try:
        # 1. The runs table (model-training view): the parent, and its trials under it.
        browser.get(f'{server.uri}/#/experiments/{experiment_id}/runs'
                    '?workflowType=machine_learning')
        _wait(lambda: browser.find_element(By.LINK_TEXT, f'sweep-{spec.name}'))
        body = browser.find_element(By.TAG_NAME, 'body').text
        assert not any(r.info.run_name in body for r in children)  # collapsed under the parent
        row = browser.find_element(By.LINK_TEXT, f'sweep-{spec.name}').find_element(
            By.XPATH, './ancestor::div[@role="row"][1]')
        row.find_element(By.CSS_SELECTOR, 'button[data-component-id*="runnamecell"]').click()
        _wait(lambda: all(r.info.run_name in browser.find_element(By.TAG_NAME, 'body').text
                          for r in children))
        browser.save_screenshot(str(shots / 'sweep_runs_table.png'))
        # 2. The compare view of the finished trials lists their common audio artifact.
        ids = _json.dumps([r.info.run_id for r in finished])
        browser.get(f'{server.uri}/#/compare-runs?runs={ids}&experiments=["{experiment_id}"]'
                    '&workflowType=machine_learning')
        entry = _wait(lambda: browser.find_element(
            By.XPATH, "//*[text()='latest_resynthesis.wav']"))
        assert 'No common artifacts' not in browser.find_element(By.TAG_NAME, 'body').text
        assert 'latest_spectrogram.png' in browser.page_source
        assert 'latest_original.wav' in browser.page_source
        browser.execute_script('arguments[0].scrollIntoView({block: "center"}); '
                               'arguments[0].click();', entry)
        # one waveform preview per run, side by side
        _wait(lambda: len(browser.find_elements(By.TAG_NAME, 'canvas')) >= len(finished))
        browser.save_screenshot(str(shots / 'compare_view.png'))
        # 3. The listening report, opened in MLflow's artifact viewer, plays every run.
        browser.get(f'{server.uri}/#/experiments/{experiment_id}/runs/{parent}/artifacts/'
                    'comparison/listening_report.html?workflowType=machine_learning')
        frame = _wait(lambda: browser.find_element(By.TAG_NAME, 'iframe'))
        browser.switch_to.frame(frame)
        players = _wait(lambda: browser.find_elements(By.TAG_NAME, 'audio'))
        assert len(players) == 1 + len(finished)
        durations = browser.execute_script(
            'const a = [...document.querySelectorAll("audio")]; a.forEach(x => x.load());'
            'return new Promise(done => setTimeout(() => done(a.map(x => x.duration)), 3000));')
        assert all(d > 0.1 for d in durations), durations  # each player loaded its audio
        assert len(browser.find_elements(By.CSS_SELECTOR, 'img[alt="spectrogram"]')) == \
            len(finished)
        browser.switch_to.default_content()
        browser.save_screenshot(str(shots / 'listening_report.png'))
    except BaseException:
        browser.switch_to.default_content()
        browser.save_screenshot(str(shots / 'failure.png'))
        (shots / 'failure.txt').write_text(browser.find_element(By.TAG_NAME, 'body').text)
        raise
    finally:
        browser.quit()


@pytest.mark.slow
@pytest.mark.trains
def test_tpe_in_parallel_runs_six_distinct_points(tmp_path, server, dataset):
    """Six TPE trials, two at a time: six finished trials at six different points (the same
    point would be the same trial hash and model directory), none failed. (Parallel 1 and 3:
    tests/trainer/experiments/test_sweep_study.py without training, test_sweep_postgres.py on
    PostgreSQL.)"""
    from pipelines.sweep import main

    parallel = 2
    code = main(['--name', f'tpe-p{parallel}', '--data', str(dataset), '--steps', '2',
                 '--algorithm', 'tpe', '--trials', '6', '--parallel', str(parallel),
                 '--report_every', '2', '--set', 'train.summary_every=100', '--space',
                 'train.learning_rate={"loguniform": [1e-4, 1e-2]}',
                 '--output_dir', str(tmp_path / 'out'), '--tracking_uri', server.uri])
    assert code == 0
    spec = _spec(tmp_path, server, dataset, name=f'tpe-p{parallel}', algorithm='tpe',
                 trials=6, parallel=parallel, steps=2, report_every=2,
                 space={'train.learning_rate': {'loguniform': [1e-4, 1e-2]}})
    trials = [t for t in S.open_study(spec).get_trials() if not S.is_duplicate(t)]
    assert [t.state.name for t in trials] == ['COMPLETE'] * 6, [
        (t.state.name, t.user_attrs.get('error')) for t in trials]
    assert len({t.params['train.learning_rate'] for t in trials}) == 6
    runs = [r for r in _runs(MlflowClient(server.uri), spec)
            if r.data.tags.get('mlflow.parentRunId')]
    assert len(runs) == 6 and {r.info.status for r in runs} == {'FINISHED'}


@pytest.mark.slow
@pytest.mark.trains
def test_a_trial_whose_process_is_killed_is_retried_in_the_same_sweep_run(
        tmp_path, server, dataset):
    """kill -9 of the process training a trial while ddsp-sweep runs: the element that
    supervised it fails the trial at once (not after the heartbeat's grace period, 4 x 30 s
    here) with the cause, queues its retry (Optuna's retry callback) and runs it at the same
    point in a new process, from the trial's checkpoint, in the same MLflow run (tagged as the
    retry of the dead trial); the sweep ends with exit 0."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    d = {'name': 'killed', 'preset': 'tiny', 'data': str(dataset), 'steps': 150,
         'algorithm': 'tpe', 'trials': 1, 'parallel': 1, 'report_every': 10, 'heartbeat': 30,
         'space': {'train.learning_rate': {'loguniform': [1e-4, 1e-2]}},
         'set': ['train.summary_every=1000', 'train.checkpoint_every=10'],
         'output_dir': str(tmp_path / 'out'), 'tracking_uri': server.uri}
    spec = S.parse_spec(d)
    sweep = subprocess.Popen(
        [sys.executable, '-m', 'pipelines.sweep', '--name', 'killed', '--data', str(dataset),
         '--steps', '150', '--algorithm', 'tpe', '--trials', '1', '--parallel', '1',
         '--report_every', '10', '--heartbeat', '30', '--space',
         'train.learning_rate={"loguniform": [1e-4, 1e-2]}', '--set',
         'train.summary_every=1000', '--set', 'train.checkpoint_every=10', '--output_dir',
         str(tmp_path / 'out'), '--tracking_uri', server.uri],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pid, deadline = None, time.monotonic() + 300
        while pid is None and time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(0.2)
            if not os.path.exists(spec.storage_url[len('sqlite:///'):]):
                continue
            trials = S.open_study(spec).get_trials()
            model_dir = trials[0].user_attrs.get('model_dir') if trials else None
            # a whole checkpoint: the manager writes its ``checkpoint`` file after the
            # checkpoint's own files (an ``.index`` alone may still be being written, and a
            # kill then leaves nothing to resume from)
            if model_dir and trials[0].user_attrs.get('run_id') and \
                    (Path(model_dir) / 'checkpoint').exists():
                pid = int(trials[0].user_attrs['worker'].rsplit(':', 1)[1])
        assert pid is not None and pid != sweep.pid, (
            'the trial ended before it was killed',
            sweep.stdout.read()[-3000:] if sweep.poll() is not None else '')
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        output, _ = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, output[-3000:]
    killed, retry = S.open_study(spec).get_trials()
    assert killed.state.name == 'FAIL' and retry.state.name == 'COMPLETE'
    failed_after = killed.datetime_complete.timestamp() - killed_at
    print(f'kill -> failed: {failed_after:.2f} s; kill -> retry start: '
          f'{retry.datetime_start.timestamp() - killed_at:.2f} s')
    assert failed_after < 10  # the grace period is 120 s
    assert S.retry_history(retry) == [killed.number] and not retry.user_attrs.get('error')
    assert retry.params == killed.params and retry.user_attrs['digest'] == \
        killed.user_attrs['digest']
    assert retry.user_attrs['resumed_from'] >= 10  # from the killed trial's checkpoint
    assert retry.user_attrs['worker'] != killed.user_attrs['worker']
    assert re.search(r'^ +0 RETRIED .*\[its trial process \(pid \d+\) was killed by SIGKILL; '
                     r'retried as trial 1\]\n +1 COMPLETE ', output, re.M), output[-3000:]
    runs = [r for r in _runs(MlflowClient(server.uri), spec)
            if r.data.tags.get('mlflow.parentRunId')]
    assert [r.info.run_id for r in runs] == [killed.user_attrs['run_id']]
    assert runs[0].info.status == 'FINISHED' and runs[0].data.tags[S.TAG_STATE] == 'COMPLETE'
    assert runs[0].data.tags[S.TAG_TRIAL] == '1' and runs[0].data.tags[S.TAG_RETRY_OF] == '0'


# The test's sitecustomize (on the PYTHONPATH the Beam workers inherit): the Beam worker that
# runs a trial SIGKILLs itself, once, when the trial's first checkpoint is on disk, as the
# kernel's out-of-memory killer would. Nothing of it is in the project's code.
KILL_THE_WORKER_ONCE = """
import os
import signal
import threading

_marker = os.environ.get('DDSP_TEST_KILL_MARKER')
if _marker:
    import glob

    from pipelines import sweep as _sweep

    _process = _sweep.RunTrial.process

    def _die_at_the_first_checkpoint(self, element):
        def watch():
            # the manager's ``checkpoint`` file: written once the checkpoint is whole
            pattern = os.path.join(self.spec.output_dir, '**', 'checkpoint')
            while not glob.glob(pattern, recursive=True):
                threading.Event().wait(0.05)
            try:
                fd = os.open(_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:  # a worker died already: this run goes on
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
        yield from _process(self, element)

    _sweep.RunTrial.process = _die_at_the_first_checkpoint
"""


@pytest.mark.slow
def test_a_sweep_whose_beam_worker_is_killed_resumes_the_trial_in_a_second_attempt(
        tmp_path, server, dataset):
    """kill -9 of the Beam worker (not the trial's process) while it supervises a trial: its
    trial process exits with it, the job fails at once and runs again (--job_retries 1), and
    the second attempt resumes the interrupted trial from its checkpoint, in the same MLflow
    run; the sweep ends with exit 0 and one trial."""
    import signal
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    hooks = tmp_path / 'hooks'
    hooks.mkdir()
    (hooks / 'sitecustomize.py').write_text(textwrap.dedent(KILL_THE_WORKER_ONCE))
    marker = tmp_path / 'killed'
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hooks), str(root)]),
               TF_CPP_MIN_LOG_LEVEL='2', DDSP_TEST_KILL_MARKER=str(marker))
    d = {'name': 'worker-killed', 'preset': 'tiny', 'data': str(dataset), 'steps': 60,
         'algorithm': 'tpe', 'trials': 1, 'parallel': 1, 'report_every': 10,
         'space': {'train.learning_rate': {'loguniform': [1e-4, 1e-2]}},
         'set': ['train.summary_every=1000', 'train.checkpoint_every=10'],
         'output_dir': str(tmp_path / 'out'), 'tracking_uri': server.uri}
    spec = S.parse_spec(d)
    # the command as its console script runs it (``-m`` would make RunTrial a class of
    # __main__, pickled by value to the workers, where the hook could not reach it)
    command = [sys.executable, '-c', 'import sys; from pipelines.sweep import main; '
               'sys.exit(main(sys.argv[1:]))', '--name', d['name'], '--data',
               str(dataset), '--steps', '60', '--algorithm', 'tpe', '--trials', '1',
               '--parallel', '1', '--report_every', '10', '--space',
               'train.learning_rate={"loguniform": [1e-4, 1e-2]}', '--set',
               'train.summary_every=1000', '--set', 'train.checkpoint_every=10',
               '--output_dir', d['output_dir'], '--tracking_uri', server.uri]
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    try:
        output, _ = job.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)  # the launcher and its workers
        output, _ = job.communicate()
        pytest.fail(f'the sweep still ran after 400 s:\n{output[-3000:]}')
    assert marker.exists(), f'no worker was killed:\n{output[-3000:]}'
    pid = int(marker.read_text())
    assert job.returncode == 0, output[-3000:]
    assert re.search(rf'worker pid {pid} was killed by signal 9 \(SIGKILL\); running the whole '
                     r'job again \(attempt 2 of 2', output), output[-3000:]
    (trial,) = S.open_study(spec).get_trials()
    assert trial.state.name == 'COMPLETE', trial
    assert trial.user_attrs['resumed_from'] >= 10  # from the checkpoint the first attempt left
    runs = [r for r in _runs(MlflowClient(server.uri), spec)
            if r.data.tags.get('mlflow.parentRunId')]
    assert [r.info.run_id for r in runs] == [trial.user_attrs['run_id']]
    assert runs[0].info.status == 'FINISHED'


@pytest.mark.slow
@pytest.mark.trains
def test_a_multi_objective_sweep_has_a_pareto_front(tmp_path, server, dataset):
    """eval_loss (minimize) and training speed (maximize): each trial is told both values, the
    summary names the Pareto front and logs Optuna's plot of it."""
    from pipelines.sweep import format_summary, run_sweep

    spec = _spec(tmp_path, server, dataset, name='pareto', steps=4, report_every=2,
                 objectives={'steps_per_sec': 'maximize'},
                 space={'train.learning_rate': [0.001, 0.003, 0.01]})
    summary = run_sweep(spec)
    study = S.open_study(spec)
    assert study.directions[1].name == 'MAXIMIZE'
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ['COMPLETE'] * 3
    assert all(len(t.values) == 2 and t.values[1] > 0 for t in trials)
    assert summary['pareto'] == sorted(t.number for t in study.best_trials)
    assert summary['pareto'] and summary['best'] is None
    client = MlflowClient(server.uri)
    listed = {a.path for a in client.list_artifacts(summary['parent_run_id'], 'sweep')}
    assert 'sweep/pareto_front.png' in listed
    parent = client.get_run(summary['parent_run_id'])
    assert json.loads(parent.data.tags['ddsp.sweep.pareto_trials']) == summary['pareto']
    assert 'pareto front (eval_loss, steps_per_sec): trials' in format_summary(summary, 'x')
    with pytest.raises(S.SweepError, match='prunes single-objective studies only'):
        _spec(tmp_path, server, dataset, objectives={'steps_per_sec': 'maximize'},
              pruner='median')


@pytest.mark.slow
@pytest.mark.trains
def test_a_sweep_on_the_portable_runner_with_spaced_beam_options(tmp_path, server, dataset):
    """The reported command: ddsp-sweep's flags, then `--runner PortableRunner --job_endpoint
    ...` spelled with spaces (once "PortableRunner: no such sweep file"); the trial runs in the
    portable runner's worker (tests/pipelines/portable.py) and is recorded in MLflow."""
    from pipelines.sweep import main
    from tests.pipelines.portable import portable_runner

    with portable_runner() as args:
        beam = [token for arg in args for token in arg.split('=', 1)]  # --runner X ...
        code = main(['--name', 'portable', '--data', str(dataset), '--steps', '4',
                     '--space', 'train.learning_rate=[0.003]', '--algorithm', 'grid',
                     '--set', 'train.summary_every=100', '--output_dir', str(tmp_path / 'out'),
                     '--tracking_uri', server.uri, *beam])
    assert code == 0
    spec = S.parse_spec({'name': 'portable', 'data': str(dataset), 'steps': 4,
                         'space': {'train.learning_rate': [0.003]}})
    runs = _runs(MlflowClient(server.uri), spec)
    children = [r for r in runs if r.data.tags.get('mlflow.parentRunId')]
    assert len(children) == 1 and children[0].data.tags[S.TAG_STATE] == 'COMPLETE'
