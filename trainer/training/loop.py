"""The pieces of a training run: build the model, read the data, restore and save checkpoints,
take a step, render summaries. ``ddsp-train`` (:func:`trainer.training.train.train`), sweep trials,
evaluation and tests call the pieces they need.

A model directory holds TF checkpoints (``ckpt-STEP.*``), ``config.json`` (the full, resolved
config), ``mlflow_run.json`` (the MLflow run id, so a resumed run appends to the same run),
``dataset_manifest.json`` (the manifest of the dataset it was trained on) and ``.lock`` (held
while a run uses the directory, see :mod:`trainer.model.lock`).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from trainer.model.config import Config, ConfigError
from trainer.model.model_dir import CONFIG_FILENAME

logger = logging.getLogger(__name__)

#: Checkpoint key of the model's variables by name. Keras 3 keeps layers held in Python lists
#: out of TensorFlow's object graph (so ``model`` alone does not reach the MLP stacks'
#: weights); naming every variable makes a checkpoint restorable without the optimizer.
WEIGHTS_KEY = 'weights'


def named_weights(model) -> dict:
    """The model's variables keyed by their path ('/' replaced by '.'), for checkpoints."""
    out = {}
    for variable in model.weights:
        key = variable.path.replace('/', '.')
        if key in out:
            raise ValueError(f'two model variables are named {variable.path!r}')
        out[key] = variable
    return out


class CheckpointError(RuntimeError):
    """A model directory's checkpoints are all unreadable (exit code 1); names them."""


def checkpoint_problem(prefix: str) -> str | None:
    """Why a checkpoint cannot be restored ('IndexError: Read less bytes than requested', a
    missing data file, a checksum mismatch...), or None when every tensor in it reads back
    (reads the whole checkpoint, as a restore does)."""
    import tensorflow as tf

    from ddsp_core import shards

    try:
        dtypes = tf.train.load_checkpoint(prefix).get_variable_to_dtype_map()
        names = sorted(dtypes)
        # One RestoreV2 reads every tensor (the data iterator's variant state included) and
        # checks each one's checksum.
        tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=names,
                             shape_and_slices=[''] * len(names),
                             dtypes=[dtypes[n] for n in names])
    except Exception as e:  # noqa: BLE001 - TF raises OpErrors, IndexError, ValueError...
        return f'{type(e).__name__}: {shards.tf_error_text(e)}'
    return None


def checkpoint_step(prefix: str) -> int:
    """The step in a checkpoint's name (``ckpt-750`` -> 750)."""
    return int(str(prefix).rsplit('-', 1)[-1])


def newest_readable_checkpoint(directory: str | os.PathLike) -> str | None:
    """The newest checkpoint of ``directory`` that reads back whole, or None if there is none.

    Checkpoints are taken in the order of the directory's ``checkpoint`` index (the newest
    first; one written but not yet in the index, as a kill between the two leaves it, does not
    count). Each unreadable one passed over gets one warning naming it and the one used.

    Raises:
        CheckpointError: the index lists checkpoints but none reads back.
    """
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(directory))
    if state is None or not state.model_checkpoint_path:
        return None
    candidates = [state.model_checkpoint_path]
    candidates += [p for p in reversed(state.all_model_checkpoint_paths) if p not in candidates]
    # (get_checkpoint_state has already joined the index's relative paths to ``directory``)
    skipped = []
    for prefix in candidates:
        problem = checkpoint_problem(prefix)
        if problem is None:
            for bad, why in skipped:
                logger.warning('checkpoint %s is unreadable (%s); using %s, the newest readable '
                               'checkpoint', bad, why, prefix)
            return prefix
        skipped.append((prefix, problem))
    raise CheckpointError(f'{directory}: no checkpoint reads back ('
                          + '; '.join(f'{p}: {why}' for p, why in skipped) + '); '
                          'start again with a new --model_dir')


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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
    import tensorflow as tf

    from trainer.model.autoencoder import Autoencoder
    from trainer.training import schedule as schedule_lib

    dist = dist or tf.distribute.get_strategy()
    tc = config.train
    with dist.scope():
        model = Autoencoder(config.model, config.data, compute_dtype=tc.compute_dtype)
        model(model.dummy_features(1))
        schedule = schedule_lib.from_config(tc)
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

    from trainer.model.autoencoder import NOISE_SEED_KEY

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


def check_resume_config(model_dir: Path, config: Config) -> None:
    """A checkpoint can only be resumed by a config with the same model and signal layout.

    Raises:
        ConfigError: the model directory holds a config whose model or data layout differs
            (the message lists the keys).
    """
    saved_path = Path(model_dir) / CONFIG_FILENAME
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


