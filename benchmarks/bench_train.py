"""Training throughput of the `solo_instrument` model on this machine (synthetic data).

Runs the same model, optimizer and distributed train step as ``ddsp-train`` (default or mirrored),
on an in-memory batch of harmonic tones in the layout of a default ``ddsp-prepare`` dataset (4 s
at 16 kHz, 250 frames/s; ``--set data.example_secs=...`` for shorter windows), for each batch
size: a few warm-up steps (tracing), then times N steps and reports the median seconds per step,
steps/s and examples/s as JSON.

    python benchmarks/bench_train.py                      # batch 8 and 32, 5 timed steps
    python benchmarks/bench_train.py --batch_sizes 8 --steps 10 --set train.jit_compile=true
    python benchmarks/bench_train.py --out results.json     # also write the JSON to a file
    python benchmarks/bench_train.py --strategy mirrored     # all local GPUs, synchronous
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402 - after the path insert


def bench(config, batch_size: int, warmup: int, steps: int, dist=None) -> dict:
    import tensorflow as tf

    from trainer.model.config import Config
    from trainer.training.data import synthetic_batch
    from trainer.training.loop import build_model, make_train_step

    config = Config.from_dict({**config.to_dict(),
                               'train': {**config.to_dict()['train'], 'batch_size': batch_size}})
    dist = dist or tf.distribute.get_strategy()
    if batch_size % dist.num_replicas_in_sync:
        raise SystemExit(f'bench_train: batch {batch_size} is not divisible by the '
                         f'{dist.num_replicas_in_sync} replicas')
    model, optimizer, _ = build_model(config, dist)
    step_fn = make_train_step(model, optimizer, dist, config.train)
    batch = {k: tf.constant(v) for k, v in synthetic_batch(config.data, batch_size).items()}
    if dist.num_replicas_in_sync > 1:
        # The global batch split over the replicas, as ddsp-train feeds it.
        batch = next(iter(dist.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(batch).batch(batch_size))))
    times = []
    for i in range(warmup + steps):
        seed = tf.constant([0, i], tf.int32)
        start = time.perf_counter()
        result = step_fn(batch, seed)
        loss = float(result['total_loss'])
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    median = statistics.median(times)
    return {
        'batch_size': batch_size,
        'median_sec_per_step': median,
        'steps_per_sec': 1.0 / median,
        'examples_per_sec': batch_size / median,
        'min_sec_per_step': min(times),
        'max_sec_per_step': max(times),
        'timed_steps': steps,
        'final_loss': loss,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--preset', default='solo_instrument')
    p.add_argument('--batch_sizes', type=int, nargs='+', default=[8, 32])
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--set', dest='overrides', action='append', default=[])
    p.add_argument('--strategy', default='default', choices=('default', 'mirrored'),
                   help='mirrored: all local GPUs (with no GPU, --cpu_replicas logical CPUs)')
    p.add_argument('--cpu_replicas', type=int, default=1,
                   help='logical CPU devices to create (to try --strategy mirrored on a CPU)')
    p.add_argument('--out', help='also write the JSON here')
    args = p.parse_args(argv)

    import tensorflow as tf

    from ddsp_core import records
    from trainer.model.config import load_preset, resolve_data
    from trainer.training.strategy import make_strategy

    if args.cpu_replicas > 1:
        cpu = tf.config.list_physical_devices('CPU')[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_replicas)
    config = resolve_data(load_preset(args.preset).with_overrides(args.overrides),
                          records.Layout(16000, 250, 4.0), 'a default ddsp-prepare layout')
    dist = make_strategy(args.strategy)
    results = [bench(config, b, args.warmup, args.steps, dist) for b in args.batch_sizes]
    return common.emit({
        'preset': args.preset,
        'overrides': args.overrides,
        'strategy': args.strategy,
        'replicas': dist.num_replicas_in_sync,
        'gpus': [d.name for d in tf.config.list_logical_devices('GPU')],
        'example_secs': config.data.example_secs,
        'device': 'cpu' if not tf.config.list_physical_devices('GPU') else 'gpu',
        **common.machine(),
        'tensorflow': tf.__version__,
        'results': results,
    }, args.out)


if __name__ == '__main__':
    sys.exit(main())
