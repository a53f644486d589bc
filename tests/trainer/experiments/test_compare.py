"""``ddsp-compare --experiment`` against a real ``mlflow server``: an experiment of plain
``ddsp-train`` runs, one mixed with a sweep (parent + trials), a comparison run and a run an older
version logged without a kind tag, and two experiments at once."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import pathlib
import re
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.browser import SCREENSHOTS, browser, wait
from tests.markers import gives
from tests.trainer.conftest import TINY_LAYOUT
from tests.trainer.mlflow_server import MlflowServer
from trainer import testing
from trainer.experiments.compare import main as compare_main
from trainer.training.train import main as train_main

STEPS = 4


@pytest.fixture(scope='module')
@gives('server')
def server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp('compare-server')) as s:
        yield s


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('compare-data')
    testing.write_dataset(d, TINY_LAYOUT, n_examples=8, n_shards=2, seed=0)
    return d


def _train(server, data, model_dir, experiment, name, stderr=None):
    """One plain ``ddsp-train`` run (tiny preset, a summary at its last step); its run id.
    What it prints goes to ``stderr`` if given."""
    with contextlib.redirect_stderr(stderr or sys.stderr), \
            contextlib.redirect_stdout(stderr or sys.stdout):
        code = train_main([
            '--preset', 'tiny', '--data', str(data), '--steps', str(STEPS),
            '--model_dir', str(model_dir), '--tracking_uri', server.uri,
            '--experiment', experiment, '--run_name', name, '--no_progress',
            '--set', f'train.summary_every={STEPS}', '--set', 'train.log_every=2'])
    assert code == 0
    return json.loads((model_dir / 'mlflow_run.json').read_text())['run_id']


@pytest.fixture(scope='module')
@gives('trains')
def plain_with_output(server, data, tmp_path_factory):
    """Experiment 'plain': two ddsp-train runs and nothing else; (run ids by name, what
    ddsp-train printed)."""
    tmp = tmp_path_factory.mktemp('plain')
    stderr = io.StringIO()
    ids = {name: _train(server, data, tmp / name, 'plain', name, stderr)
           for name in ('plain-one', 'plain-two')}
    return ids, stderr.getvalue()


@pytest.fixture(scope='module')
def plain(plain_with_output):
    return plain_with_output[0]


def _compare(server, out, *args):
    return compare_main([*args, '--tracking_uri', server.uri, '--out', str(out)])


def _table_names(out):
    lines = (out / 'table.txt').read_text().splitlines()
    return sorted(line.split()[0] for line in lines[1:] if not line.startswith('params'))


@pytest.mark.slow
def test_an_experiment_of_plain_training_runs_compares_them_all(server, plain, tmp_path,
                                                                capsys):
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name('plain')

    def comparisons():  # other tests of the module compare 'plain' too, in any order
        return len(client.search_runs([experiment.experiment_id],
                                      "tags.`ddsp.kind` = 'comparison'"))

    before = comparisons()
    assert _compare(server, tmp_path / 'cmp', '--experiment', 'plain') == 0
    assert _table_names(tmp_path / 'cmp') == ['plain-one', 'plain-two']
    report = (tmp_path / 'cmp' / 'listening_report.html').read_text()
    assert len(re.findall(r'<audio controls', report)) == 1 + 2  # the original + each run
    for run_id in plain.values():
        assert client.get_run(run_id).data.tags['ddsp.kind'] == 'train'
    # the report went to a comparison run in the experiment, which a second comparison leaves out
    assert comparisons() == before + 1
    assert _compare(server, tmp_path / 'again', '--experiment', 'plain') == 0
    assert _table_names(tmp_path / 'again') == ['plain-one', 'plain-two']


@pytest.mark.slow
@pytest.mark.trains
def test_a_mixed_experiment_selects_exactly_the_training_runs(server, data, tmp_path):
    from pipelines.sweep import run_sweep
    from trainer.experiments import sweep as S

    client = MlflowClient(server.uri)
    plain_ids = {_train(server, data, tmp_path / name, 'mixed', name)
                 for name in ('plain-a', 'plain-b')}
    spec = S.parse_spec({
        'name': 'mixed', 'experiment': 'mixed', 'preset': 'tiny', 'data': str(data),
        'steps': STEPS, 'space': {'train.learning_rate': [0.001, 0.003]}, 'algorithm': 'grid',
        'parallel': 1, 'report_every': 2, 'output_dir': str(tmp_path / 'sweep'),
        'tracking_uri': server.uri, 'set': [f'train.summary_every={STEPS}']})
    summary = run_sweep(spec)
    parent = summary['parent_run_id']
    trial_ids = {r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name('mixed').experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent}'")}
    assert len(trial_ids) == 2
    assert all(client.get_run(t).data.tags['ddsp.kind'] == 'trial' for t in trial_ids)
    assert client.get_run(parent).data.tags['ddsp.kind'] == 'sweep'
    # A run an older version logged (no kind tag) with a training metric counts; one without
    # a training metric (e.g. an old comparison run) does not.
    experiment_id = client.get_experiment_by_name('mixed').experiment_id
    legacy = client.create_run(experiment_id, run_name='legacy').info.run_id
    client.log_metric(legacy, 'total_loss', 3.0, step=STEPS)
    client.set_terminated(legacy)
    other = client.create_run(experiment_id, run_name='untagged-other').info.run_id
    client.set_terminated(other)
    # a first comparison creates a comparison run in the experiment: the second leaves it out
    assert _compare(server, tmp_path / 'first', '--experiment', 'mixed') == 0
    assert _compare(server, tmp_path / 'cmp', '--experiment', 'mixed') == 0
    rows = json.loads((tmp_path / 'cmp' / 'runs.json').read_text())
    assert {r['run_id'] for r in rows} == plain_ids | trial_ids | {legacy}
    assert len(rows) == 5


@pytest.mark.slow
def test_two_experiments_are_compared_together(server, plain, data, tmp_path):
    other = _train(server, data, tmp_path / 'three', 'plain-other-data', 'three')
    assert _compare(server, tmp_path / 'cmp', '--experiment', 'plain',
                    '--experiment', 'plain-other-data') == 0
    rows = json.loads((tmp_path / 'cmp' / 'runs.json').read_text())
    assert {r['run_id'] for r in rows} == set(plain.values()) | {other}


def test_an_unknown_experiment_is_a_usage_error(server, tmp_path, capsys):
    assert _compare(server, tmp_path / 'cmp', '--experiment', 'no-such-experiment') == 2
    assert "--experiment 'no-such-experiment': no such experiment" in capsys.readouterr().err


@pytest.mark.slow
def test_a_finished_ddsp_train_run_has_mlflow_system_metrics(server, plain, data, tmp_path):
    client = MlflowClient(server.uri)
    for run_id in plain.values():
        metrics = client.get_run(run_id).data.metrics
        assert {'system/cpu_utilization_percentage',
                'system/system_memory_usage_megabytes'} <= set(metrics), sorted(metrics)
    # --no_system_metrics turns them off
    code = train_main(['--preset', 'tiny', '--data', str(data), '--steps', '2',
                       '--model_dir', str(tmp_path / 'quiet'), '--tracking_uri', server.uri,
                       '--experiment', 'no-system-metrics', '--no_progress',
                       '--no_system_metrics'])
    assert code == 0
    run_id = json.loads((tmp_path / 'quiet' / 'mlflow_run.json').read_text())['run_id']
    run = client.get_run(run_id)
    assert run.data.params['train.system_metrics_every_s'] == '0.0'
    assert not [k for k in run.data.metrics if k.startswith('system/')]


#: In the UI's GenAI view (what MLflow 3 opens without workflowType): its sidebar and overview.
GENAI_ONLY = ('Observability', 'Sessions')


def _printed_links(stderr: str, prefix: str) -> dict[str, str]:
    """``{'what': url}`` of the lines ``<prefix>: ... <what>: http...`` a command printed."""
    return {m.group(1): m.group(2) for m in re.finditer(
        rf'^{re.escape(prefix)}: (?:MLflow )?([^:\n]+): (http://\S+)', stderr, re.M)}


@pytest.mark.slow
def test_printed_links_open_the_model_training_view_and_system_metrics_show(
        server, plain_with_output, tmp_path, capsys):
    from selenium.webdriver.common.by import By

    names, printed = list(plain_with_output[0]), plain_with_output[1]
    assert 'View run' not in printed  # MLflow's own GenAI-view links are off
    train_links = _printed_links(printed, 'ddsp-train')
    assert set(train_links) == {'run', 'runs of the experiment'}, printed
    assert _compare(server, tmp_path / 'cmp', '--experiment', 'plain') == 0
    compare_links = _printed_links(capsys.readouterr().err, 'ddsp-compare')
    assert set(compare_links) == {'listening report', 'the 2 best runs side by side'}
    for link in (*train_links.values(), *compare_links.values()):
        assert link.startswith(server.uri) and 'workflowType=machine_learning' in link
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    chrome = browser(tmp_path)

    def body():
        return chrome.find_element(By.TAG_NAME, 'body').text

    try:
        # Without the view, MLflow 3 opens the experiment on its GenAI traces overview...
        chrome.get(train_links['runs of the experiment'].split('?')[0])
        wait(lambda: all(word in body() for word in GENAI_ONLY))
        # ... the printed link opens the runs table, listing both runs.
        # (The hash route changes without a page load: the GenAI sidebar may linger for a moment
        # while the runs table renders, so its absence is waited for, not sampled once.)
        chrome.get(train_links['runs of the experiment'])
        wait(lambda: 'Run Name' in body() and all(n in body() for n in names)
             and not any(word in body() for word in GENAI_ONLY))
        assert 'workflowType=machine_learning' in chrome.current_url
        chrome.save_screenshot(str(SCREENSHOTS / 'runs_table_from_printed_link.png'))
        # The run's page, and its System metrics tab with a chart per metric.
        chrome.get(train_links['run'])
        wait(lambda: chrome.find_element(By.XPATH, "//*[text()='System metrics']")
             and not any(word in body() for word in GENAI_ONLY))
        tab = chrome.find_element(By.XPATH, "//*[text()='System metrics']")
        tab.click()
        # a chart per metric, titled by its name ('(system/<name>)' beside a line chart of
        # several samples, the bare name above a bar of one)
        wait(lambda: re.search(r'System metrics\s*\(\d+\)', body()) and all(
            key in body() for key in ('cpu_utilization_percentage',
                                      'system_memory_usage_megabytes')))
        charts = wait(lambda: chrome.find_elements(By.CSS_SELECTOR, 'svg.main-svg'))
        assert len(charts) >= 2
        chrome.save_screenshot(str(SCREENSHOTS / 'system_metrics.png'))
        # ddsp-compare's links: the listening report plays both runs; the run comparison.
        chrome.get(compare_links['listening report'])
        frame = wait(lambda: chrome.find_element(By.TAG_NAME, 'iframe'))
        chrome.switch_to.frame(frame)
        assert len(wait(lambda: chrome.find_elements(By.TAG_NAME, 'audio'))) == 1 + 2
        chrome.switch_to.default_content()
        chrome.get(compare_links['the 2 best runs side by side'])
        wait(lambda: 'Comparing 2 Runs' in body() and all(n in body() for n in names)
             and not any(word in body() for word in GENAI_ONLY))
        chrome.save_screenshot(str(SCREENSHOTS / 'compare_from_printed_link.png'))
    except BaseException:
        chrome.switch_to.default_content()
        chrome.save_screenshot(str(SCREENSHOTS / 'printed_links_failure.png'))
        (SCREENSHOTS / 'printed_links_failure.txt').write_text(body())
        raise
    finally:
        chrome.quit()


@pytest.mark.slow
def test_histories_come_from_the_servers_bulk_endpoint_a_page_per_request(server, monkeypatch):
    """Against an ``mlflow server``, 101 runs' histories take 2 bulk requests (100 runs each)
    and no per-run request (MLflow's REST client has no bulk call: its fallback asks twice per
    run, which made a 10,000-run comparison take many minutes)."""
    from mlflow.entities import Metric

    from trainer.experiments import compare

    client = MlflowClient(server.uri)
    experiment = client.create_experiment('bulk-histories')
    expected = {}
    for i in range(101):
        run_id = client.create_run(experiment).info.run_id
        client.log_batch(run_id, metrics=[Metric('total_loss', i + s / 10, 0, s)
                                          for s in range(1 + i % 3)])
        expected[run_id] = [(s, i + s / 10) for s in range(1 + i % 3)]
    calls = []
    real = compare._server_bulk
    monkeypatch.setattr(compare, '_server_bulk', lambda *a: calls.append(len(a[1])) or real(*a))
    monkeypatch.setattr(client, 'get_metric_history', lambda *a: pytest.fail('per-run request'))
    assert compare.metric_histories(client, list(expected), 'total_loss') == expected
    assert sorted(calls) == [1, 100]


class _ArtifactsOnDisk:
    """MlflowClient's two artifact calls the listening report makes, over a folder per run."""

    def __init__(self, root):
        self.root = root

    def list_artifacts(self, run_id, path=None):
        import types

        folder = self.root / run_id / (path or '')
        if not folder.is_dir():
            raise OSError(f'no artifact folder {path}')
        return [types.SimpleNamespace(path=str(p.relative_to(self.root / run_id)),
                                      is_dir=p.is_dir()) for p in sorted(folder.iterdir())]

    def download_artifacts(self, run_id, path, dst):
        import shutil

        src = self.root / run_id / path
        out = pathlib.Path(dst) / src.name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, out)
        return str(out)