class Trainer:
    """One model directory's training state.

    Args:
        config: the full configuration with its data layout resolved
            (:func:`trainer.model.config.resolve_data`).
        source: the training data (:func:`trainer.training.data.open_source`).
        model_dir: checkpoints and ``config.json`` live here.
        strategy: ``'default'``, ``'mirrored'`` or ``'multi_worker'`` (TF_CONFIG), or a
            ``tf.distribute.Strategy`` made by :func:`trainer.training.strategy.make_strategy` (a
            multi-worker strategy must be made before TensorFlow runs anything).

    Raises:
        ConfigError: an unresolved data layout, or a batch size the replicas cannot share.
    """

    def __init__(self, config: Config, source, model_dir: str | os.PathLike,
                 strategy='default'):
        from trainer.training import strategy as strategy_lib

        if not config.data.resolved:
            raise ConfigError('Trainer needs a config whose data layout is resolved from the '
                              'dataset (trainer.model.config.resolve_data)')
        self.config = config
        self.source = source
        self.model_dir = Path(model_dir)
        if isinstance(strategy, str):
            self.strategy_name, self.dist = strategy, strategy_lib.make_strategy(strategy)
        else:
            self.strategy_name, self.dist = strategy_lib.strategy_name(strategy), strategy
        self.chief = strategy_lib.is_chief(self.dist)
        self.n_replicas = self.dist.num_replicas_in_sync
        self.multi_worker = strategy_lib.is_multi_worker(self.dist)
        if config.train.batch_size % self.n_replicas:
            raise ConfigError(f'train.batch_size={config.train.batch_size} must be divisible by '
                              f'the {self.n_replicas} replicas of --strategy {strategy}')
        # Non-chief workers must also save (collective ops), into a scratch dir removed at the end.
        self.ckpt_dir = (self.model_dir if self.chief else
                         self.model_dir / f'.worker_{strategy_lib.worker_index(self.dist)}')
        self.model = self.optimizer = self.schedule = None
        self.iterator = self.checkpoint = self.manager = None
        self._train_step = self._resynthesize = None

    # ---- building -----------------------------------------------------------------------------
    @property
    def distributed_input(self) -> bool:
        return self.n_replicas > 1 or self.multi_worker

    @property
    def saves_iterator(self) -> bool:
        """Whether checkpoints hold the data iterator (one device only)."""
        return self.config.train.checkpoint_data_iterator and not self.distributed_input

    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint of the chief's model directory (all workers restore it)."""
        import tensorflow as tf

        return tf.train.latest_checkpoint(str(self.model_dir)) if self.model_dir.exists() \
            else None

    def readable_checkpoint(self) -> str | None:
        """The newest checkpoint of the chief's model directory that reads back whole
        (:func:`newest_readable_checkpoint`: a newer, damaged one is passed over with a
        warning)."""
        return newest_readable_checkpoint(self.model_dir) if self.model_dir.exists() else None

    def build(self) -> Trainer:
        """Seed, create the model and optimizer, and trace the step functions."""
        import keras
        import tensorflow as tf

        from trainer.model.autoencoder import NOISE_SEED_KEY

        keras.utils.set_random_seed(self.config.train.seed)
        self.model, self.optimizer, self.schedule = build_model(self.config, self.dist)
        self._train_step = make_train_step(self.model, self.optimizer, self.dist,
                                           self.config.train)
        model = self.model

        @tf.function
        def resynthesize(features, seed):
            features = dict(features)
            features[NOISE_SEED_KEY] = seed
            return model(features, training=False)['audio_synth']

        self._resynthesize = resynthesize
        return self

    def open_data(self, resumed_step: int = 0) -> None:
        """The training iterator. Without a saved iterator, a resumed run reshuffles with a
        step-derived seed."""
        from trainer.training import data as data_lib

        tc = self.config.train
        if tc.checkpoint_data_iterator and not self.saves_iterator:
            logger.warning('train.checkpoint_data_iterator is ignored with --strategy %s '
                           '(distributed iterators cannot be checkpointed); a resumed run '
                           'reshuffles with a step-derived seed', self.strategy_name)
        seed = tc.seed if (self.saves_iterator or not resumed_step) else tc.seed + resumed_step
        dataset = data_lib.make_dataset(self.source, self.config.data, tc.batch_size, seed=seed)
        self.iterator = iter(self.dist.experimental_distribute_dataset(dataset)
                             if self.distributed_input else dataset)

    def restore(self) -> int:
        """Build (if needed), open the data and restore the latest checkpoint, if any.

        Returns:
            The step to start from (0 for a new model directory).
        """
        import tensorflow as tf

        if self.model is None:
            self.build()
        latest = self.readable_checkpoint()
        self.open_data(checkpoint_step(latest) if latest else 0)
        items = {'model': self.model, 'optimizer': self.optimizer,
                 WEIGHTS_KEY: named_weights(self.model)}
        if self.saves_iterator:
            items['data_iterator'] = self.iterator
        self.checkpoint = tf.train.Checkpoint(**items)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.ckpt_dir),
            max_to_keep=max(1, self.config.train.keep_checkpoints),
            step_counter=self.optimizer.iterations)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            logger.info('resumed from %s (step %d)', latest, self.step)
        return self.step

    # ---- state --------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """Optimizer steps taken (the global step)."""
        return int(self.optimizer.iterations.numpy())

    def weights_finite(self) -> bool:
        import tensorflow as tf

        return all(bool(tf.reduce_all(tf.math.is_finite(v)))
                   for v in self.model.trainable_variables)

    def save(self) -> str:
        """Checkpoint the current step (and write ``config.json`` on the chief)."""
        # CheckpointManager writes the checkpoint's files, then the ``checkpoint`` index
        # (atomically): a kill in between leaves the index naming the previous checkpoint.
        path = self.manager.save(checkpoint_number=self.step)
        if self.chief:
            self.config.save(self.model_dir)
        return path

    def saved_current_step(self) -> bool:
        latest = self.manager.latest_checkpoint if self.manager else None
        return bool(latest) and latest.endswith(f'-{self.step}')

    # ---- stepping -----------------------------------------------------------------------------
    def train_step(self, batch=None) -> dict[str, float]:
        """One optimizer step on ``batch`` (default: the next batch of the data).

        Returns:
            The step's metrics as floats: each loss term, ``total_loss``, ``grad_norm``.

        Raises:
            TrainingDivergedError: a metric is NaN or infinite (the weights were updated with
                it; the last checkpoint is the last good state).
        """
        import tensorflow as tf

        from trainer.training import data as data_lib

        if batch is None:
            with data_lib.reading(self.source):
                batch = next(self.iterator)
        step = self.step
        seed = tf.constant([self.config.train.seed, step], tf.int32)
        values = {k: float(v.numpy()) for k, v in self._train_step(batch, seed).items()}
        if not all(math.isfinite(v) for v in values.values()):
            bad = ', '.join(f'{k}={v}' for k, v in values.items() if not math.isfinite(v))
            good = self.manager.latest_checkpoint if self.manager else None
            raise TrainingDivergedError(
                f'loss is not finite at step {step + 1} ({bad}); stopped without saving. '
                f'Last good checkpoint: {good or "none"} in {self.model_dir}. Check the data for '
                'NaN/inf or lower train.learning_rate / train.grad_clip_norm.')
        return values

    def learning_rate(self, step: int) -> float:
        """The learning rate used by step ``step`` (1-based)."""
        return float(self.schedule(step - 1))

    def summary_example(self) -> dict:
        """The first example of the data, its window cropped at its start (a fixed example
        for the audio and spectrogram summaries)."""
        from trainer.training import data as data_lib

        with data_lib.reading(self.source):
            first = next(iter(data_lib.make_dataset(self.source, self.config.data, 1, seed=0,
                                                    shuffle=False, repeat=False,
                                                    crop_mode='start')))
        return dict(first)

    def resynthesize(self, features: dict) -> np.ndarray:
        """The model's audio for a batch of features (noise seeded by 0), float32 numpy."""
        import tensorflow as tf

        return self._resynthesize(features, tf.constant([self.config.train.seed, 0],
                                                        tf.int32)).numpy()

    def eval_loss(self, source, max_batches: int = 8) -> float:
        """Mean total loss over held-out examples (their start windows, up to ``max_batches``
        batches of ``train.batch_size``; the noise seeded by 0), without updating anything."""
        import tensorflow as tf

        from trainer.model.autoencoder import NOISE_SEED_KEY
        from trainer.training import data as data_lib

        dataset = data_lib.make_dataset(source, self.config.data, self.config.train.batch_size,
                                        seed=0, shuffle=False, repeat=False,
                                        drop_remainder=False, crop_mode='start')
        total, weight = 0.0, 0
        batches = iter(dataset.take(max_batches))
        while True:
            with data_lib.reading(source):
                batch = next(batches, None)
            if batch is None:
                break
            features = dict(batch)
            features[NOISE_SEED_KEY] = tf.constant([self.config.train.seed, 0], tf.int32)
            outputs = self.model(features, training=False)
            loss = float(tf.add_n(list(self.model.losses_dict(outputs).values())))
            n = int(batch['audio'].shape[0])
            total += loss * n
            weight += n
        if not weight:
            raise ValueError(f'{source.where}: no held-out example to evaluate')
        return total / weight
