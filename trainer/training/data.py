"""tf.data input for training and evaluation: prepared datasets (their manifest says what they
hold), bare TFRecords, and TFDS NSynth.

A *data spec* is one of:

- a prepared-dataset directory: the shards its ``manifest.json`` lists for the split (``train``
  unless another is asked for; ``DIR:eval`` names one);
- a glob (or comma-separated globs) of TFRecord files: ``'out/train-*.tfrecord'``; the
  ``manifest.json`` beside them, when there is one, gives their layout, else it is read off
  the records (see :meth:`ddsp_core.records.Layout.from_lengths`);
- ``'tfds:NAME[:SPLIT]'``, e.g. ``'tfds:nsynth/gansynth_subset.f0_and_loudness'``.

:func:`open_source` resolves a spec into a :class:`DataSource` (files, manifest, record layout,
fingerprint) before anything is built, so that bad data is reported at once. Every pipeline
yields dicts of float32 tensors: ``audio`` [n_samples] (amplitude in [-1, 1]), ``f0_hz``
[n_frames] (Hz), ``f0_confidence`` [n_frames] (0..1), ``loudness_db`` [n_frames] (dB), where
n_samples and n_frames are the *training window*'s (``data.example_secs``): records longer than
the window are cropped at a random frame (``crop='random'``) or at their start (``'start'``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import logging
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from ddsp_core import records, shards
from trainer.model.config import DataConfig

logger = logging.getLogger(__name__)

AUDIO_KEY = records.AUDIO
FRAME_KEYS = records.FRAME_FEATURES
FEATURE_KEYS = records.REQUIRED_FEATURES
TFDS_PREFIX = 'tfds:'
#: Assumed sample rate of records that come with neither a manifest nor ``audio_16k``.
DEFAULT_SAMPLE_RATE = 16000


class DataError(ValueError):
    """The data spec, files or records are invalid; the message names the file or pattern."""


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Resolved training data.

    Attributes:
        spec: the data spec as given.
        layout: what each record holds (:class:`ddsp_core.records.Layout`).
        files: TFRecord files to read (empty for TFDS).
        manifest: the dataset's manifest, if there is one.
        split: the split read ('train', 'eval'), or None when the files do not say.
        fingerprint: the dataset's content fingerprint (the manifest's; else one of the files'
            names and sizes, prefixed ``files:``; or the TFDS name).
    """

    spec: str
    layout: records.Layout
    files: tuple[str, ...] = ()
    manifest: Optional[records.Manifest] = None
    split: Optional[str] = None
    fingerprint: str = ''

    @property
    def is_tfds(self) -> bool:
        return is_tfds(self.spec)

    @property
    def where(self) -> str:
        """How to name the data in messages: the manifest's path, else the spec."""
        return self.manifest.path if self.manifest else repr(self.spec)

    def describe(self) -> str:
        split = f' ({self.split} split)' if self.split else ''
        n = len(self.files)
        files = f', {n} file{"s" if n != 1 else ""}' if n else ''
        return f'{self.where}{split}: {self.layout.describe()}{files}'


# ---- locating files ---------------------------------------------------------------------------
def is_tfds(data: str) -> bool:
    """Whether a data spec names a TFDS dataset (``'tfds:...'``)."""
    return str(data).startswith(TFDS_PREFIX)


def _isdir(path: str) -> bool:
    return tf.io.gfile.isdir(path) if '://' in path else os.path.isdir(path)


def _glob(pattern: str) -> list[str]:
    return sorted(tf.io.gfile.glob(pattern)) if '://' in pattern else sorted(glob.glob(pattern))


def _split_dir_spec(data: str) -> tuple[str, Optional[str]]:
    """'DIR:eval' -> ('DIR', 'eval') when DIR is a directory; else (data, None)."""
    head, sep, tail = str(data).rpartition(':')
    if sep and tail in records.SPLITS and head and _isdir(head):
        return head, tail
    return str(data), None


def resolve_files(data: str) -> list[str]:
    """Sorted TFRecord files named by globs (comma-separated allowed) or a directory (its
    ``train-*.tfrecord*``).

    Raises:
        DataError: a pattern matches nothing (the message names it).
    """
    files: list[str] = []
    for pattern in str(data).split(','):
        pattern = pattern.strip()
        if not pattern:
            continue
        if _isdir(pattern):
            pattern = os.path.join(pattern, 'train-*.tfrecord*')
        matched = _glob(pattern)
        if not matched:
            raise DataError(f'--data {pattern!r}: no files match this pattern')
        files.extend(matched)
    if not files:
        raise DataError(f'--data {data!r}: empty data spec')
    return sorted(set(files))


