"""`make demo` end to end at a small size: every stage leaves what the final message points to."""

import json
import logging

import numpy as np
import pytest
import soundfile as sf
from mlflow import MlflowClient

from tools import demo


@pytest.fixture
def logging_levels():
    """demo.main sets logging levels for its process: put them back after the test."""
    loggers = [logging.getLogger(name) for name in ('', 'apache_beam', 'root', 'mlflow')]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)  # (setLevel also clears the loggers' cached levels)


@pytest.mark.slow
@pytest.mark.usefixtures('logging_levels')
@pytest.mark.trains
def test_demo_prepares_trains_evaluates_transfers_and_says_where_to_listen(tmp_path, capsys):
    out = tmp_path / 'demo'
    # one recording long enough to hold out a block of (about 19 s at the defaults)
    assert demo.main(['--out', str(out), '--steps', '3', '--seconds', '20',
                      '--transfer_secs', '2']) == 0
    printed = capsys.readouterr().out
    for stage in range(1, 6):
        assert f'[{stage}/5]' in printed
    assert 'Where to listen' in printed and str(out / 'transfer') in printed

    manifest = json.loads((out / 'dataset' / 'manifest.json').read_text())
    assert manifest['examples'] > 0
    # the recording's eval block: a real eval split, no file held out whole
    assert manifest['split']['method'] == 'segment'
    assert manifest['splits']['eval']['examples'] >= 1
    assert manifest['splits']['train']['examples'] >= 1
    aggregate = json.loads((out / 'eval' / 'aggregate.json').read_text())
    assert aggregate['step'] == 3 and aggregate['split'] == 'eval'
    assert aggregate['examples'] == manifest['splits']['eval']['examples']
    for label in ('best', 'worst'):
        assert (out / 'eval' / label / 'resynthesis.wav').exists()

    source, rate = sf.read(out / 'transfer' / 'input_22k_stereo.wav')
    assert rate == 22050 and source.shape[1] == 2
    for name in ('output_wet.wav', 'output_dry.wav'):
        audio, rate = sf.read(out / 'transfer' / name)
        assert rate == 16000 and audio.ndim == 1
        assert len(audio) == pytest.approx(2.0 * 16000, abs=1)
        assert np.sqrt(np.mean(audio ** 2)) > 1e-4  # sound, not silence

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    run_id = printed.split('MLflow run:')[1].split()[0]
    run = client.get_run(run_id)
    # the link it prints opens the run in the UI's model-training view
    assert (f'http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run_id}'
            '?workflowType=machine_learning') in printed
    assert 'eval/spectral_distance' in run.data.metrics
    assert 'eval_loss' in run.data.metrics  # the training run watched the eval split
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {'latest_resynthesis.wav', 'eval', 'transfer'} <= top
    (logged,) = client.list_artifacts(run_id, 'transfer')
    names = {a.path.rsplit('/', 1)[-1] for a in client.list_artifacts(run_id, logged.path)}
    assert {'input.wav', 'output.wav', 'spectrogram.png'} <= names
