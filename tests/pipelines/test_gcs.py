"""``gs://`` for real, on loopback (the emulator of ``tests/gcs_emulator.py``):

- ddsp-prepare reads its recordings from a GCS bucket and writes the dataset to one (Beam's GCS
  filesystem, ``google-cloud-storage``), and the dataset is the local run's, byte for byte. The
  local run is the shared ``cli_run`` fixture (the same command on the same recordings, on a
  local disk, 2 worker processes). The shards must be equal in bytes; the ledger and the manifest
  may differ only in where the recordings were read from (their paths), and the dead letters not
  at all.
- ddsp-train trains on that ``gs://`` dataset and ddsp-eval evaluates it, writing its report to
  ``gs://`` (TensorFlow's own GCS client reads the shards and the manifest): the report equals,
  byte for byte, the evaluation of the same model on the local copy written to a local folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gcs_emulator import GcsEmulator

ROOT = Path(__file__).resolve().parents[2]


def _run(gcs: GcsEmulator, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m <args>`` with the emulator's environment (and nothing of a real cloud's)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(
        ('GOOGLE_', 'GCE_', 'STORAGE_EMULATOR', 'HTTPS_PROXY', 'NO_PROXY', 'CURL_CA'))}
    env.update(gcs.env)
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')])
    done = subprocess.run([sys.executable, '-m', *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f'{args[0]}: exit {done.returncode}\n{done.stderr[-3000:]}'
    return done


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob('*') if p.is_file()}


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.trains
def test_prepare_train_and_eval_on_gcs_give_the_local_runs_bytes(cli_run, tmp_path):
    assert cli_run.returncode == 0, cli_run.stderr[-3000:]
    local = Path(cli_run.output_dir)
    local_inputs = local.parent / 'in'
    with GcsEmulator(tmp_path) as gcs:
        for wav in sorted(local_inputs.glob('*.wav')):
            gcs.upload(wav, f'in/{wav.name}')
        data = f'gs://{gcs.bucket}/data'
        done = _run(gcs, tmp_path, 'pipelines.prepare_dataset',
                    '--input', f'gs://{gcs.bucket}/in/*.wav', '--output_dir', data,
                    '--crepe_capacity', 'tiny', '--chunk_secs', '1', '--eval_fraction', '0.5',
                    '--direct_num_workers=2')
        # Credentials came from the (loopback) metadata server at once: no default-credential
        # retries, no anonymous fallback.
        assert 'Unable to find default credentials' not in done.stderr
        on_gcs = gcs.objects('data/')
        # TensorFlow's client: train on the bucket's dataset, evaluate it into the bucket, and
        # evaluate the same model on the local copy into a local folder.
        model = tmp_path / 'model'
        _run(gcs, tmp_path, 'trainer.training.train', '--preset', 'tiny', '--data', data, '--steps',
        '2',
             '--model_dir', str(model), '--no_tracking', '--no_progress')
        assert (model / 'dataset_manifest.json').exists()
        eval_args = ('--model', str(model), '--split', 'train', '--no_mlflow', '--no_progress',
                     '--listen', '0')
        _run(gcs, tmp_path, 'pipelines.evaluate', *eval_args, '--data', data,
             '--out', f'gs://{gcs.bucket}/eval')
        _run(gcs, tmp_path, 'pipelines.evaluate', *eval_args, '--data', str(local),
             '--out', str(tmp_path / 'eval'))
        evaluated = gcs.objects('eval/')
        # The model directory copied to the bucket loads from there.
        for path in model.rglob('*'):
            if path.is_file() and not path.name.startswith('.'):
                gcs.upload(path, f'model/{path.relative_to(model)}')
        eval_args = (*eval_args[:1], f'gs://{gcs.bucket}/model', *eval_args[2:])
        _run(gcs, tmp_path, 'pipelines.evaluate', *eval_args, '--data', str(local),
             '--out', str(tmp_path / 'eval-of-gs-model'))
    written = {p.name: p.read_bytes() for p in local.iterdir() if p.is_file()}
    assert set(on_gcs) == set(written), (sorted(on_gcs), sorted(written))
    shards = [n for n in written if n.endswith('.tfrecord')]
    assert len(shards) >= 2 and any(written[n] for n in shards)
    for name in shards + ['dead_letters.jsonl']:
        assert on_gcs[name] == written[name], name

    def relocated(text: str) -> str:
        """The local run's text with its recordings read from the bucket instead."""
        return text.replace(str(local_inputs), f'gs://{gcs.bucket}/in')

    assert on_gcs['files.jsonl'].decode() == relocated(written['files.jsonl'].decode())
    assert json.loads(on_gcs['manifest.json']) == json.loads(
        relocated(written['manifest.json'].decode()))
    ledger = [json.loads(line) for line in on_gcs['files.jsonl'].decode().splitlines()]
    assert {e['path'] for e in ledger} == {f'gs://{gcs.bucket}/in/{n}'
                                          for n in cli_run.files.values()}
    local_eval = _tree(tmp_path / 'eval')
    assert {'aggregate.json', 'examples.jsonl', 'best/resynthesis.wav'} <= set(local_eval)
    assert evaluated == local_eval  # the whole report, sub-folders (best/, worst/) included
    assert json.loads(local_eval['aggregate.json'])['examples'] > 0
    assert _tree(tmp_path / 'eval-of-gs-model') == local_eval


def test_a_model_dir_or_sweep_output_dir_url_is_refused_not_made_locally(tmp_path,
                                                                          monkeypatch):
    """``Path('gs://b/m')`` is the local folder ``gs:/b/m``: ddsp-train and sweeps refuse a URL
    there (exit 2, naming the flag) instead of quietly training into it."""
    from trainer.experiments.sweep import SweepError, parse_spec
    from trainer.training import train as train_lib

    monkeypatch.chdir(tmp_path)
    code = train_lib.main(['--preset', 'tiny', '--data', str(tmp_path), '--steps', '1',
                           '--model_dir', 'gs://bucket/m', '--no_tracking'])
    assert code == 2
    assert not (tmp_path / 'gs:').exists()
    with pytest.raises(SweepError, match='output_dir.*local folders'):
        parse_spec({'name': 'x', 'data': str(tmp_path), 'steps': 2, 'trials': 1,
                   'space': {'train.learning_rate': [0.001]}, 'output_dir': 'gs://bucket/sw'})
