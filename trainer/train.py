"""Train the DDSP autoencoder: library function :func:`train` and the ``ddsp-train`` CLI.

Example::

    ddsp-train --preset solo_instrument --data 'out/train-*.tfrecord' --steps 30000 \\
        --model_dir runs/violin --set train.batch_size=16

A model directory holds TF checkpoints (``ckpt-STEP.*``), ``config.json`` (the full config),
``mlflow_run.json`` (the MLflow run id, so a resumed run appends to the same run) and
``dataset_manifest.json`` (a copy of the dataset's manifest, when it has one). Running again with
a model directory that holds a checkpoint resumes from it exactly: same step, weights and
optimizer state; the same data order too with ``train.checkpoint_data_iterator`` on one device
(distributed iterators cannot be checkpointed: there a resumed run reshuffles with a
step-derived seed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

from trainer.config import Config, ConfigError, available_presets, load_preset

logger = logging.getLogger(__name__)

RUN_FILENAME = 'mlflow_run.json'
MANIFEST_COPY = 'dataset_manifest.json'
FALLBACK_DIRNAME = 'mlruns'  # local MLflow store used if the tracking server fails
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C / SIGINT / SIGTERM); a checkpoint was saved."""


class NullTracker:
    """A Tracker that records nothing (non-chief workers, ``track=False``)."""

    def start(self, params, tags, run_id=None, run_name=None):
        return run_id or ''

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _read_run_id(model_dir: Path) -> str | None:
    path = model_dir / RUN_FILENAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text()).get('run_id') or None
    except (OSError, json.JSONDecodeError, AttributeError):
        logger.warning('%s is unreadable; starting a new MLflow run', path)
        return None


def _check_resume_config(model_dir: Path, config: Config) -> None:
    """A checkpoint can only be resumed by a config with the same model and signal layout."""
    saved_path = model_dir / 'config.json'
    if not saved_path.exists():
        return
    saved = Config.load(saved_path).flat()
    new = config.flat()
    differ = sorted(k for k in new if k.startswith(('model.', 'data.sample_rate',
                                                    'data.frame_rate', 'data.example_secs'))
                    and saved.get(k) != new[k])
    if differ:
        detail = ', '.join(f'{k}: {saved.get(k)} -> {new[k]}' for k in differ)
        raise ConfigError(f'--model_dir {model_dir} holds a checkpoint trained with a different '
                          f'model config ({detail}); use a new --model_dir or the same settings')
    # These keep the model but change the arithmetic: the run goes on, not as an exact replay.
    changed = [k for k in ('train.jit_compile', 'train.compute_dtype')
               if k in saved and saved[k] != new[k]]
    if changed:
        logger.warning('resuming %s with %s changed (%s): training continues from the '
                       'checkpoint, but does not replay exactly what the old settings would '
                       'have computed (XLA draws the filtered noise with its own generator; '
                       'bfloat16 rounds differently)', model_dir, ', '.join(changed),
                       ', '.join(f'{saved[k]} -> {new[k]}' for k in changed))


def _log_model_dir(tracker, model_dir: Path) -> None:
    """Log the model dir's files as artifacts under ``model/`` (not the fallback MLflow store)."""
    for entry in sorted(model_dir.iterdir()):
        if entry.name == FALLBACK_DIRNAME or entry.name.startswith('.'):
            continue
        if entry.is_dir():
            tracker.log_dir(str(entry), f'model/{entry.name}')
        else:
            tracker.log_file(str(entry), 'model')


def _finite(values: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in values.values())


def _adam_for_reduced_gradients(**kwargs):
    """``keras.optimizers.Adam`` that applies gradients as given in a replica context.

    Under a distribution strategy Keras all-reduces the gradients handed to
    ``apply_gradients``; :func:`make_train_step` has already all-reduced (and clipped) them, and
    a second all-reduce would double the step's communication. If this Keras has no such hook,
    the plain optimizer is returned with ``reduces_gradients = True`` and the train step hands
    it each replica's share instead.
    """
    import keras

    base = keras.optimizers.Adam
    if not callable(getattr(base, '_all_reduce_sum_gradients', None)):
        optimizer = base(**kwargs)
        optimizer.reduces_gradients = True
        return optimizer

    class Adam(base):
        reduces_gradients = False

        def _all_reduce_sum_gradients(self, grads_and_vars):
            return grads_and_vars

    return Adam(**kwargs)


