"""``gs://`` for real, on loopback: ddsp-prepare reads its recordings from a GCS bucket and writes
the dataset to one (Beam's GCS filesystem, ``google-cloud-storage``, on the emulator of
``tests/gcs_emulator.py``), and the dataset is the local run's, byte for byte.

The local run is the shared ``cli_run`` fixture (the same command on the same recordings, on a
local disk, 2 worker processes); this runs it again with both ends on GCS. The shards must be
equal in bytes; the ledger and the manifest may differ only in where the recordings were read
from (their paths), and the dead letters not at all.
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


def _prepare_on_gcs(gcs: GcsEmulator, local_inputs: Path,
                    tmp_path: Path) -> subprocess.CompletedProcess:
    for wav in sorted(local_inputs.glob('*.wav')):
        gcs.upload(wav, f'in/{wav.name}')
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('GOOGLE_', 'GCE_', 'STORAGE_EMULATOR'))}
    env.update(gcs.env)
    cmd = [sys.executable, '-m', 'pipelines.prepare_dataset',
           '--input', f'gs://{gcs.bucket}/in/*.wav', '--output_dir', f'gs://{gcs.bucket}/data',
           '--crepe_capacity', 'tiny', '--chunk_secs', '1', '--eval_fraction', '0.5',
           '--direct_num_workers=2']
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_prepare_from_and_to_gcs_writes_the_local_runs_bytes(cli_run, tmp_path):
    assert cli_run.returncode == 0, cli_run.stderr[-3000:]
    local = Path(cli_run.output_dir)
    local_inputs = local.parent / 'in'
    with GcsEmulator(tmp_path) as gcs:
        done = _prepare_on_gcs(gcs, local_inputs, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        # Credentials came from the (loopback) metadata server at once: no default-credential
        # retries, no anonymous fallback.
        assert 'Unable to find default credentials' not in done.stderr
        on_gcs = gcs.objects('data/')
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
