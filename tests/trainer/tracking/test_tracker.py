"""Tests of trainer.tracking.tracker / trainer.tracking.artifacts against a real `mlflow server`
subprocess."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import time
import types
import uuid

import numpy as np
import pytest
import soundfile as sf
from mlflow.tracking import MlflowClient

try:
    from tests.trainer.mlflow_server import MlflowServer, free_port, mlflow_server
except ModuleNotFoundError:  # pytest put tests/trainer itself on sys.path (no __init__.py files)
    from mlflow_server import MlflowServer, free_port, mlflow_server
from tests.markers import gives
from tests.trainer.conftest import TINY_LAYOUT
from trainer.model.config import resolve_data
from trainer.tracking import artifacts
from trainer.tracking.store import FALLBACK_TAG, FALLBACK_URI_TAG, PARAM_CHANGED_TAG_PREFIX
from trainer.tracking.tracker import Tracker

SR = 16000


@pytest.fixture(scope='module')
@gives('server')
def tracking_uri(tmp_path_factory):
    yield from mlflow_server(tmp_path_factory)


@pytest.fixture(autouse=True)
def _no_env_tracking_uri(monkeypatch):
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)
    monkeypatch.setenv('MLFLOW_DISABLE_TELEMETRY', 'true')


def _experiment() -> str:
    return f'test-{uuid.uuid4().hex[:8]}'


def _sine(freq_hz: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG signature'
    assert data[12:16] == b'IHDR'
    width, height = struct.unpack('>II', data[16:24])
    return width, height


def _tracker_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name.startswith('trainer.tracking.') and r.levelno == logging.WARNING]


# ----------------------------------------------------------------------------- with the server
def test_run_holds_params_tags_and_metric_history(tracking_uri, tmp_path):
    experiment = _experiment()
    tracker = Tracker(tracking_uri, experiment=experiment, local_fallback_dir=tmp_path / 'fb')
    params = {f'model.layer_{i}.units': i for i in range(250)}  # > 100: needs 3 batches
    params.update({'optimizer.learning_rate': 1e-3, 'data.name': 'sines', 'flag': True})
    run_id = tracker.start(params, tags={'ddsp.preset': 'unit', 'ddsp.strategy': 'default'},
                           run_name='unit-run')
    losses = [5.0, 3.0, 2.0, 1.5]
    for step, loss in enumerate(losses):
        tracker.log_metrics({'loss': loss, 'spectral_loss': np.float32(loss / 2)}, step=step * 10)
    tracker.log_metrics({f'many/m{i}': float(i) for i in range(1500)}, step=0)  # > 1000 metrics
    tracker.end()

    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == 'FINISHED'
    assert run.info.run_name == 'unit-run'
    assert client.get_experiment(run.info.experiment_id).name == experiment
    assert run.data.params == {k: str(v) for k, v in params.items()}
    assert run.data.tags['ddsp.preset'] == 'unit'
    assert run.data.tags['ddsp.strategy'] == 'default'
    history = client.get_metric_history(run_id, 'loss')
    assert [m.step for m in history] == [0, 10, 20, 30]
    assert [m.value for m in history] == losses
    assert client.get_metric_history(run_id, 'spectral_loss')[-1].value == pytest.approx(0.75)
    assert len([k for k in run.data.metrics if k.startswith('many/')]) == 1500
    assert run.data.metrics['many/m1499'] == 1499.0
    assert not tracker.is_fallback
    assert not (tmp_path / 'fb').exists(), 'fallback store used although the server was up'


def test_overlong_param_is_truncated_and_kept_in_full(tracking_uri, tmp_path, caplog):
    tracker = Tracker(tracking_uri, experiment=_experiment(), local_fallback_dir=tmp_path / 'fb')
    long_value = 'x' * 7000
    with caplog.at_level(logging.WARNING, logger='trainer.tracking'):
        run_id = tracker.start({'notes': long_value}, tags={})
    tracker.end()
    client = MlflowClient(tracking_uri)
    logged = client.get_run(run_id).data.params['notes']
    assert len(logged) == 6000 and logged.startswith('xxx') and logged.endswith('[truncated]')
    assert any('notes' in r.getMessage() for r in _tracker_warnings(caplog))
    full = client.download_artifacts(run_id, 'params/overlong_params.json', str(tmp_path))
    assert '"notes": "' + long_value + '"' in open(full).read()


def test_audio_and_spectrogram_artifacts_round_trip(tracking_uri, tmp_path):
    tracker = Tracker(tracking_uri, experiment=_experiment(), local_fallback_dir=tmp_path / 'fb')
    run_id = tracker.start({}, tags={})
    tone = _sine(440.0, 0.5)
    resynth = _sine(440.0, 0.5, amplitude=0.3) + _sine(880.0, 0.5, amplitude=0.1)
    tracker.log_audio('tone', tone[np.newaxis, :], SR, step=1200)  # [1, n] accepted
    tracker.log_spectrogram_comparison('compare', tone, resynth, SR, step=1200)
    extra = tmp_path / 'config.json'
    extra.write_text('{"a": 1}')
    tracker.log_file(str(extra), artifact_path='model')
    model_dir = tmp_path / 'ckpt'
    (model_dir / 'sub').mkdir(parents=True)
    (model_dir / 'sub' / 'weights.bin').write_bytes(b'\x00\x01' * 100)
    tracker.log_dir(str(model_dir), artifact_path='model/checkpoint')
    tracker.end()

    client = MlflowClient(tracking_uri)
    listed = {f.path for f in client.list_artifacts(run_id, 'audio/step_001200')}
    assert listed == {'audio/step_001200/tone.wav'}
    wav = client.download_artifacts(run_id, 'audio/step_001200/tone.wav', str(tmp_path / 'dl'))
    samples, sample_rate = sf.read(wav, dtype='float32')
    info = sf.info(wav)
    assert (sample_rate, info.subtype, info.channels) == (SR, 'PCM_16', 1)
    assert samples.shape == tone.shape
    assert np.max(np.abs(samples - tone)) <= 1.0 / 32767  # 16-bit quantisation only

    png = client.download_artifacts(run_id, 'plots/step_001200/compare.png', str(tmp_path / 'dl'))
    data = open(png, 'rb').read()
    width, height = _png_size(data)
    assert 500 <= width <= 2000 and 400 <= height <= 1600
    assert len(data) > 20_000  # two rendered spectrograms, not an empty canvas

    assert {f.path for f in client.list_artifacts(run_id, 'model')} >= {
        'model/config.json', 'model/checkpoint'}
    weights = client.download_artifacts(run_id, 'model/checkpoint/sub/weights.bin',
                                        str(tmp_path / 'dl'))
    assert open(weights, 'rb').read() == b'\x00\x01' * 100


def test_resume_appends_to_the_same_run(tracking_uri, tmp_path, caplog):
    experiment = _experiment()
    params = {'optimizer.learning_rate': 0.001, 'steps': 6}
    first = Tracker(tracking_uri, experiment=experiment, local_fallback_dir=tmp_path / 'fb')
    run_id = first.start(params, tags={'ddsp.preset': 'p'})
    for step in range(3):
        first.log_metrics({'loss': 10.0 - step}, step=step)
    first.end()

    second = Tracker(tracking_uri, experiment=experiment, local_fallback_dir=tmp_path / 'fb')
    changed = dict(params, steps=9)
    with caplog.at_level(logging.WARNING, logger='trainer.tracking'):
        assert second.start(changed, tags={'ddsp.preset': 'p'}, run_id=run_id) == run_id
    for step in range(3, 6):
        second.log_metrics({'loss': 10.0 - step}, step=step)
    second.end()

    client = MlflowClient(tracking_uri)
    history = client.get_metric_history(run_id, 'loss')
    assert [m.step for m in history] == [0, 1, 2, 3, 4, 5]
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    assert len(client.search_runs([experiment_id])) == 1
    run = client.get_run(run_id)
    assert run.info.status == 'FINISHED'
    assert run.data.params['steps'] == '6'  # params are immutable...
    assert run.data.tags[PARAM_CHANGED_TAG_PREFIX + 'steps'] == '6 -> 9'  # ...change recorded
    warnings = _tracker_warnings(caplog)
    assert len(warnings) == 1 and "'steps'" in warnings[0].getMessage()


def test_resume_unknown_run_is_a_clear_error(tracking_uri, tmp_path):
    tracker = Tracker(tracking_uri, experiment=_experiment(), local_fallback_dir=tmp_path / 'fb')
    with pytest.raises(ValueError, match='cannot resume MLflow run .*0123456789abcdef'):
        tracker.start({}, tags={}, run_id='0123456789abcdef0123456789abcdef')


@pytest.mark.slow
@pytest.mark.server
def test_server_killed_mid_run_switches_to_local_fallback(tmp_path, caplog):
    fallback_dir = tmp_path / 'model' / 'mlruns'
    with MlflowServer(tmp_path / 'server') as server:
        tracker = Tracker(server.uri, experiment='killed', local_fallback_dir=fallback_dir)
        run_id = tracker.start({'a': 1, 'b': 'two'}, tags={'ddsp.preset': 'k'}, run_name='kr')
        for step in range(3):
            tracker.log_metrics({'loss': float(step)}, step=step)
        server.kill()
        assert not server.healthy()

        with caplog.at_level(logging.WARNING, logger='trainer.tracking'):
            started = time.monotonic()
            tracker.log_metrics({'loss': 3.0}, step=3)  # first failure: switch
            switch_s = time.monotonic() - started
            for step in range(4, 7):
                tracker.log_metrics({'loss': float(step)}, step=step)
            tracker.log_audio('late', _sine(220.0, 0.25), SR, step=6)
            started = time.monotonic()
            tracker.end()
            end_s = time.monotonic() - started

    assert switch_s < 30, f'switching to the fallback store took {switch_s:.1f} s'
    assert end_s < 30, f'ending the run took {end_s:.1f} s'
    assert tracker.is_fallback
    assert tracker.run_id == run_id
    warnings = _tracker_warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert server.uri in message and str(fallback_dir) in message

    client = MlflowClient(tracker.fallback_tracking_uri)
    assert tracker.fallback_tracking_uri.endswith(str(fallback_dir / 'mlflow.db'))
    experiment_id = client.get_experiment_by_name('killed').experiment_id
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{FALLBACK_TAG}` = '{run_id}'")
    assert len(runs) == 1
    fallback_run = runs[0]
    assert fallback_run.info.run_id == tracker.active_run_id
    assert fallback_run.info.status == 'FINISHED'
    assert fallback_run.info.run_name == 'kr-fallback'
    assert fallback_run.data.tags[FALLBACK_URI_TAG] == server.uri
    assert fallback_run.data.tags['ddsp.preset'] == 'k'
    assert fallback_run.data.params == {'a': '1', 'b': 'two'}
    history = client.get_metric_history(fallback_run.info.run_id, 'loss')
    assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(3, 7)]
    wav = client.download_artifacts(fallback_run.info.run_id, 'audio/step_000006/late.wav',
                                    str(tmp_path / 'dl'))
    assert sf.info(wav).frames == int(0.25 * SR)

    # Resuming the server's run while the server is still down continues the same fallback run.
    again = Tracker(server.uri, experiment='killed', local_fallback_dir=fallback_dir,
                    http_max_retries=0)
    assert again.start({'a': 1, 'b': 'two'}, tags={'ddsp.preset': 'k'}, run_id=run_id) == run_id
    again.log_metrics({'loss': 7.0}, step=7)
    again.end()
    assert again.active_run_id == fallback_run.info.run_id
    history = client.get_metric_history(fallback_run.info.run_id, 'loss')
    assert [m.step for m in history] == [3, 4, 5, 6, 7]
    assert len(client.search_runs([experiment_id])) == 1


# -------------------------------------------------------------------------- without a server
def test_unreachable_at_start_uses_fallback_and_resumes_there(tmp_path, caplog):
    dead_uri = f'http://127.0.0.1:{free_port()}'  # nothing listens there
    fallback_dir = tmp_path / 'mlruns'
    tracker = Tracker(dead_uri, experiment='offline', local_fallback_dir=fallback_dir,
                      http_max_retries=0)
    with caplog.at_level(logging.WARNING, logger='trainer.tracking'):
        started = time.monotonic()
        run_id = tracker.start({'a': 1}, tags={'t': 'v'})
        tracker.log_metrics({'loss': 1.0}, step=0)
        tracker.end()
        elapsed = time.monotonic() - started
    assert elapsed < 30
    assert tracker.is_fallback and run_id == tracker.active_run_id
    assert len(_tracker_warnings(caplog)) == 1

    resumed = Tracker(dead_uri, experiment='offline', local_fallback_dir=fallback_dir,
                      http_max_retries=0)
    assert resumed.start({'a': 1}, tags={'t': 'v'}, run_id=run_id) == run_id
    resumed.log_metrics({'loss': 0.5}, step=1)
    resumed.end()
    client = MlflowClient(f'sqlite:///{fallback_dir / "mlflow.db"}')
    assert [m.step for m in client.get_metric_history(run_id, 'loss')] == [0, 1]
    experiment_id = client.get_experiment_by_name('offline').experiment_id
    assert len(client.search_runs([experiment_id])) == 1


def test_default_store_is_local_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)
    tracker = Tracker(experiment='local')
    assert tracker.tracking_uri.startswith('sqlite:///')
    assert str(tmp_path) in tracker.tracking_uri
    run_id = tracker.start({'x': 2}, tags={})
    tracker.log_metrics({'loss': 0.25}, step=5)
    tracker.log_audio('a', _sine(100.0, 0.1), SR, step=5)
    tracker.end()
    assert (tmp_path / 'mlflow.db').exists()
    client = MlflowClient(tracker.tracking_uri)
    assert client.get_metric_history(run_id, 'loss')[0].value == 0.25
    assert [f.path for f in client.list_artifacts(run_id, 'audio/step_000005')] == [
        'audio/step_000005/a.wav']
    assert not tracker.is_fallback


def test_env_tracking_uri_and_file_store(tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI is honoured; a file: store works where MLflow allows it."""
    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')
    uri = (tmp_path / 'mlruns').as_uri()
    monkeypatch.setenv('MLFLOW_TRACKING_URI', uri)
    with Tracker(experiment='file-store', local_fallback_dir=tmp_path / 'fb') as tracker:
        run_id = tracker.start({'k': 'v'}, tags={})
        tracker.log_metrics({'loss': 2.0}, step=1)
    assert tracker.tracking_uri == uri
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == 'FINISHED' and run.data.metrics == {'loss': 2.0}