def test_listening_report_escapes_what_users_named(tmp_path):
    from trainer.experiments.compare import RunRow, listening_report

    names = {'r1': '<script>alert(1)</script>', 'r2': 'strings & "quotes"'}
    for run_id in names:
        for name in ('latest_original.wav', 'latest_resynthesis.wav', 'latest_spectrogram.png'):
            (tmp_path / run_id).mkdir(exist_ok=True)
            (tmp_path / run_id / name).write_bytes(run_id.encode() + b'-' + name.encode())
    rows = [RunRow(run_id, name, 'FINISHED', {}, final, final, 10)
            for (run_id, name), final in zip(names.items(), (0.25, 0.5), strict=True)]
    report = listening_report(_ArtifactsOnDisk(tmp_path), rows, 'eval/<loss>', 'title <i>x</i>')
    assert '<script>' not in report and '&lt;script&gt;alert(1)&lt;/script&gt;' in report
    assert 'strings &amp; &#34;quotes&#34;' in report
    assert '<title>title &lt;i&gt;x&lt;/i&gt;</title>' in report
    assert 'eval/&lt;loss&gt; 0.25' in report and 'eval/&lt;loss&gt; 0.5' in report
    assert '<p>2 runs, best eval/&lt;loss&gt; first;' in report
    # the original once, then each run's resynthesis, each with its spectrogram
    assert len(re.findall(r'<audio controls', report)) == 1 + 2
    assert len(re.findall(r'<img alt="spectrogram"', report)) == 2
    embedded = base64.b64encode(b'r2-latest_resynthesis.wav').decode()
    assert f'src="data:audio/wav;base64,{embedded}"' in report
    assert listening_report(_ArtifactsOnDisk(tmp_path / 'none'), rows, 'm', 't').count(
        'No run has listening examples') == 1
