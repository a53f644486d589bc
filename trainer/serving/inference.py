"""A trained model, loaded from its model directory (or an MLflow run), for evaluation,
transfer and export.

A model directory holds everything needed (see :mod:`trainer.training.loop`): ``config.json`` (the
resolved config, rates included), the checkpoints and ``dataset_manifest.json``. The model can be
rebuilt for windows of any whole number of frames (its weights do not depend on the window), so
a model trained on 0.5 s crops resynthesises whole 4 s records.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from ddsp_core import records
from trainer.model import model_dir as model_dir_lib
from trainer.model.config import CONFIG_FILENAME, Config, ConfigError
from trainer.model.model_dir import ModelDirError

RUNS_PREFIX = 'runs:/'


def add_model_argument(parser) -> None:
    """The commands' ``--model``: a model directory or an MLflow run's checkpoints."""
    parser.add_argument('--model', required=True,
                        help='a ddsp-train --model_dir, or runs:/RUN_ID (its checkpoints/ '
                             'artifacts)')


def _local_model_dir(model: str, tracking_uri: Optional[str]) -> Path:
    """A local directory holding the model: ``model`` itself, a model directory copied to a
    bucket (``gs://...``, any TensorFlow filesystem URL) or the model directory an MLflow run
    logged (its ``checkpoints/`` artifacts; ``runs:/RUN_ID`` or ``runs:/RUN_ID/PATH``),
    downloaded to a temp dir."""
    if '://' in str(model):
        return _download_model_dir(str(model))
    if not str(model).startswith(RUNS_PREFIX):
        path = Path(model)
        if not path.is_dir():
            raise ModelDirError(f'--model {model}: no such directory')
        return path
    import mlflow

    rest = str(model)[len(RUNS_PREFIX):].strip('/')
    run_id, _, sub = rest.partition('/')
    uri = f'{RUNS_PREFIX}{run_id}/{sub or "checkpoints"}'
    target = tempfile.mkdtemp(prefix='ddsp-model-')
    # the download is read while this process runs, then removed (not left in /tmp)
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=target,
                                                    tracking_uri=tracking_uri)
    except Exception as e:  # noqa: BLE001 - MLflow raises several kinds
        raise ModelDirError(f'--model {model}: cannot download {uri} ({e})') from e
    return Path(local)


def _download_model_dir(url: str) -> Path:
    """Copy a model directory under a TensorFlow filesystem URL (``gs://...``) to a temp dir
    removed at exit (its ``mlruns/`` fallback store and lock are not needed to load it)."""
    import tensorflow as tf

    url = url.rstrip('/')
    try:
        if not tf.io.gfile.isdir(url):
            raise ModelDirError(f'--model {url}: no such directory')
        target = Path(tempfile.mkdtemp(prefix='ddsp-model-'))
        atexit.register(shutil.rmtree, target, ignore_errors=True)
        for folder, _, files in tf.io.gfile.walk(url):
            relative = folder[len(url):].strip('/')
            if relative and not model_dir_lib.is_model_file(relative):
                continue
            (target / relative).mkdir(parents=True, exist_ok=True)
            for name in files:
                if not name.startswith('.'):
                    tf.io.gfile.copy(f'{folder.rstrip("/")}/{name}', str(target / relative / name),
                                     overwrite=True)
    except tf.errors.OpError as e:
        raise ModelDirError(f'--model {url}: cannot read it ({e.message})') from e
    return target


def _named_in_checkpoint(checkpoint: str, key: str) -> set[str]:
    """Names of the children of the checkpoint's root object ``key`` (empty if it has none):
    read from the object graph, since a variable's tensor is stored under its shortest path
    (often the optimizer's), not under every path that reaches it."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(checkpoint).get_tensor(
        '_CHECKPOINTABLE_OBJECT_GRAPH'))
    for child in graph.nodes[0].children:
        if child.local_name == key:
            return {c.local_name for c in graph.nodes[child.node_id].children}
    return set()


def restore_weights(net, checkpoint: str, config: Config, where: str) -> None:
    """Restore every variable of ``net`` from a training checkpoint.

    Checkpoints hold the variables by name (``weights``); those written before that have them
    only through the optimizer, which is then rebuilt to restore them.

    Raises:
        ModelDirError: the checkpoint lacks some of the model's variables.
    """
    import tensorflow as tf

    from trainer.training.loop import WEIGHTS_KEY, build_model, named_weights

    weights = named_weights(net)
    saved = _named_in_checkpoint(checkpoint, WEIGHTS_KEY)
    if saved:
        missing = sorted(set(weights) - saved)
        if missing:
            raise ModelDirError(f'{where}: the checkpoint {checkpoint} lacks '
                                f'{len(missing)} of the model\'s variables, e.g. {missing[0]} '
                                '(was it trained with another model config?)')
        tf.train.Checkpoint(**{WEIGHTS_KEY: weights}).restore(checkpoint).expect_partial()
        return
    # An older checkpoint: rebuild the training model and optimizer, restore them, copy over.
    trained, optimizer, _ = build_model(config)
    status = tf.train.Checkpoint(model=trained, optimizer=optimizer).restore(checkpoint)
    status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ModelDirError(f'{where}: cannot restore {checkpoint} ({e})') from None
    values = {v.path: v for v in trained.weights}
    for variable in net.weights:
        if variable.path not in values:
            raise ModelDirError(f'{where}: the checkpoint {checkpoint} has no {variable.path}')
        variable.assign(values[variable.path])


@dataclasses.dataclass
class TrainedModel:
    """A restored autoencoder.

    Attributes:
        model: the ``trainer.model.autoencoder.Autoencoder`` (variables restored).
        config: its config, with ``data.example_secs`` the window it was built for.
        step: the checkpoint's training step.
        model_dir: where it was loaded from.
        manifest: the training dataset's manifest (:class:`ddsp_core.records.Manifest`), or None.
        run_info: ``mlflow_run.json`` (run id, tracking URI), or {}.
    """

    model: object
    config: Config
    step: int
    model_dir: Path
    manifest: Optional[records.Manifest]
    run_info: dict

    @classmethod
    def load(cls, model: str | os.PathLike, example_secs: Optional[float] = None,
             tracking_uri: Optional[str] = None) -> TrainedModel:
        """Restore the latest checkpoint of a model directory or an MLflow run's model.

        Args:
            model: a model directory, or ``runs:/RUN_ID`` (its ``checkpoints/`` artifacts).
            example_secs: build the model for windows of this length (default: the training
                window); a whole number of frames.
            tracking_uri: for ``runs:/`` (default: MLflow's).

        Raises:
            ModelDirError: no config or no checkpoint there.
            ConfigError: ``example_secs`` is not a whole number of frames.
        """
        from trainer.model.autoencoder import Autoencoder

        local = _local_model_dir(str(model), tracking_uri)
        if not (local / CONFIG_FILENAME).exists():
            raise ModelDirError(f'{model}: no {CONFIG_FILENAME} (not a ddsp-train model '
                                'directory)')
        config = Config.load(local / CONFIG_FILENAME)
        if not config.data.resolved:
            raise ModelDirError(f'{model}: its {CONFIG_FILENAME} has no data layout')
        from trainer.training.loop import CheckpointError, newest_readable_checkpoint

        try:
            latest = newest_readable_checkpoint(local)
        except CheckpointError as e:
            raise ModelDirError(str(e)) from None
        if latest is None:
            raise ModelDirError(f'{model}: no checkpoint (train it first with ddsp-train)')
        if example_secs is not None:
            data = dataclasses.replace(config.data, example_secs=None, record_secs=None)
            frames = example_secs * config.data.frame_rate
            if abs(frames - round(frames)) > 1e-6 or example_secs <= 0:
                raise ConfigError(f'example_secs = {example_secs:g} is not a whole number of '
                                  f'frames at {config.data.frame_rate} frames/s')
            data = dataclasses.replace(data, record_secs=example_secs, example_secs=example_secs)
            config = dataclasses.replace(config, data=data)
        net = Autoencoder(config.model, config.data, compute_dtype=config.train.compute_dtype)
        net(net.dummy_features(1))
        restore_weights(net, latest, config, str(model))
        manifest = model_dir_lib.read_manifest(local)
        run_info = model_dir_lib.read_run_info(local)
        return cls(net, config, int(latest.rsplit('-', 1)[-1]), local, manifest, run_info)

    @property
    def sample_rate(self) -> int:
        return self.config.data.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.config.data.frame_rate

    def __call__(self, features: dict, seed: int = 0) -> dict:
        """Run the model on a batch of features (numpy or tensors: ``audio`` [batch, n_samples]
        (used by an encoder, and by power-input models such as the ``vst`` preset, which
        compute their power from it: without it, zeros, i.e. -80 dB), ``f0_hz``,
        ``loudness_db`` [batch, n_frames]); the noise is seeded by ``seed``. Returns the model's
        outputs (``audio_synth`` [batch, n_samples]...)."""
        import tensorflow as tf

        from trainer.model.autoencoder import NOISE_SEED_KEY

        batch = {k: tf.convert_to_tensor(v, tf.float32) for k, v in features.items()}
        if 'audio' not in batch:
            first = batch['f0_hz']
            batch['audio'] = tf.zeros([first.shape[0], self.config.data.n_samples])
        batch[NOISE_SEED_KEY] = tf.constant([self.config.train.seed, seed], tf.int32)
        return self.model(batch, training=False)

    def resynthesize(self, features: dict, seed: int = 0) -> np.ndarray:
        """The model's audio for a batch of features, float32 [batch, n_samples]."""
        return np.asarray(self(features, seed)['audio_synth'])