def test_bad_calls_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(experiment='errors')
    with pytest.raises(RuntimeError, match='start'):
        tracker.log_metrics({'loss': 1.0}, step=0)
    tracker.start({}, tags={})
    with pytest.raises(ValueError, match="metric 'loss'"):
        tracker.log_metrics({'loss': 'high'}, step=0)
    with pytest.raises(ValueError, match='step'):
        tracker.log_metrics({'loss': 1.0}, step=1.5)
    with pytest.raises(ValueError, match='plain file name'):
        tracker.log_audio('../evil', _sine(100.0, 0.1), SR, step=0)
    with pytest.raises(FileNotFoundError, match='missing.txt'):
        tracker.log_file(str(tmp_path / 'missing.txt'))
    with pytest.raises(ValueError, match='status'):
        tracker.end('DONE')
    tracker.end()
    with pytest.raises(RuntimeError, match='ended'):
        tracker.log_metrics({'loss': 1.0}, step=1)


# --------------------------------------------------------------------------------- artifacts
def test_write_wav_validates_and_clips(tmp_path, caplog):
    with pytest.raises(ValueError, match='NaN'):
        artifacts.write_wav(tmp_path / 'a.wav', np.array([0.0, np.nan], np.float32), SR)
    with pytest.raises(ValueError, match=r'\[n_samples\]'):
        artifacts.write_wav(tmp_path / 'a.wav', np.zeros((2, 10), np.float32), SR)
    with pytest.raises(ValueError, match='sample_rate'):
        artifacts.write_wav(tmp_path / 'a.wav', np.zeros(10, np.float32), 0)
    with caplog.at_level(logging.WARNING, logger='trainer.tracking.artifacts'):
        path = artifacts.write_wav(tmp_path / 'sub' / 'b.wav',
                                   np.array([0.0, 1.5, -2.0, 0.5], np.float32), SR)
    assert any('2 of 4 samples' in r.getMessage() for r in caplog.records)
    samples, _ = sf.read(path, dtype='float32')
    np.testing.assert_allclose(samples, [0.0, 1.0, -1.0, 0.5], atol=1.0 / 32767)