def build_model(config: Config, dist=None):
    """Create the autoencoder (variables built) and its Adam optimizer under ``dist``'s scope.

    Returns:
        (model, optimizer, learning-rate schedule).
    """
    import keras
    import tensorflow as tf

    from trainer.model import Autoencoder

    dist = dist or tf.distribute.get_strategy()
    tc = config.train
    with dist.scope():
        model = Autoencoder(config.model, config.data, compute_dtype=tc.compute_dtype)
        model(model.dummy_features(1))
        schedule = keras.optimizers.schedules.ExponentialDecay(
            tc.learning_rate, decay_steps=tc.decay_steps, decay_rate=tc.decay_rate,
            staircase=True)
        optimizer = _adam_for_reduced_gradients(learning_rate=schedule)
        optimizer.build(model.trainable_variables)
    return model, optimizer, schedule


def make_train_step(model, optimizer, dist, train_config):
    """The distributed training step as a ``tf.function(batch, seed) -> metrics``.

    Each replica computes the spectral loss on its share of the global batch, scaled by
    1 / num_replicas (so the all-reduced sum is the global-batch mean); gradients are
    all-reduced, clipped to ``train_config.grad_clip_norm`` by global norm, and applied.

    Args (of the returned function):
        batch: dict (or distributed dict) of audio [batch, n_samples] and frame features
            [batch, n_frames]; the global batch.
        seed: [2] int32 noise seed (the step makes every step's noise different and replayable).

    Returns (of the returned function):
        dict of scalars: each loss term, ``total_loss``, ``grad_norm`` (before clipping).
    """
    import tensorflow as tf

    from trainer.model import NOISE_SEED_KEY

    variables = model.trainable_variables

    def forward_backward(batch, seed, n):
        batch = dict(batch)
        batch[NOISE_SEED_KEY] = seed
        with tf.GradientTape() as tape:
            outputs = model(batch, training=True)
            terms = model.losses_dict(outputs)
            total = tf.add_n(list(terms.values()))
            # Each replica's loss is a mean over its share of the global batch.
            scaled = total / n
        return terms, scaled, tape.gradient(scaled, variables)

    if train_config.jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(batch, seed):
        ctx = tf.distribute.get_replica_context()
        n = ctx.num_replicas_in_sync
        terms, scaled, grads = forward_backward(batch, seed, float(n))
        if n > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grads, grad_norm = tf.clip_by_global_norm(grads, train_config.grad_clip_norm)
        if getattr(optimizer, 'reduces_gradients', True) and n > 1:
            # An optimizer that sums over replicas again gets each replica's share.
            grads = [g / n for g in grads]
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        metrics = {k: v / n for k, v in terms.items()}
        metrics['total_loss'] = scaled
        metrics['grad_norm'] = grad_norm / n
        return metrics

    @tf.function
    def train_step(batch, seed):
        per_replica = dist.run(replica_step, args=(batch, seed))
        return {k: dist.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    return train_step


def train(config: Config, data: str, model_dir: str | os.PathLike, steps: int,
          strategy: str = 'default', tracking_uri: str | None = None,
          experiment: str | None = None, run_name: str | None = None, tracker=None,
          track: bool = True, progress: bool = True) -> dict:
    """Train (or resume training) the autoencoder until the global step reaches ``steps``.

    Args:
        config: Full configuration (see :mod:`trainer.config`).
        data: Data spec: TFRecord glob(s), a prepared-dataset dir, or ``tfds:NAME[:SPLIT]``.
        model_dir: Where checkpoints, ``config.json`` and the run id live; resumes from the
            latest checkpoint there if any.
        steps: Total number of optimizer steps to reach (not additional steps).
        strategy: ``'default'``, ``'mirrored'`` or ``'multi_worker'`` (TF_CONFIG).
        tracking_uri: MLflow tracking URI (None: MLFLOW_TRACKING_URI or MLflow's default).
        experiment: MLflow experiment name (None: ``'ddsp'``).
        run_name: MLflow run name for a new run.
        tracker: An object with the :class:`trainer.tracking.Tracker` interface to use instead
            of creating one.
        track: False: log nothing to MLflow.
        progress: Show a tqdm progress bar.

    Returns:
        ``{'step', 'losses' (final loss terms and 'total_loss'), 'run_id', 'model_dir',
        'steps_per_sec', 'resumed_from'}``.

    Raises:
        TrainingDivergedError: the loss became NaN/inf (nothing saved after the last good step).
        TrainingInterrupted: KeyboardInterrupt; a checkpoint was saved and the run marked KILLED.
        ConfigError, trainer.data.DataError: bad config or data (message names the cause).
    """
    import keras
    import tensorflow as tf
    from tqdm.auto import tqdm

    from trainer import artifacts
    from trainer import data as data_lib
    from trainer import strategy as strategy_lib
    from trainer.model import NOISE_SEED_KEY

    if steps <= 0:
        raise ConfigError(f'--steps must be positive, got {steps}')
    tc = config.train
    model_dir = Path(model_dir)
    dist = strategy_lib.make_strategy(strategy)
    chief = strategy_lib.is_chief(dist)
    n_replicas = dist.num_replicas_in_sync
    multi_worker = strategy_lib.is_multi_worker(dist)
    if tc.batch_size % n_replicas:
        raise ConfigError(f'train.batch_size={tc.batch_size} must be divisible by the '
                          f'{n_replicas} replicas of --strategy {strategy}')
    if chief:
        model_dir.mkdir(parents=True, exist_ok=True)
        _check_resume_config(model_dir, config)
    # Non-chief workers must also save (collective ops), into a scratch dir removed at the end.
    ckpt_dir = model_dir if chief else model_dir / f'.worker_{strategy_lib.worker_index(dist)}'

    keras.utils.set_random_seed(tc.seed)
    model, optimizer, schedule = build_model(config, dist)

    save_iterator = tc.checkpoint_data_iterator and n_replicas == 1 and not multi_worker
    if tc.checkpoint_data_iterator and not save_iterator:
        logger.warning('train.checkpoint_data_iterator is ignored with --strategy %s '
                       '(distributed iterators cannot be checkpointed); a resumed run '
                       'reshuffles with a step-derived seed', strategy)
    # Every worker restores the chief's latest checkpoint (model_dir on a shared filesystem).
    latest = tf.train.latest_checkpoint(str(model_dir)) if model_dir.exists() else None
    resumed_step = 0
    if latest:
        resumed_step = int(latest.rsplit('-', 1)[-1])
    # Without a saved iterator, a resumed run reshuffles with a step-derived seed.
    data_seed = tc.seed if (save_iterator or not resumed_step) else tc.seed + resumed_step
    dataset = data_lib.make_dataset(data, config.data, tc.batch_size, seed=data_seed)
    if n_replicas == 1 and not multi_worker:
        iterator = iter(dataset)
    else:
        iterator = iter(dist.experimental_distribute_dataset(dataset))

    ckpt_items = {'model': model, 'optimizer': optimizer}
    if save_iterator:
        ckpt_items['data_iterator'] = iterator
    checkpoint = tf.train.Checkpoint(**ckpt_items)
    manager = tf.train.CheckpointManager(checkpoint, str(ckpt_dir),
                                         max_to_keep=max(1, tc.keep_checkpoints),
                                         step_counter=optimizer.iterations)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        logger.info('resumed from %s (step %d)', latest, int(optimizer.iterations.numpy()))
    start_step = int(optimizer.iterations.numpy())

    train_step = make_train_step(model, optimizer, dist, tc)

    @tf.function
    def resynthesize(features, seed):
        features = dict(features)
        features[NOISE_SEED_KEY] = seed
        return model(features, training=False)['audio_synth']

    summary_batch = None
    if tc.summary_every > 0 and chief:
        first = next(iter(data_lib.make_dataset(data, config.data, 1, seed=tc.seed,
                                                shuffle=False, repeat=False)))
        summary_batch = {k: v for k, v in first.items()}

    # ---- tracking -----------------------------------------------------------------------------
    manifest = data_lib.find_manifest(data)
    run_id = None
    if not chief or not track:
        tracker = NullTracker()
    elif tracker is None:
        from trainer.tracking import Tracker
        tracker = Tracker(tracking_uri=tracking_uri, experiment=experiment or 'ddsp',
                          local_fallback_dir=str(model_dir / FALLBACK_DIRNAME))
    params = config.flat()
    tags = {
        'ddsp.git_commit': artifacts.git_commit(),
        'ddsp.dataset_fingerprint': data_lib.dataset_fingerprint(data),
        'ddsp.dataset_path': str(data),
        'ddsp.preset': config.preset,
        'ddsp.strategy': strategy,
        'ddsp.device': artifacts.device_description(),
    }
    if chief:
        previous_run = _read_run_id(model_dir) if latest else None
        run_id = tracker.start(params, tags, run_id=previous_run, run_name=run_name)
        if run_id:
            (model_dir / RUN_FILENAME).write_text(json.dumps(
                {'run_id': run_id, 'tracking_uri': tracking_uri or os.environ.get(
                    'MLFLOW_TRACKING_URI'), 'experiment': experiment or 'ddsp'}) + '\n')
        config.save(model_dir)
        if manifest is not None:
            shutil.copyfile(manifest, model_dir / MANIFEST_COPY)

    def save_checkpoint(step):
        manager.save(checkpoint_number=int(optimizer.iterations.numpy()))
        if chief:
            config.save(model_dir)

    def write_summaries(step):
        if summary_batch is None:
            return
        audio = resynthesize(summary_batch, tf.constant([tc.seed, 0], tf.int32))
        original = summary_batch['audio'][0].numpy()
        resynth = audio[0].numpy()
        sr = config.data.sample_rate
        tracker.log_audio('original', original, sr, step)
        tracker.log_audio('resynthesis', resynth, sr, step)
        tracker.log_spectrogram_comparison('spectrogram', original, resynth, sr, step)

    # ---- loop ---------------------------------------------------------------------------------
    step = start_step
    last = {}
    status = 'FAILED'
    bar = tqdm(total=steps, initial=step, disable=not (progress and chief), unit='step',
               dynamic_ncols=True)
    window_start, window_steps = time.perf_counter(), 0
    rate = float('nan')
    loop_start, loop_steps = time.perf_counter(), 0
    try:
        while step < steps:
            batch = next(iterator)
            seed = tf.constant([tc.seed, step], tf.int32)
            result = train_step(batch, seed)
            values = {k: float(v.numpy()) for k, v in result.items()}
            if not _finite(values):
                bad = ', '.join(f'{k}={v}' for k, v in values.items() if not math.isfinite(v))
                good = manager.latest_checkpoint
                raise TrainingDivergedError(
                    f'loss is not finite at step {step + 1} ({bad}); stopped without saving. '
                    f'Last good checkpoint: {good or "none"} in {model_dir}. Check the data for '
                    'NaN/inf or lower train.learning_rate / train.grad_clip_norm.')
            step += 1
            last = values
            window_steps += 1
            loop_steps += 1
            bar.update(1)
            if (tc.log_every and step % tc.log_every == 0) or step == steps:
                elapsed = time.perf_counter() - window_start
                rate = window_steps / elapsed if elapsed > 0 else float('nan')
                window_start, window_steps = time.perf_counter(), 0
                metrics = dict(values)
                metrics['learning_rate'] = float(schedule(step - 1))
                metrics['steps_per_sec'] = rate
                metrics['examples_per_sec'] = rate * tc.batch_size
                tracker.log_metrics(metrics, step=step)
                bar.set_postfix(loss=f'{values["total_loss"]:.4f}', steps_per_sec=f'{rate:.2f}')
            if tc.checkpoint_every > 0 and step % tc.checkpoint_every == 0:
                save_checkpoint(step)
            if tc.summary_every > 0 and step % tc.summary_every == 0:
                write_summaries(step)
        if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(
                f'-{step}'):
            save_checkpoint(step)
        if tc.summary_every > 0 and step % tc.summary_every != 0 and step > start_step:
            write_summaries(step)
        if chief:
            _log_model_dir(tracker, model_dir)
            if manifest is not None:
                tracker.log_file(str(manifest), 'dataset')
        status = 'FINISHED'
    except KeyboardInterrupt as e:
        status = 'KILLED'
        # The interrupt may land after the step's update ran but before Python saw its loss.
        step = int(optimizer.iterations.numpy())
        weights_ok = all(bool(tf.reduce_all(tf.math.is_finite(v)))
                         for v in model.trainable_variables)
        if weights_ok and step > start_step:
            save_checkpoint(step)
        bar.close()
        raise TrainingInterrupted(
            f'interrupted at step {step}; checkpoint saved in {model_dir}; run again with the '
            'same --model_dir to resume') from e
    finally:
        bar.close()
        tracker.end(status)
        if not chief:
            shutil.rmtree(ckpt_dir, ignore_errors=True)

    total_elapsed = time.perf_counter() - loop_start
    return {
        'step': step,
        'losses': last,
        'run_id': run_id,
        'model_dir': str(model_dir),
        'steps_per_sec': loop_steps / total_elapsed if total_elapsed > 0 else float('nan'),
        'resumed_from': start_step,
    }


# ---- CLI --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='ddsp-train', description='Train the DDSP autoencoder (resumes from --model_dir).')
    p.add_argument('--preset', default='solo_instrument',
                   help=f'config preset ({", ".join(available_presets())}) or a .yaml/.json file')
    p.add_argument('--data', required=True,
                   help="TFRecord glob(s), a prepared-dataset dir, or 'tfds:NAME[:SPLIT]'")
    p.add_argument('--steps', type=int, required=True, help='total optimizer steps to reach')
    p.add_argument('--model_dir', required=True, help='checkpoints, config.json, run id')
    p.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                   help='override a config field, e.g. --set model.n_harmonics=100 (repeatable)')
    p.add_argument('--strategy', default='default', choices=('default', 'mirrored',
                                                             'multi_worker'))
    p.add_argument('--tracking_uri', default=None,
                   help='MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow\'s '
                        'local store ./mlflow.db + ./mlruns, which `mlflow ui` opens)')
    p.add_argument('--experiment', default=None, help="MLflow experiment (default 'ddsp')")
    p.add_argument('--run_name', default=None, help='MLflow run name')
    p.add_argument('--no_tracking', action='store_true', help='do not log to MLflow')
    p.add_argument('--no_progress', action='store_true', help='no progress bar')
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ddsp-train``; returns the exit code (0 ok, 1 failed, 2 usage, 130 ^C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from trainer.data import DataError

    try:
        config = load_preset(args.preset).with_overrides(args.overrides)
    except ConfigError as e:
        print(f'ddsp-train: error: {e}', file=sys.stderr)
        return EXIT_USAGE

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = train(config, args.data, args.model_dir, args.steps, strategy=args.strategy,
                       tracking_uri=args.tracking_uri, experiment=args.experiment,
                       run_name=args.run_name, track=not args.no_tracking,
                       progress=not args.no_progress)
    except (ConfigError, DataError) as e:
        print(f'ddsp-train: error: {e}', file=sys.stderr)
        return EXIT_USAGE
    except TrainingDivergedError as e:
        print(f'ddsp-train: error: {e}', file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as e:
        print(f'ddsp-train: {e or "interrupted"}', file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps({k: v for k, v in result.items()}, default=_json_default))
    return EXIT_OK


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


if __name__ == '__main__':
    sys.exit(main())
