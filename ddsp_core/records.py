"""The prepared-dataset contract: record layout, ``tf.train.Example`` (de)serialisation and the
dataset's ``manifest.json``.

One module owns what a prepared dataset looks like, so that the code that writes datasets
(``pipelines``, ``trainer.testing``) and the code that reads them (the trainer, evaluation,
transfer) cannot drift apart. It needs numpy, and TensorFlow only for :func:`tf_feature_spec`
and reading the manifest through ``tf.io.gfile`` (local paths and ``gs://``). Checking the shards
against the manifest is :mod:`ddsp_core.shards`.

A dataset directory holds::

    train-00000-of-0000N.tfrecord ...   one tf.train.Example per example window
    eval-00000-of-0000M.tfrecord ...
    manifest.json                       the layout, options, counts, statistics, fingerprint
    files.jsonl                         the ledger: one line per input the patterns matched
    dead_letters.jsonl                  one line per rejected input (or failed part of one)

Every example holds float-list features (the reference library's names and layout):

=================  ==============================  ================================
feature            length                          unit
=================  ==============================  ================================
``audio``          ``example_secs * sample_rate``  amplitude in [-1, 1]
``audio_16k``      ``example_secs * 16000``        amplitude (optional, see below)
``f0_hz``          ``example_secs * frame_rate``   Hz (0 where no pitch was found)
``f0_confidence``  ``example_secs * frame_rate``   0..1
``loudness_db``    ``example_secs * frame_rate``   dB, A-weighted, >= -80
=================  ==============================  ================================

Frame ``i`` is centred on sample ``i * hop`` of ``audio``, where the hop rule is that a frame
holds a whole number of samples: ``hop = sample_rate / frame_rate`` must be an integer, and so
must ``16000 / frame_rate`` (CREPE's hop). ``audio_16k`` is the same audio at CREPE's 16 kHz;
it is written when ``sample_rate != 16000`` (CREPE needs it) or when the reference library's
``TFRecordProvider``, which requires it at every rate, must read the dataset
(``ddsp-prepare --reference_layout``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import posixpath
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from ddsp_core.f0 import CREPE_SAMPLE_RATE

SCHEMA_VERSION = 2

# How the features are computed (ddsp-prepare writes them so; evaluation and transfer compute
# them the same way for new audio).
#: Loudness frames: 32 ms windows (512 samples at 16 kHz), A-weighted, centred on the frames.
LOUDNESS_WINDOW_SECS = 0.032
#: CREPE's Viterbi decoding runs per chunk with this much context on either side.
VITERBI_CONTEXT_SECS = 0.25
#: A frame is voiced when its f0 confidence is at least this (statistics, evaluation, transfer).
VOICED_CONFIDENCE = 0.5


def loudness_n_fft(sample_rate: int | float) -> int:
    """FFT size of the loudness frames at ``sample_rate``: :data:`LOUDNESS_WINDOW_SECS`."""
    return int(round(LOUDNESS_WINDOW_SECS * sample_rate))
#: Schema versions this code reads (1: before the ledger and the record-content fingerprint).
READABLE_SCHEMA_VERSIONS = (1, 2)

AUDIO = 'audio'
AUDIO_16K = 'audio_16k'
F0_HZ = 'f0_hz'
F0_CONFIDENCE = 'f0_confidence'
LOUDNESS_DB = 'loudness_db'
FRAME_FEATURES = (F0_HZ, F0_CONFIDENCE, LOUDNESS_DB)
#: Features every record has; ``audio_16k`` is optional.
REQUIRED_FEATURES = (AUDIO, *FRAME_FEATURES)

MANIFEST = 'manifest.json'
LEDGER = 'files.jsonl'
DEAD_LETTERS = 'dead_letters.jsonl'
SPLITS = ('train', 'eval')
SHARD_SUFFIX = '.tfrecord'
#: Key, in each split of the manifest, of its shards' sizes and digests:
#: ``{name: {'bytes': N, 'sha256': HEX}}`` (manifests written before it lack it).
SHARD_FILES = 'shard_files'


class LayoutError(ValueError):
    """A layout, record or manifest that breaks the contract; the message names the source."""


# ---- the hop rule -------------------------------------------------------------------------------
def samples_per_frame(sample_rate: int, frame_rate: int, what: str = 'sample_rate') -> int:
    """The hop in samples: ``sample_rate / frame_rate``, which must be a whole number.

    Raises:
        LayoutError: the frame rate does not divide the sample rate (names ``what``).
    """
    if sample_rate <= 0 or frame_rate <= 0:
        raise LayoutError(f'sample rate {sample_rate} and frame rate {frame_rate} must be > 0')
    if sample_rate % frame_rate:
        raise LayoutError(f'frame rate {frame_rate} does not divide the {what} {sample_rate}: '
                          'a frame must hold a whole number of samples')
    return sample_rate // frame_rate


def whole_frames(secs: float, frame_rate: int, what: str = 'example_secs') -> int:
    """``secs * frame_rate`` as an integer; raises :class:`LayoutError` naming ``what`` if the
    duration is not a whole number of frames (to 1e-6)."""
    frames = secs * frame_rate
    if secs <= 0 or abs(frames - round(frames)) > 1e-6:
        raise LayoutError(f'{what} = {secs:g} s is not a positive whole number of frames at '
                          f'{frame_rate} frames per second')
    return int(round(frames))


@dataclasses.dataclass(frozen=True)
class Layout:
    """What one record of a dataset holds.

    Attributes:
        sample_rate: rate of ``audio`` (Hz).
        frame_rate: frames per second of ``f0_hz``, ``f0_confidence``, ``loudness_db``.
        example_secs: length of one example (s).
        audio_16k: whether records hold ``audio_16k``.
    """

    sample_rate: int
    frame_rate: int
    example_secs: float
    audio_16k: bool = False

    def __post_init__(self):
        samples_per_frame(self.sample_rate, self.frame_rate)
        if self.audio_16k:
            samples_per_frame(CREPE_SAMPLE_RATE, self.frame_rate, 'CREPE sample rate')
        whole_frames(self.example_secs, self.frame_rate)

    @property
    def hop_samples(self) -> int:
        """Samples of ``audio`` per frame."""
        return self.sample_rate // self.frame_rate

    @property
    def n_frames(self) -> int:
        return whole_frames(self.example_secs, self.frame_rate)

    @property
    def n_samples(self) -> int:
        return self.n_frames * self.hop_samples

    @property
    def n_samples_16k(self) -> int:
        return self.n_frames * (CREPE_SAMPLE_RATE // self.frame_rate)

    @property
    def features(self) -> tuple[str, ...]:
        """Feature names in record order."""
        return (AUDIO, AUDIO_16K, *FRAME_FEATURES) if self.audio_16k else REQUIRED_FEATURES

    def feature_lengths(self) -> dict[str, int]:
        """Feature name -> number of floats in each record."""
        out = {AUDIO: self.n_samples}
        if self.audio_16k:
            out[AUDIO_16K] = self.n_samples_16k
        out.update({k: self.n_frames for k in FRAME_FEATURES})
        return out

    def describe(self) -> str:
        extra = ', with audio_16k' if self.audio_16k else ''
        return (f'{self.example_secs:g} s examples at {self.sample_rate} Hz, '
                f'{self.frame_rate} frames/s{extra}')

    def to_dict(self) -> dict[str, Any]:
        return {'sample_rate': self.sample_rate, 'frame_rate': self.frame_rate,
                'example_secs': self.example_secs, 'audio_16k': self.audio_16k}

    @classmethod
    def from_lengths(cls, lengths: Mapping[str, int], sample_rate: Optional[int] = None,
                     source: str = 'records') -> Layout:
        """Infer the layout of records that come without a manifest.

        The sample rate follows from ``audio_16k`` when records hold it (as the reference's
        do); otherwise it must be given (``sample_rate``). The frame rate and length follow.

        Raises:
            LayoutError: missing features or inconsistent lengths (names ``source``).
        """
        missing = [k for k in REQUIRED_FEATURES if k not in lengths]
        if missing:
            raise LayoutError(f'{source}: records lack feature(s) {", ".join(missing)} '
                              f'(have {", ".join(sorted(lengths))})')
        n_audio, n_frames = lengths[AUDIO], lengths[F0_HZ]
        for key in FRAME_FEATURES:
            if lengths[key] != n_frames:
                raise LayoutError(f'{source}: feature {key!r} has {lengths[key]} values but '
                                  f'{F0_HZ!r} has {n_frames}')
        if n_frames <= 0 or n_audio <= 0 or n_audio % n_frames:
            raise LayoutError(f'{source}: {n_audio} audio samples are not a whole number of '
                              f'samples for each of the {n_frames} frames')
        if AUDIO_16K in lengths:
            n16 = lengths[AUDIO_16K]
            if n16 <= 0 or (n_audio * CREPE_SAMPLE_RATE) % n16:
                raise LayoutError(f'{source}: audio ({n_audio}) and audio_16k ({n16}) lengths '
                                  'give no whole sample rate')
            inferred = n_audio * CREPE_SAMPLE_RATE // n16
            if sample_rate is not None and sample_rate != inferred:
                raise LayoutError(f'{source}: records are at {inferred} Hz (audio has {n_audio} '
                                  f'samples, audio_16k {n16}), not {sample_rate} Hz')
            sample_rate = inferred
        if sample_rate is None:
            raise LayoutError(f'{source}: without a manifest or audio_16k the sample rate of '
                              'the records is unknown; give it')
        secs = n_audio / sample_rate
        frame_rate = n_frames / secs
        if abs(frame_rate - round(frame_rate)) > 1e-6:
            raise LayoutError(f'{source}: {n_frames} frames in {secs:g} s is not a whole frame '
                              'rate')
        try:
            return cls(int(sample_rate), int(round(frame_rate)), secs, AUDIO_16K in lengths)
        except LayoutError as e:
            raise LayoutError(f'{source}: {e}') from None


# ---- records ------------------------------------------------------------------------------------
def serialize_example(example: Mapping[str, np.ndarray]) -> bytes:
    """A ``tf.train.Example`` of float lists, serialised deterministically: features sorted by
    name (protobuf's deterministic map order), so equal inputs give equal bytes."""
    from tensorflow.core.example import example_pb2, feature_pb2

    features = feature_pb2.Features()
    for key in sorted(example):
        features.feature[key].float_list.value.extend(
            np.ravel(np.asarray(example[key], np.float32)).tolist())
    return example_pb2.Example(features=features).SerializeToString(deterministic=True)


def parse_example(serialized: bytes, source: str = 'record') -> dict[str, np.ndarray]:
    """Inverse of :func:`serialize_example`: feature name -> float32 array.

    Raises:
        LayoutError: the bytes are not a ``tf.train.Example`` of float lists.
    """
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example()
    try:
        ex.ParseFromString(bytes(serialized))
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise LayoutError(f'{source}: not a tf.train.Example ({e})') from None
    out = {}
    for key, feature in ex.features.feature.items():
        if feature.WhichOneof('kind') != 'float_list':
            raise LayoutError(f'{source}: feature {key!r} is a {feature.WhichOneof("kind")}, '
                              'expected a float list')
        out[key] = np.asarray(feature.float_list.value, np.float32)
    return out


def check_lengths(lengths: Mapping[str, int], layout: Layout, source: str) -> None:
    """Check a record's feature lengths against a layout.

    Raises:
        LayoutError: a feature is missing or has another length; the message names the source,
            the feature and both lengths.
    """
    for key, want in layout.feature_lengths().items():
        if key not in lengths:
            raise LayoutError(f'{source}: records lack feature {key!r} (have '
                              f'{", ".join(sorted(lengths))}); expected {layout.describe()}')
        if lengths[key] != want:
            raise LayoutError(f'{source}: feature {key!r} has {lengths[key]} values where '
                              f'{layout.describe()} have {want}')


def tf_feature_spec(layout: Layout, with_audio_16k: bool = False) -> dict:
    """``tf.io.parse_single_example`` spec of the layout's required features (and
    ``audio_16k`` if asked for and present). Extra features in records are ignored."""
    import tensorflow as tf

    lengths = layout.feature_lengths()
    keys = [k for k in layout.features if k != AUDIO_16K or with_audio_16k]
    return {k: tf.io.FixedLenFeature([lengths[k]], tf.float32) for k in keys}


def record_digest(serialized: bytes) -> int:
    """SHA-256 of one serialised record, as an integer (summed mod 2**256 per split, so a split's
    digest is independent of shard count and order)."""
    return int.from_bytes(hashlib.sha256(serialized).digest(), 'big')


def combine_digests(digests: Iterable[int]) -> int:
    return sum(digests) % (1 << 256)


def fingerprint(layout: Layout, split_digests: Mapping[str, int]) -> str:
    """The dataset's fingerprint: a digest of its layout and of every record's bytes per split.

    Two datasets have the same fingerprint exactly when they hold the same records in the same
    splits (whatever the sharding, the order of records, or the options that led there).
    """
    h = hashlib.sha256(json.dumps(layout.to_dict(), sort_keys=True).encode())
    for split in sorted(split_digests):
        h.update(f'\n{split}:{split_digests[split] % (1 << 256):064x}'.encode())
    return h.hexdigest()[:16]


def shard_name(split: str, index: int, n_shards: int) -> str:
    """``train-00000-of-00004.tfrecord``: Beam's and TFDS's naming."""
    return f'{split}-{index:05d}-of-{n_shards:05d}{SHARD_SUFFIX}'


def split_of_shard(path: str) -> Optional[str]:
    """'train' / 'eval' from a shard's file name, or None for other names."""
    name = posixpath.basename(str(path).replace('\\', '/'))
    for split in SPLITS:
        if name.startswith(split + '-'):
            return split
    return None


# ---- manifest -----------------------------------------------------------------------------------
def _join(directory: str, name: str) -> str:
    return directory.rstrip('/') + '/' + name if '://' in directory else \
        posixpath.join(directory, name) if directory else name


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A dataset's ``manifest.json``, validated.

    Attributes:
        data: the parsed JSON.
        path: where it was read from.
    """

    data: dict
    path: str

    @property
    def directory(self) -> str:
        return posixpath.dirname(self.path.replace('\\', '/'))

    @property
    def layout(self) -> Layout:
        d = self.data
        features = d.get('features', {})
        return Layout(int(d['sample_rate']), int(d['frame_rate']), float(d['example_secs']),
                      AUDIO_16K in features)

    @property
    def fingerprint(self) -> str:
        return str(self.data['fingerprint'])

    @property
    def schema_version(self) -> int:
        return int(self.data['schema_version'])

    def split_examples(self, split: str) -> Optional[int]:
        """Examples in a split, or None if the manifest does not say."""
        entry = self.data.get('splits', {}).get(split)
        return int(entry['examples']) if isinstance(entry, dict) and 'examples' in entry \
            else None

    def shards(self, split: str) -> list[str]:
        """Paths of a split's shards (as the manifest lists them, joined to its directory)."""
        entry = self.data.get('splits', {}).get(split) or {}
        names = entry.get('shards') if isinstance(entry, dict) else None
        return [_join(self.directory, n) for n in names] if isinstance(names, list) else []

    def shard_file(self, name: str) -> Optional[dict]:
        """The recorded size and digest of a shard (``{'bytes', 'sha256'}``) by file name, or
        None when the manifest does not record it (written before it did)."""
        name = posixpath.basename(str(name).replace('\\', '/'))
        for entry in (self.data.get('splits') or {}).values():
            files = entry.get(SHARD_FILES) if isinstance(entry, dict) else None
            if isinstance(files, dict) and isinstance(files.get(name), dict):
                return files[name]
        return None

    def option(self, key: str, default=None):
        """An option the dataset was prepared with (``options.<key>`` of ``ddsp-prepare``), or
        ``default`` when the manifest does not record it."""
        value = self.statistic('options', key)
        return default if value is None else value

    def statistic(self, *keys, default=None):
        """A nested value of the manifest (``statistic('splits', 'train', 'loudness_db',
        'mean')``), or ``default``."""
        node: Any = self.data
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node


def validate_manifest(data: Any, source: str) -> dict:
    """Check that ``data`` (parsed JSON) is a manifest this code can read.

    Raises:
        LayoutError: wrong type, unknown schema version, missing or invalid layout keys.
    """
    if not isinstance(data, dict):
        raise LayoutError(f'{source}: expected a JSON object, got {type(data).__name__}')
    version = data.get('schema_version')
    if version not in READABLE_SCHEMA_VERSIONS:
        raise LayoutError(f'{source}: schema_version {version!r} is not one this code reads '
                          f'({", ".join(map(str, READABLE_SCHEMA_VERSIONS))})')
    missing = [k for k in ('sample_rate', 'frame_rate', 'example_secs', 'fingerprint')
               if k not in data]
    if missing:
        raise LayoutError(f'{source}: missing {", ".join(missing)}')
    try:
        layout = Layout(int(data['sample_rate']), int(data['frame_rate']),
                        float(data['example_secs']),
                        AUDIO_16K in (data.get('features') or {}))
    except (TypeError, ValueError) as e:
        raise LayoutError(f'{source}: invalid layout ({e})') from None
    features = data.get('features')
    if features is not None:
        if not isinstance(features, dict):
            raise LayoutError(f'{source}: "features" must map names to shapes')
        want = layout.feature_lengths()
        for key, length in want.items():
            shape = features.get(key)
            if shape != [length]:
                raise LayoutError(f'{source}: feature {key!r} is listed as {shape}, but '
                                  f'{layout.describe()} have [{length}]')
    splits = data.get('splits', {})
    if not isinstance(splits, dict):
        raise LayoutError(f'{source}: "splits" must be an object')
    return data


def read_manifest(path: str) -> Manifest:
    """Read and validate a ``manifest.json`` (a file path, or a dataset directory; local or any
    ``tf.io.gfile`` path such as ``gs://``).

    Raises:
        LayoutError: missing, unreadable, not JSON, or not a valid manifest (names the path).
    """
    import tensorflow as tf

    path = str(path)
    if not path.endswith('.json'):
        path = _join(path, MANIFEST)
    try:
        with tf.io.gfile.GFile(path, 'r') as f:
            text = f.read()
    except tf.errors.NotFoundError:
        raise LayoutError(f'{path}: no such file') from None
    except tf.errors.OpError as e:
        raise LayoutError(f'{path}: unreadable ({e.message})') from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LayoutError(f'{path}: not valid JSON ({e})') from None
    return Manifest(validate_manifest(data, path), path)


def layout_fields(layout: Layout) -> dict[str, Any]:
    """The manifest keys that describe the layout (what :func:`read_manifest` reads back)."""
    return {'schema_version': SCHEMA_VERSION, 'sample_rate': layout.sample_rate,
            'frame_rate': layout.frame_rate, 'example_secs': layout.example_secs,
            'features': {k: [n] for k, n in layout.feature_lengths().items()}}


def summary_of_split(manifest: Manifest, split: str) -> str:
    """One line about a split for messages: '3 examples in 1 shard' or 'empty (0 examples)'."""
    n = manifest.split_examples(split)
    if n is None:
        return 'size unknown'
    if n == 0:
        return 'empty (0 examples)'
    shards = len(manifest.shards(split))
    return f'{n} examples in {shards} shard{"s" if shards != 1 else ""}'


def hours(n_examples: int, layout: Layout) -> float:
    return n_examples * layout.example_secs / 3600.0


def auto_shard_count(n_examples: int, layout: Layout,
                     target_bytes: int = 128 * 1024 * 1024) -> int:
    """Shards for a split of ``n_examples``: about ``target_bytes`` of records each, at least 1
    (an empty split gets one empty shard, so its pattern still matches a file)."""
    per_record = 4 * sum(layout.feature_lengths().values()) + 64 * len(layout.features)
    return max(1, math.ceil(n_examples * per_record / target_bytes))
