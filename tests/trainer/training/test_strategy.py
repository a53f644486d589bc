"""tf.distribute: mirrored over two logical CPUs equals one device; two local multi-workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[3]

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from trainer.model.config import load_preset
    from trainer.training.train import train
    from tests.trainer.conftest import RecordingTracker

    data, out = sys.argv[1], sys.argv[2]
    # The log-magnitude term is left out: its gradient (~1 / magnitude on near-silent bins) is
    # dominated by rounding, so it cannot tell a reduction bug from summation order.
    config = load_preset('tiny').with_overrides(['train.summary_every=3', 'train.log_every=1',
                                                 'model.logmag_weight=0'])
    result = {}
    for strategy in ('default', 'mirrored'):
        tracker = RecordingTracker()
        r = train(config, data, f'{out}/{strategy}', 3, strategy=strategy, tracker=tracker,
                  progress=False)
        result[strategy] = {'losses': tracker.losses(), 'step': r['step'],
                            'grad_norms': [m['grad_norm_preclip'] for _, m in tracker.metrics],
                            'replicas': len(tf.config.list_logical_devices('CPU')),
                            'logged': sorted({c[0] for c in tracker.calls})}

    # The optimizer applies the gradients it is given (make_train_step has all-reduced them
    # already): opposite gradients on the two replicas move their copies apart, where an
    # optimizer that all-reduces again would see a zero sum and not move them.
    from trainer.training.train import _adam_for_reduced_gradients
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices('CPU')],
        cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        var = tf.Variable([0.0, 0.0])
        opt = _adam_for_reduced_gradients(learning_rate=0.1)
        opt.build([var])

    @tf.function
    def apply():
        def fn():
            ctx = tf.distribute.get_replica_context()
            sign = 1.0 - 2.0 * tf.cast(ctx.replica_id_in_sync_group, tf.float32)
            opt.apply_gradients([(tf.fill([2], sign), var)])
        strategy.run(fn)

    apply()
    result['replica_copies'] = [v.numpy().tolist()
                                for v in strategy.experimental_local_results(var)]
    result['reduces_gradients'] = bool(opt.reduces_gradients)
    print('RESULT ' + json.dumps(result))
""")

WORKER_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import trainer.training.loop as T
    from trainer.model.config import load_preset, resolve_data
    from trainer.training.data import make_dataset, open_source
    from trainer.training.train import train

    built = {}
    build_model = T.build_model

    def capture(config, dist=None):
        built['dist'] = dist
        built['model'], optimizer, schedule = build_model(config, dist)
        built['initial'] = [np.array(v.numpy()) for v in built['model'].trainable_variables]
        return built['model'], optimizer, schedule

    T.build_model = capture
    data, model_dir = sys.argv[1], sys.argv[2]
    config = load_preset('tiny').with_overrides(['train.summary_every=0',
                                                 'train.checkpoint_every=2'])
    r = train(config, data, model_dir, 3, strategy='multi_worker', track=False,
              progress=False)
    final = [np.asarray(v.numpy(), np.float64) for v in built['model'].trainable_variables]
    # Which examples this worker reads: the first f0 of each (whole records, no crops), over a
    # few global batches.
    source = open_source(data)
    whole = resolve_data(config.with_overrides(['data.example_secs=none']), source.layout,
                         source.where).data
    seen = []
    batches = iter(built['dist'].experimental_distribute_dataset(
        make_dataset(source, whole, config.train.batch_size, seed=1)))
    for _ in range(4):
        f0 = built['dist'].experimental_local_results(next(batches)['f0_hz'])[0]
        seen += [round(float(f), 3) for f in f0[:, 0].numpy()]
    print('RESULT ' + json.dumps({
        'step': r['step'], 'losses': r['losses'], 'seen_f0': seen,
        'checksum': float(sum(np.sum(np.abs(w)) for w in final)),
        'moved': float(sum(np.sum(np.abs(w - i)) for w, i in zip(final, built['initial'])))}))