def _manifest_near(files: list[str]) -> Optional[records.Manifest]:
    """The manifest of the dataset the files belong to (their directory's), if any.

    Raises:
        DataError: the files come from several datasets with different layouts, or a manifest
            there is invalid.
    """
    found = {}
    for directory in sorted({os.path.dirname(f) for f in files}):
        candidate = os.path.join(directory, records.MANIFEST)
        exists = tf.io.gfile.exists(candidate) if '://' in candidate else os.path.exists(
            candidate)
        if exists:
            try:
                found[directory] = records.read_manifest(candidate)
            except records.LayoutError as e:
                raise DataError(str(e)) from None
    if not found:
        return None
    manifests = list(found.values())
    layouts = {m.layout for m in manifests}
    if len(layouts) > 1:
        detail = '; '.join(f'{m.path}: {m.layout.describe()}' for m in manifests)
        raise DataError(f'--data mixes datasets with different layouts ({detail})')
    if len(manifests) > 1:
        logger.warning('--data spans %d prepared datasets; their first manifest (%s) describes '
                       'them', len(manifests), manifests[0].path)
    return manifests[0]


def _check_shards(manifest: records.Manifest, files: list[str]) -> None:
    """Every shard exists with the size the manifest recorded (before anything is read)."""
    try:
        shards.check_shard_sizes(manifest, files)
    except shards.ShardError as e:
        raise DataError(str(e)) from None


def damaged_data_error(source: DataSource, error: Exception) -> Optional[DataError]:
    """Explain a read error of ``source``'s records: the shard and byte offset of the first
    damaged record (each shard is read again, record by record, to find it), and whether the
    shard's SHA-256 still matches its manifest. None when no shard holds a damaged record (the
    error was something else)."""
    for path in source.files:
        found = shards.find_damaged_record(path, source.layout)
        if found is None:
            continue
        offset, reason = found
        text = f'{path}: damaged record at byte {offset} ({reason})'
        entry = source.manifest.shard_file(path) if source.manifest else None
        if entry and entry.get('sha256'):
            same = shards.file_entry(path)['sha256'] == entry['sha256']
            text += ('; its SHA-256 matches the manifest (it was damaged when written: re-run '
                     'ddsp-prepare)' if same else
                     '; its SHA-256 differs from the manifest (it changed after it was written: '
                     'copy the dataset again or re-run ddsp-prepare)')
        if source.manifest is not None:
            text += f'. ddsp-prepare --verify {source.manifest.directory} checks every shard'
        return DataError(text)
    if isinstance(error, tf.errors.DataLossError):
        return DataError(f'{source.where}: a record could not be read '
                         f'({shards.tf_error_text(error)})')
    return None


