"""The job builds for Dataflow offline: DataflowRunner --dry_run constructs it without submitting.

Needs the ``gcp`` extra (apache-beam[gcp]).
"""

import os

import apache_beam as beam
import numpy as np
import pytest
import soundfile as sf

from pipelines import prepare_dataset as prep
from pipelines.options import PrepareOptions

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Exactly what a user adds for Dataflow, plus --dry_run/--no_auth to stay offline.
DATAFLOW_ARGS = ['--runner', 'DataflowRunner', '--project', 'test-project',
                 '--region', 'us-central1', '--temp_location', 'gs://test-bucket/tmp',
                 '--setup_file', os.path.join(ROOT, 'setup.py'),
                 '--requirements_file', os.path.join(ROOT, 'requirements.lock'),
                 '--requirements_cache', 'skip']
OFFLINE = ['--dry_run=True', '--no_auth']


def _inputs(tmp_path):
    sf.write(str(tmp_path / 'a.wav'), np.full(16000, 0.1, np.float32), 16000)
    return str(tmp_path / '*.wav')


@pytest.mark.slow
def test_cli_builds_the_dataflow_job(tmp_path, capsys):
    code = prep.main(['--input', _inputs(tmp_path), '--output_dir', 'gs://test-bucket/out',
                      '--crepe_capacity', 'tiny'] + DATAFLOW_ARGS + OFFLINE)
    assert code == 0
    assert 'job built' in capsys.readouterr().err


@pytest.mark.slow
def test_dataflow_job_contains_every_step_and_stages_the_package(tmp_path):
    options = prep._pipeline_options(DATAFLOW_ARGS + OFFLINE)
    pipeline = beam.Pipeline(options=options)
    files = prep.expand_inputs([_inputs(tmp_path)])
    prep.build_pipeline(pipeline, files, 'gs://test-bucket/out', PrepareOptions(), ['x'])
    result = pipeline.run()
    job = result.job
    top = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    for step in ('Decode', 'Spread', 'CREPE', 'Examples', 'AssignShard', 'GroupShards',
                 'WriteShards', 'EmptySplits', 'SilentDL', 'Stats', 'Manifest'):
        assert step in top, step
    assert 'Unspill' not in top  # Dataflow's shuffle holds the chunks: nothing spills there
    staged = str(job.proto_pipeline.components.environments)
    assert 'workflow.tar.gz' in staged  # --setup_file ships this package to the workers
    # --requirements_file ships the lock: workers install exactly the launcher's versions.
    staged_files = {}
    for env in job.proto_pipeline.components.environments.values():
        for dep in env.dependencies:
            payload = beam.portability.api.beam_runner_api_pb2.ArtifactFilePayload.FromString(
                dep.type_payload)
            role = beam.portability.api.beam_runner_api_pb2.ArtifactStagingToRolePayload \
                .FromString(dep.role_payload)
            staged_files[role.staged_name] = payload.path
    assert 'requirements.txt' in staged_files, sorted(staged_files)
    with open(staged_files['requirements.txt'], encoding='utf-8') as f:
        assert f.read() == open(os.path.join(ROOT, 'requirements.lock'), encoding='utf-8').read()
    assert options.view_as(beam.options.pipeline_options.StandardOptions).runner == \
        'DataflowRunner'


@pytest.mark.slow
def test_dry_run_neither_lists_nor_touches_the_output_dir(tmp_path):
    """Building the job reads nothing from --output_dir (offline, gs:// cannot be listed) and
    leaves a dataset already there as it is."""
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'manifest.json').write_text('{}')
    (out / 'train-00000-of-00001.tfrecord').write_bytes(b'')
    inputs = tmp_path / 'in'
    inputs.mkdir()
    result = prep.prepare_dataset(_inputs(inputs), str(out), crepe_capacity='tiny',
                                  pipeline_args=DATAFLOW_ARGS + OFFLINE)
    assert result is None
    assert sorted(os.listdir(out)) == ['manifest.json', 'train-00000-of-00001.tfrecord']
    assert (out / 'manifest.json').read_text() == '{}'
