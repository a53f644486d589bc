"""tf.data input pipelines for training: prepared-dataset TFRecords and TFDS NSynth.

A *data spec* is one of:

- a glob (or comma-separated globs) of TFRecord files: ``'out/train-*.tfrecord'``;
- a prepared-dataset directory: its ``train-*.tfrecord`` shards are used;
- ``'tfds:NAME[:SPLIT]'``, e.g. ``'tfds:nsynth/gansynth_subset.f0_and_loudness'`` (split
  ``train`` by default).

Every pipeline yields dicts of float32 tensors (per example, before batching):
``audio`` [n_samples] (amplitude in [-1, 1]), ``f0_hz`` [n_frames] (Hz), ``f0_confidence``
[n_frames] (0..1), ``loudness_db`` [n_frames] (dB, <= 0).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from trainer.config import DataConfig

AUDIO_KEY = 'audio'
FRAME_KEYS = ('f0_hz', 'f0_confidence', 'loudness_db')
FEATURE_KEYS = (AUDIO_KEY, *FRAME_KEYS)
OPTIONAL_KEYS = ('audio_16k',)
MANIFEST_FILENAME = 'manifest.json'
TFDS_PREFIX = 'tfds:'


class DataError(ValueError):
    """The data spec, files or records are invalid."""


# ---- locating files ---------------------------------------------------------------------------
def is_tfds(data: str) -> bool:
    """Whether a data spec names a TFDS dataset (``'tfds:...'``)."""
    return str(data).startswith(TFDS_PREFIX)


def resolve_files(data: str) -> list[str]:
    """Sorted TFRecord files named by a data spec (glob, comma-separated globs, or directory).

    Raises:
        DataError: nothing matches (the message names the pattern).
    """
    files: list[str] = []
    for pattern in str(data).split(','):
        pattern = pattern.strip()
        if not pattern:
            continue
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, 'train-*.tfrecord*')
        matched = sorted(tf.io.gfile.glob(pattern)) if '://' in pattern else sorted(
            glob.glob(pattern))
        if not matched:
            raise DataError(f'--data {pattern!r}: no files match this pattern')
        files.extend(matched)
    if not files:
        raise DataError(f'--data {data!r}: empty data spec')
    return sorted(set(files))


def find_manifest(data: str) -> Path | None:
    """The ``manifest.json`` of the prepared dataset holding the data files, if there is one."""
    if is_tfds(data):
        return None
    try:
        files = resolve_files(data)
    except DataError:
        return None
    for directory in sorted({os.path.dirname(os.path.abspath(f)) for f in files}):
        candidate = Path(directory) / MANIFEST_FILENAME
        if candidate.exists():
            return candidate
    return None


def dataset_fingerprint(data: str) -> str:
    """A content fingerprint for the data: the manifest's when present, else one of file names
    and sizes (prefixed ``files:``), or the TFDS name."""
    if is_tfds(data):
        return str(data)
    manifest = find_manifest(data)
    if manifest is not None:
        try:
            content = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            content = {}
        for key in ('fingerprint', 'content_fingerprint', 'dataset_fingerprint'):
            if isinstance(content, dict) and content.get(key):
                return str(content[key])
    digest = hashlib.sha256()
    for f in resolve_files(data):
        digest.update(f'{os.path.basename(f)}:{os.path.getsize(f)}\n'.encode())
    return 'files:' + digest.hexdigest()[:16]


# ---- parsing ----------------------------------------------------------------------------------
def _feature_spec(config: DataConfig) -> dict:
    spec = {AUDIO_KEY: tf.io.FixedLenFeature([config.n_samples], tf.float32)}
    for key in FRAME_KEYS:
        spec[key] = tf.io.FixedLenFeature([config.n_frames], tf.float32)
    return spec


def check_record_schema(path: str, config: DataConfig) -> None:
    """Check the first record of a TFRecord file against the expected schema and lengths.

    Raises:
        DataError: unreadable file, missing feature, wrong type or length (names file and key).
    """
    try:
        raw = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
        raise DataError(f'{path}: cannot read TFRecords ({e.message})') from e
    if raw is None:
        raise DataError(f'{path}: file holds no records')
    example = tf.train.Example()
    try:
        example.ParseFromString(raw.numpy())
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise DataError(f'{path}: first record is not a tf.train.Example ({e})') from e
    features = example.features.feature
    expected = {AUDIO_KEY: config.n_samples, **{k: config.n_frames for k in FRAME_KEYS}}
    for key, length in expected.items():
        if key not in features:
            raise DataError(f'{path}: records lack feature {key!r} (have {sorted(features)}); '
                            f'expected {list(FEATURE_KEYS)}')
        values = features[key].float_list.value
        if features[key].WhichOneof('kind') != 'float_list':
            raise DataError(f'{path}: feature {key!r} must be a float list')
        if len(values) != length:
            raise DataError(
                f'{path}: feature {key!r} has {len(values)} values, the config expects {length} '
                f'(data.sample_rate={config.sample_rate}, data.frame_rate={config.frame_rate}, '
                f'data.example_secs={config.example_secs}); set --set data.example_secs=... to '
                'match the dataset')


def parse_example(serialized: tf.Tensor, config: DataConfig) -> dict[str, tf.Tensor]:
    """Parse one serialized tf.train.Example into the feature dict (see module docstring)."""
    return tf.io.parse_single_example(serialized, _feature_spec(config))


# ---- pipelines --------------------------------------------------------------------------------
def make_dataset(data: str, config: DataConfig, batch_size: int, *, seed: int | None = 0,
                 shuffle: bool = True, repeat: bool = True,
                 drop_remainder: bool = True) -> tf.data.Dataset:
    """Batched, prefetched training dataset from a data spec.

    Shards are shuffled and interleaved (``config.cycle_length`` at a time), examples are
    shuffled in a buffer of ``config.shuffle_buffer``, then batched. With a ``seed`` the order
    is deterministic (same seed, same batches).

    Args:
        data: Data spec (see module docstring).
        config: Signal layout; records must hold ``config.n_samples`` audio samples and
            ``config.n_frames`` frames.
        batch_size: Global batch size.
        seed: Shuffle seed; None for nondeterministic order.
        shuffle: Shuffle files and examples.
        repeat: Repeat forever (training); else one pass.
        drop_remainder: Drop the last partial batch (static batch shape).

    Returns:
        Dataset of dicts: audio [batch, n_samples], f0_hz / f0_confidence / loudness_db
        [batch, n_frames], all float32.
    """
    if batch_size <= 0:
        raise DataError(f'batch_size must be positive, got {batch_size}')
    if is_tfds(data):
        ds = _tfds_examples(data, config, seed=seed, shuffle=shuffle)
    else:
        files = resolve_files(data)
        for path in files[:1]:
            check_record_schema(path, config)
        file_ds = tf.data.Dataset.from_tensor_slices(files)
        if shuffle:
            file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = file_ds.interleave(
            tf.data.TFRecordDataset, cycle_length=max(1, min(config.cycle_length, len(files))),
            block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.map(lambda s: parse_example(s, config), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
    if shuffle and config.shuffle_buffer > 1:
        ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = seed is not None
    # Under multi_worker, each worker reads its own subset of the shards when there are at least
    # as many shards as workers (FILE); otherwise every worker reads all and keeps its share.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.AUTO
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _parse_tfds_spec(data: str) -> tuple[str, str]:
    rest = data[len(TFDS_PREFIX):]
    name, _, split = rest.partition(':')
    if not name:
        raise DataError(f"--data {data!r}: expected 'tfds:NAME[:SPLIT]'")
    return name, split or 'train'


def _tfds_examples(data: str, config: DataConfig, *, seed, shuffle) -> tf.data.Dataset:
    """Unbatched examples from TFDS NSynth (f0_and_loudness config) in the common layout."""
    import tensorflow_datasets as tfds

    name, split = _parse_tfds_spec(data)
    read_config = tfds.ReadConfig(shuffle_seed=seed)
    try:
        ds = tfds.load(name, split=split, shuffle_files=shuffle, read_config=read_config)
    except Exception as e:  # noqa: BLE001 - tfds raises many kinds; re-raise with the spec
        raise DataError(f'--data {data!r}: cannot load TFDS dataset {name!r} split {split!r}: '
                        f'{e}') from e
    spec = ds.element_spec
    if not ({'audio', 'f0', 'loudness'} <= set(spec)):
        raise DataError(f'--data {data!r}: TFDS dataset lacks audio/f0/loudness features '
                        f'(has {sorted(spec)}); use a *.f0_and_loudness config')
    got = {AUDIO_KEY: spec['audio'].shape[0], 'f0_hz': spec['f0']['hz'].shape[0]}
    want = {AUDIO_KEY: config.n_samples, 'f0_hz': config.n_frames}
    if got != want:
        raise DataError(f'--data {data!r}: examples have {got} samples/frames but the config '
                        f'expects {want}; set data.example_secs/sample_rate/frame_rate to match')

    def convert(ex):
        return {
            AUDIO_KEY: tf.cast(ex['audio'], tf.float32),
            'f0_hz': tf.cast(ex['f0']['hz'], tf.float32),
            'f0_confidence': tf.cast(ex['f0']['confidence'], tf.float32),
            'loudness_db': tf.cast(ex['loudness']['db'], tf.float32),
        }

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def synthetic_batch(config: DataConfig, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of harmonic tones in the pipeline's layout (for benchmarks and model building).

    Returns:
        dict with audio [batch, n_samples] and f0_hz / f0_confidence / loudness_db
        [batch, n_frames], float32 numpy arrays.
    """
    from trainer.testing import synth_example

    rng = np.random.default_rng(seed)
    examples = [synth_example(config, f0_hz=float(rng.uniform(110.0, 880.0)),
                              amplitude=float(rng.uniform(0.1, 0.5)), seed=seed + i)
                for i in range(batch_size)]
    return {k: np.stack([e[k] for e in examples]) for k in FEATURE_KEYS}