@contextlib.contextmanager
def reading(source: DataSource):
    """Around code that reads ``source``'s records: a damaged record (TensorFlow's
    ``DataLossError``, or a record that does not parse) becomes a :class:`DataError` naming the
    shard and offset (:func:`damaged_data_error`), not a bare TensorFlow traceback."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        about_records = isinstance(e, tf.errors.DataLossError) or any(
            word in str(e) for word in ('parse', 'Example', 'Feature'))
        explained = damaged_data_error(source, e) if about_records and not source.is_tfds \
            else None
        if explained is None:
            raise
        raise explained from None


def _first_record(files: list[str]) -> tuple[Optional[str], Optional[bytes]]:
    """The first record of the first non-empty file (file, bytes), or (None, None)."""
    for path in files:
        try:
            raw = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        except tf.errors.OpError as e:
            raise DataError(f'{path}: cannot read TFRecords ({shards.tf_error_text(e)})'
                            ) from None
        if raw is not None:
            return path, raw.numpy()
    return None, None


def _record_lengths(path: str, raw: bytes) -> dict[str, int]:
    try:
        return {k: int(v.size) for k, v in records.parse_example(raw, path).items()}
    except records.LayoutError as e:
        raise DataError(f'{e} (first record)') from None


def _files_fingerprint(files: list[str]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f'{os.path.basename(f)}:{tf.io.gfile.stat(f).length}\n'.encode())
    return 'files:' + digest.hexdigest()[:16]


def _empty_split_error(source_desc: str, manifest: Optional[records.Manifest],
                       split: Optional[str], n_files: int) -> DataError:
    if manifest is not None and split is not None:
        return DataError(f'the {split} split of {manifest.path} is empty (0 examples; '
                         f'{records.summary_of_split(manifest, split)}): see its '
                         f'{records.LEDGER} for what happened to each input file')
    return DataError(f'--data {source_desc}: all {n_files} file(s) are empty (0 records)')


def open_source(data: str, split: str = 'train', sample_rate: Optional[int] = None
                ) -> DataSource:
    """Resolve a data spec (see the module docstring) and check its first record.

    Args:
        data: the data spec.
        split: the split to read when ``data`` is a prepared-dataset directory.
        sample_rate: the sample rate of records that come without a manifest or
            ``audio_16k`` (default 16000, with a warning).

    Raises:
        DataError: nothing matches, an empty split, unreadable files, records that break the
            layout; the message names the file or pattern.
    """
    if is_tfds(data):
        return _tfds_source(data)
    path, dir_split = _split_dir_spec(data)
    if _isdir(path):
        split = dir_split or split
        manifest_path = os.path.join(path, records.MANIFEST)
        has_manifest = tf.io.gfile.exists(manifest_path)
        if has_manifest:
            try:
                manifest = records.read_manifest(manifest_path)
            except records.LayoutError as e:
                raise DataError(str(e)) from None
            files = manifest.shards(split)
            _check_shards(manifest, files)
            if not files:
                files = _glob(os.path.join(path, f'{split}-*.tfrecord*'))
            if manifest.split_examples(split) == 0 or not files:
                raise _empty_split_error(repr(data), manifest, split, len(files))
        else:
            files = _glob(os.path.join(path, f'{split}-*.tfrecord*'))
            if not files:
                raise DataError(f'--data {path!r}: a directory with neither a {records.MANIFEST} '
                                f'nor {split}-*.tfrecord files')
            manifest = None
        chosen_split = split
    else:
        files = resolve_files(path)
        manifest = _manifest_near(files)
        if manifest is not None:
            _check_shards(manifest, [f for f in files if manifest.shard_file(f) is not None])
        splits = {records.split_of_shard(f) for f in files}
        chosen_split = splits.pop() if len(splits) == 1 else None
    first_file, raw = _first_record(files)
    if raw is None:
        raise _empty_split_error(repr(data), manifest, chosen_split, len(files))
    lengths = _record_lengths(first_file, raw)
    try:
        if manifest is not None:
            layout = manifest.layout
        else:
            has_16k = records.AUDIO_16K in lengths
            if sample_rate is None and not has_16k:
                logger.warning('%s has no %s and its records no audio_16k: assuming %d Hz '
                               '(set data.sample_rate if that is wrong)', first_file,
                               records.MANIFEST, DEFAULT_SAMPLE_RATE)
            layout = records.Layout.from_lengths(
                lengths, sample_rate if (sample_rate or has_16k) else DEFAULT_SAMPLE_RATE,
                first_file)
        records.check_lengths(lengths, layout, first_file)
    except records.LayoutError as e:
        raise DataError(str(e)) from None
    fingerprint = manifest.fingerprint if manifest else _files_fingerprint(files)
    return DataSource(str(data), layout, tuple(files), manifest, chosen_split, fingerprint)


# ---- parsing and cropping ---------------------------------------------------------------------
def parse_example(serialized: tf.Tensor, layout: records.Layout) -> dict[str, tf.Tensor]:
    """Parse one serialized tf.train.Example of the layout into its required features."""
    return tf.io.parse_single_example(serialized, records.tf_feature_spec(layout))


def crop(example: dict, offset: tf.Tensor, n_frames: int, hop: int) -> dict:
    """Frames ``[offset, offset + n_frames)`` of an example and the audio under them."""
    out = {AUDIO_KEY: example[AUDIO_KEY][offset * hop:(offset + n_frames) * hop]}
    for key in FRAME_KEYS:
        out[key] = example[key][offset:offset + n_frames]
    return {k: tf.ensure_shape(v, [n_frames * hop if k == AUDIO_KEY else n_frames])
            for k, v in out.items()}


def _cropper(layout: records.Layout, config: DataConfig, mode: str, seed: Optional[int]):
    span = layout.n_frames - config.n_frames  # last valid offset
    hop = layout.hop_samples

    def at_start(example):
        return crop(example, tf.constant(0), config.n_frames, hop)

    def at_random(index, example):
        if seed is None:
            offset = tf.random.uniform([], 0, span + 1, tf.int32)
        else:
            offset = tf.random.stateless_uniform(
                [], tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)]), 0,
                span + 1, tf.int32)
        return crop(example, offset, config.n_frames, hop)

    return at_start if mode == 'start' else at_random


def make_dataset(source: DataSource | str, config: DataConfig, batch_size: int, *,
                 seed: int | None = 0, shuffle: bool = True, repeat: bool = True,
                 drop_remainder: bool = True, crop_mode: str = 'random') -> tf.data.Dataset:
    """Batched, prefetched dataset of training windows.

    Shards are shuffled and interleaved (``config.cycle_length`` at a time), records are
    shuffled in a buffer of ``config.shuffle_buffer``, cropped to the training window when the
    records are longer (``crop_mode``: ``'random'``, a frame-aligned offset drawn per record
    from ``seed`` and the record's position in the stream; ``'start'``), then batched. With a
    ``seed`` the order and the crops are deterministic.

    Args:
        source: a :class:`DataSource` (or a data spec, opened with :func:`open_source`).
        config: the resolved data config (``trainer.model.config.resolve_data``).
        batch_size: global batch size.
        seed: shuffle and crop seed; None for nondeterministic order.
        shuffle: shuffle files and records.
        repeat: repeat forever (training); else one pass.
        drop_remainder: drop the last partial batch (static batch shape).
        crop_mode: ``'random'`` or ``'start'``.

    Returns:
        Dataset of dicts: audio [batch, n_samples], f0_hz / f0_confidence / loudness_db
        [batch, n_frames], all float32.
    """
    if batch_size <= 0:
        raise DataError(f'batch_size must be positive, got {batch_size}')
    if crop_mode not in ('random', 'start'):
        raise ValueError(f"crop_mode must be 'random' or 'start', got {crop_mode!r}")
    if isinstance(source, str):
        source = open_source(source)
    layout = source.layout
    if source.is_tfds:
        ds = _tfds_examples(source.spec, seed=seed, shuffle=shuffle)
    else:
        files = list(source.files)
        file_ds = tf.data.Dataset.from_tensor_slices(files)
        if shuffle:
            file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = file_ds.interleave(
            tf.data.TFRecordDataset, cycle_length=max(1, min(config.cycle_length, len(files))),
            block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.map(lambda s: parse_example(s, layout), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
    if shuffle and config.shuffle_buffer > 1:
        ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if config.n_frames < layout.n_frames:
        cropper = _cropper(layout, config, crop_mode, seed)
        if crop_mode == 'random':
            ds = ds.enumerate().map(cropper, num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=True)
        else:
            ds = ds.map(cropper, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = seed is not None
    # Under multi_worker, each worker reads its own subset of the shards when there are at least
    # as many shards as workers (FILE); otherwise every worker reads all and keeps its share.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.AUTO
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


# ---- TFDS -------------------------------------------------------------------------------------
def _parse_tfds_spec(data: str) -> tuple[str, str]:
    rest = data[len(TFDS_PREFIX):]
    name, _, split = rest.partition(':')
    if not name:
        raise DataError(f"--data {data!r}: expected 'tfds:NAME[:SPLIT]'")
    return name, split or 'train'


def _tfds_load(data: str, **kwargs):
    import tensorflow_datasets as tfds

    name, split = _parse_tfds_spec(data)
    try:
        return tfds.load(name, split=split, with_info=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - tfds raises many kinds; re-raise with the spec
        raise DataError(f'--data {data!r}: cannot load TFDS dataset {name!r} split {split!r}: '
                        f'{e}') from e


def _tfds_source(data: str) -> DataSource:
    ds, info = _tfds_load(data, shuffle_files=False)
    spec = ds.element_spec
    if not ({'audio', 'f0', 'loudness'} <= set(spec)):
        raise DataError(f'--data {data!r}: TFDS dataset lacks audio/f0/loudness features '
                        f'(has {sorted(spec)}); use a *.f0_and_loudness config')
    audio_feature = info.features['audio'] if 'audio' in info.features else None
    sample_rate = int(getattr(audio_feature, 'sample_rate', None) or DEFAULT_SAMPLE_RATE)
    lengths = {AUDIO_KEY: int(spec['audio'].shape[0]), 'f0_hz': int(spec['f0']['hz'].shape[0]),
               'f0_confidence': int(spec['f0']['confidence'].shape[0]),
               'loudness_db': int(spec['loudness']['db'].shape[0])}
    try:
        layout = records.Layout.from_lengths(lengths, sample_rate, data)
    except records.LayoutError as e:
        raise DataError(str(e)) from None
    return DataSource(data, layout, (), None, _parse_tfds_spec(data)[1], data)


def _tfds_examples(data: str, *, seed, shuffle) -> tf.data.Dataset:
    """Unbatched examples from TFDS NSynth (f0_and_loudness config) in the common layout."""
    import tensorflow_datasets as tfds

    ds, _info = _tfds_load(data, shuffle_files=shuffle,
                           read_config=tfds.ReadConfig(shuffle_seed=seed))

    def convert(ex):
        return {
            AUDIO_KEY: tf.cast(ex['audio'], tf.float32),
            'f0_hz': tf.cast(ex['f0']['hz'], tf.float32),
            'f0_confidence': tf.cast(ex['f0']['confidence'], tf.float32),
            'loudness_db': tf.cast(ex['loudness']['db'], tf.float32),
        }

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def synthetic_batch(config: DataConfig, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of harmonic tones of the training window's layout (benchmarks, model building).

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