""")


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')])
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    env.pop('TF_CONFIG', None)
    return env


def _result(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith('RESULT ')]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len('RESULT '):])


@pytest.mark.slow
@pytest.mark.trains
def test_mirrored_over_two_cpus_matches_single_device(tmp_path, tiny_dataset):
    proc = subprocess.run([sys.executable, '-c', MIRRORED_SCRIPT, str(tiny_dataset),
                           str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          env=_env(), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _result(proc.stdout)
    single, mirrored = result['default'], result['mirrored']
    assert mirrored['replicas'] == 2 and single['step'] == mirrored['step'] == 3
    # Same initial weights and global batch: the first loss (batch split over the replicas,
    # per-replica losses scaled by the global batch and summed) and the norm of the all-reduced
    # gradient agree to float precision.
    np.testing.assert_allclose(mirrored['losses'][0], single['losses'][0], rtol=1e-5)
    np.testing.assert_allclose(mirrored['grad_norms'][0], single['grad_norms'][0], rtol=1e-4)
    # Later steps stay close (the updates saw the same all-reduced, clipped gradients).
    np.testing.assert_allclose(mirrored['losses'], single['losses'], rtol=1e-3)
    np.testing.assert_allclose(mirrored['grad_norms'], single['grad_norms'], rtol=1e-2)
    # And the mirrored weights were actually updated (loss changes between steps).
    assert mirrored['losses'][0] != mirrored['losses'][1]
    # Summaries (audio, spectrograms) render from mirrored variables too.
    assert {'log_audio', 'log_spectrogram_comparison'} <= set(mirrored['logged'])
    # Gradients are all-reduced once per step (by the train step), not again by the optimizer.
    assert result['reduces_gradients'] is False
    copy0, copy1 = result['replica_copies']
    np.testing.assert_allclose(copy0, [-0.1, -0.1], rtol=1e-3)
    np.testing.assert_allclose(copy1, [0.1, 0.1], rtol=1e-3)


def _read_examples(path):
    from ddsp_core import records

    return [records.parse_example(record.numpy()) for record in tf.data.TFRecordDataset(str(path))]


def _free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(('127.0.0.1', 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
@pytest.mark.trains
def test_multi_worker_two_local_processes(tmp_path, tiny_dataset):
    ports = _free_ports(2)
    workers = [f'127.0.0.1:{p}' for p in ports]
    model_dir = tmp_path / 'model'
    procs = []
    for index in range(2):
        env = _env()
        env['TF_CONFIG'] = json.dumps({'cluster': {'worker': workers},
                                       'task': {'type': 'worker', 'index': index}})
        procs.append(subprocess.Popen(
            [sys.executable, '-c', WORKER_SCRIPT, str(tiny_dataset), str(model_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=400))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    results = [_result(out) for out, _ in outputs]
    assert results[0]['step'] == results[1]['step'] == 3
    # Losses are all-reduced over the workers, so both report the same numbers.
    assert results[0]['losses']['total_loss'] == pytest.approx(
        results[1]['losses']['total_loss'], rel=1e-6)
    # Each worker trains on its own shard of the data; only the all-reduced gradients keep their
    # weights identical. Both moved from the initial weights, to the same place.
    assert results[0]['moved'] > 0 and results[1]['moved'] > 0
    assert results[0]['checksum'] == pytest.approx(results[1]['checksum'], rel=1e-6)
    # With as many shards as workers, each worker reads only its own shard (tf.data FILE
    # auto-sharding), not every shard keeping every other example.
    shard_f0 = [{round(float(ex['f0_hz'][0]), 3) for ex in _read_examples(path)}
                for path in sorted(Path(tiny_dataset).glob('train-*.tfrecord'))]
    assert len(shard_f0) == 2
    read = [set(r['seen_f0']) for r in results]
    assert all(read) and read[0] != read[1]
    assert sorted(shard_f0.index(s) for s in read) == [0, 1], (read, shard_f0)
    # Only the chief keeps checkpoints and the config; the other worker's scratch dir is gone.
    assert tf.train.latest_checkpoint(str(model_dir)).endswith('ckpt-3')
    assert (model_dir / 'config.json').exists()
    assert not (model_dir / '.worker_1').exists()


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
    from trainer.training.strategy import make_strategy

    monkeypatch.delenv('TF_CONFIG', raising=False)
    with pytest.raises(ValueError, match='TF_CONFIG'):
        make_strategy('multi_worker')
    with pytest.raises(ValueError, match='expected one of'):
        make_strategy('tpu')
