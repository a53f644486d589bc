"""tf.distribute strategies by name: ``default``, ``mirrored``, ``multi_worker``."""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ('default', 'mirrored', 'multi_worker')


def make_strategy(name: str = 'default') -> tf.distribute.Strategy:
    """Create the named strategy.

    - ``default``: no distribution (one device).
    - ``mirrored``: synchronous data parallelism over the local GPUs, or, with no GPU, over all
      logical CPU devices (configure several with ``tf.config.set_logical_device_configuration``).
    - ``multi_worker``: MultiWorkerMirroredStrategy; the cluster comes from ``TF_CONFIG``.

    Raises:
        ValueError: unknown name, or ``multi_worker`` without a usable ``TF_CONFIG``.
    """
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'mirrored':
        gpus = tf.config.list_logical_devices('GPU')
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices('CPU')]
        return tf.distribute.MirroredStrategy(
            devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == 'multi_worker':
        tf_config = os.environ.get('TF_CONFIG')
        if not tf_config:
            raise ValueError("--strategy multi_worker needs the TF_CONFIG environment variable "
                             "(cluster spec and this worker's task), see "
                             "https://www.tensorflow.org/guide/distributed_training")
        try:
            parsed = json.loads(tf_config)
            parsed['cluster']['worker']  # noqa: B018 - validate presence
            parsed['task']['index']  # noqa: B018
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f'TF_CONFIG is not a valid cluster spec ({e!r}): {tf_config}') from e
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise ValueError(f'--strategy {name!r}: expected one of {", ".join(STRATEGIES)}')


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The name :func:`make_strategy` knows a strategy by."""
    if is_multi_worker(strategy):
        return 'multi_worker'
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return 'mirrored'
    return 'default'


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints and logs (always true off multi-worker)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, 'chief') or (task_type == 'worker' and task_id == 0
                                           and 'chief' not in resolver.cluster_spec().as_dict())


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This worker's index (0 off multi-worker)."""
    if not is_multi_worker(strategy):
        return 0
    return int(strategy.cluster_resolver.task_id or 0)