def test_log_magnitude_spectrogram_peaks_at_the_tone(tmp_path):
    times, freqs, db = artifacts.log_magnitude_spectrogram(_sine(1000.0, 1.0), SR)
    assert times[-1] == pytest.approx(1.0, abs=0.05)
    assert freqs[-1] == SR / 2
    peak_hz = freqs[np.argmax(db[:, db.shape[1] // 2])]
    assert abs(peak_hz - 1000.0) <= SR / 1024  # within one bin
    path = artifacts.spectrogram_comparison_png(tmp_path / 'c.png', _sine(1000.0, 1.0),
                                                _sine(500.0, 0.8), SR, title='t')
    assert _png_size(path.read_bytes())[0] > 0


def test_comparison_panels_are_named_and_a_long_title_is_wrapped_to_the_figure():
    default = artifacts.spectrogram_comparison_figure(_sine(1000.0, 0.5), _sine(500.0, 0.5), SR)
    assert [ax.get_title() for ax in default.axes[:2]] == ['Original', 'Resynthesis']
    long_title = 'pitch +12.0 semitones (auto +1 octave), loudness +4.4 dB median ' * 3
    named = artifacts.spectrogram_comparison_figure(
        _sine(1000.0, 0.5), _sine(500.0, 0.5), SR, title=long_title,
        labels=('input: voice.wav', 'output: violin.wav'))
    assert [ax.get_title() for ax in named.axes[:2]] == ['Input: voice.wav',
                                                        'Output: violin.wav']
    lines = named._suptitle.get_text().splitlines()
    assert len(lines) >= 2 and max(len(line) for line in lines) <= 110
    assert ' '.join(lines) == long_title.strip()


def test_git_commit(tmp_path):
    assert artifacts.git_commit(tmp_path) == 'unknown'  # not a repository
    git = ['git', '-C', str(tmp_path), '-c', 'user.name=t', '-c', 'user.email=t@example.com']
    subprocess.run(git[:3] + ['init', '-q'], check=True)
    (tmp_path / 'f').write_text('x')
    subprocess.run(git[:3] + ['add', 'f'], check=True)
    subprocess.run(git + ['commit', '-q', '-m', 'c'], check=True)
    expected = subprocess.run(git[:3] + ['rev-parse', 'HEAD'], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert artifacts.git_commit(tmp_path) == expected
    assert len(expected) == 40


def test_device_description_without_and_with_tensorflow(monkeypatch):
    monkeypatch.delitem(sys.modules, 'tensorflow', raising=False)
    assert artifacts.device_description() == 'unknown'

    def devices(kind, gpus):
        return gpus if kind == 'GPU' else []

    fake_gpu = types.SimpleNamespace(name='/physical_device:GPU:0')
    config = types.SimpleNamespace(
        list_physical_devices=lambda kind: [],
        experimental=types.SimpleNamespace(get_device_details=lambda d: {'device_name': 'H100'}))
    monkeypatch.setitem(sys.modules, 'tensorflow', types.SimpleNamespace(config=config))
    assert artifacts.device_description() == 'CPU'
    config.list_physical_devices = lambda kind: devices(kind, [fake_gpu])
    assert artifacts.device_description() == 'GPU: H100'


@pytest.mark.trains
def test_ddsp_train_run_on_the_server_holds_params_metrics_audio_plots_and_model(
        tracking_uri, tmp_path, tiny_config, tiny_dataset):
    """The whole trainer against the real server: what the MLflow section of the docs lists."""
    import json

    from trainer.training.train import train

    config = tiny_config.with_overrides(['train.log_every=1', 'train.summary_every=2'])
    experiment = _experiment()
    result = train(config, str(tiny_dataset), tmp_path / 'model', 3, tracking_uri=tracking_uri,
                   experiment=experiment, run_name='server-run', progress=False)
    client = MlflowClient(tracking_uri)
    run = client.get_run(result['run_id'])
    assert run.info.status == 'FINISHED' and run.info.run_name == 'server-run'
    assert client.get_experiment(run.info.experiment_id).name == experiment
    resolved = resolve_data(config, TINY_LAYOUT, 'x')
    assert run.data.params == {**resolved.flat(), 'run.steps': '3'}
    assert run.data.params['data.sample_rate'] == '16000'  # filled from the manifest
    assert run.data.tags['mlflow.source.name'] and run.data.tags['mlflow.user']  # MLflow's own
    assert run.data.tags['mlflow.note.content']  # a description of the run
    experiment_tags = client.get_experiment(run.info.experiment_id).tags
    assert experiment_tags['mlflow.experimentKind'] == 'custom_model_development'
    manifest = json.loads((tiny_dataset / 'manifest.json').read_text())
    assert run.data.tags['ddsp.dataset_fingerprint'] == manifest['fingerprint']
    # One loss term: it is total_loss (no duplicate spectral_loss); the norm says pre-clip.
    assert 'spectral_loss' not in run.data.metrics and 'grad_norm' not in run.data.metrics
    assert run.data.params['run.steps'] == '3'
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == manifest['fingerprint'][:36]
    assert dataset_input.dataset.name == tiny_dataset.name
    assert {t.key: t.value for t in dataset_input.tags}['mlflow.data.context'] == 'training'
    for key in ('total_loss', 'grad_norm_preclip', 'learning_rate', 'steps_per_sec',
                'examples_per_sec'):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3], key
    losses = {m.step: m.value for m in client.get_metric_history(run.info.run_id, 'total_loss')}
    assert losses[3] == pytest.approx(result['losses']['total_loss'])

    def listing(path):
        return {f.path for f in client.list_artifacts(run.info.run_id, path)}

    # every summary_every steps and at the end, plus the latest at a path every run shares
    for folder in ('summaries/step_000002', 'summaries/step_000003'):
        assert listing(folder) == {f'{folder}/original.wav', f'{folder}/resynthesis.wav',
                                   f'{folder}/spectrogram.png'}
    # at the root, where MLflow's compare view lists the files every run has
    assert {'latest_original.wav', 'latest_resynthesis.wav', 'latest_spectrogram.png'} <= \
        listing(None)
    wav = client.download_artifacts(run.info.run_id, 'latest_resynthesis.wav',
                                    str(tmp_path / 'dl'))
    samples, sample_rate = sf.read(wav)
    assert sample_rate == 16000 and len(samples) == resolved.data.n_samples
    assert np.max(np.abs(samples)) > 0
    assert {'checkpoints/config.json', 'checkpoints/checkpoint', 'checkpoints/mlflow_run.json',
            'checkpoints/dataset_manifest.json'} <= listing('checkpoints')
    assert 'dataset/manifest.json' in listing('dataset')
    saved = client.download_artifacts(run.info.run_id, 'checkpoints/config.json',
                                      str(tmp_path / 'dl'))
    assert json.loads(open(saved).read())['model']['n_harmonics'] == config.model.n_harmonics


def test_ui_links_open_the_model_training_view():
    from trainer.tracking.store import ui_hint, ui_link

    server = 'http://127.0.0.1:5005/'
    view = '?workflowType=machine_learning'
    assert ui_link(server) == f'http://127.0.0.1:5005/#/experiments{view}'
    assert ui_link(server, '3') == f'http://127.0.0.1:5005/#/experiments/3/runs{view}'
    assert ui_link(server, '3', 'abc') == f'http://127.0.0.1:5005/#/experiments/3/runs/abc{view}'
    assert ui_link(server, '3', 'abc', 'comparison/listening report.html') == (
        'http://127.0.0.1:5005/#/experiments/3/runs/abc/artifacts/comparison/'
        f'listening%20report.html{view}')
    assert ui_link(server, compare_run_ids=['a', 'b'], experiment_ids=['3']) == (
        'http://127.0.0.1:5005/#/compare-runs?runs=%5B%22a%22%2C%20%22b%22%5D'
        '&experiments=%5B%223%22%5D&workflowType=machine_learning')
    # a local store: where `mlflow ui` serves it, and the command that does
    local = 'sqlite:////tmp/x/mlflow.db'
    link = ui_link(local, '1', 'abc')
    assert link == f'http://127.0.0.1:5000/#/experiments/1/runs/abc{view}'
    assert ui_hint(local, link) == (f'{link} (serve the store first: mlflow ui '
                                    f'--backend-store-uri {local})')
    assert ui_hint(server, link) == link
