"""ddsp-sweep as a team runs it: Optuna's study and MLflow's runs in a real PostgreSQL server
(a throw-away one, tests/postgres_server.py), reached by plain postgresql:// URLs, with
three trials at a time."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from ddsp_core import records
from tests.markers import gives
from tests.postgres_server import PostgresServer
from tests.trainer.mlflow_server import MlflowServer
from trainer import testing
from trainer.experiments import sweep as S

SPACE = 'train.learning_rate={"loguniform": [1e-4, 1e-2]}'


@pytest.fixture(scope='module')
@gives('server')
def postgres():
    with PostgresServer() as server:
        yield server


@pytest.mark.slow
@pytest.mark.trains
def test_tpe_sweep_with_three_workers_on_postgresql(tmp_path, postgres):
    from pipelines.sweep import main

    data = tmp_path / 'data'
    testing.write_dataset(data, records.Layout(16000, 250, 1.0), n_examples=6, n_shards=2,
                          seed=0)
    storage = postgres.create_database('optuna')
    backend = postgres.create_database('mlflow')
    assert storage.startswith('postgresql://') and backend.startswith('postgresql://')
    with MlflowServer(tmp_path / 'mlflow', backend_store_uri=backend) as mlflow:
        args = ['--name', 'pg', '--data', str(data), '--steps', '2', '--algorithm', 'tpe',
                '--trials', '6', '--parallel', '3', '--report_every', '2',
                '--set', 'train.summary_every=100', '--space', SPACE,
                '--storage', storage, '--output_dir', str(tmp_path / 'out'),
                '--tracking_uri', mlflow.uri]
        assert main(args) == 0
        spec = S.parse_spec({'name': 'pg', 'data': str(data), 'steps': 2, 'algorithm': 'tpe',
                             'trials': 6, 'report_every': 2, 'set': ['train.summary_every=100'],
                             'space': {'train.learning_rate': {'loguniform': [1e-4, 1e-2]}},
                             'storage': storage})
        trials = S.sweep_trials(S.open_study(spec))
        assert [t.state.name for t in trials] == ['COMPLETE'] * 6, [
            (t.state.name, t.user_attrs.get('error')) for t in trials]
        assert len({t.params['train.learning_rate'] for t in trials}) == 6
        client = MlflowClient(mlflow.uri)
        experiment = client.get_experiment_by_name(spec.experiment_name)
        runs = client.search_runs([experiment.experiment_id])
        children = [r for r in runs if r.data.tags.get('mlflow.parentRunId')]
        assert len(children) == 6 and {r.info.status for r in children} == {'FINISHED'}
        assert {r.info.run_id for r in children} == {t.user_attrs['run_id'] for t in trials}
    # the runs are in PostgreSQL (not in a file next to the server)
    import psycopg

    with psycopg.connect(backend) as connection:
        (count,) = connection.execute('SELECT count(*) FROM runs').fetchone()
    assert count == 7  # the parent and six trials
