"""A prepared dataset's shards checked against its manifest: sizes and sha256 digests recorded
while writing (:class:`DigestingWriter`, :func:`file_entry`), checked before reading
(:func:`check_shard_sizes`, :func:`verify_shards`), and the damaged record found when TensorFlow
fails to read one (:func:`find_damaged_record`). Local paths and ``gs://`` alike.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Optional

from ddsp_core.records import SPLITS, Layout, LayoutError, Manifest, check_lengths, parse_example


class ShardError(LayoutError):
    """A shard that is missing, or differs from what its manifest recorded; the message names
    the shard, what was expected and what was found."""


class DigestingWriter:
    """Wraps a binary file being written: passes every ``write`` through and keeps the byte
    count and SHA-256 of what went by, so a shard's manifest entry costs no second read."""

    def __init__(self, file):
        self._file = file
        self._sha256 = hashlib.sha256()
        self.n_bytes = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha256.update(data)
        self.n_bytes += len(data)

    def entry(self) -> dict:
        """``{'bytes': N, 'sha256': HEX}`` of what was written (a :data:`SHARD_FILES` value)."""
        return {'bytes': self.n_bytes, 'sha256': self._sha256.hexdigest()}


def file_entry(path: str, chunk_bytes: int = 1 << 20) -> dict:
    """``{'bytes': N, 'sha256': HEX}`` of a file as it is now (reads it whole)."""
    import tensorflow as tf

    digest, n = hashlib.sha256(), 0
    with tf.io.gfile.GFile(str(path), 'rb') as f:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                break
            digest.update(block)
            n += len(block)
    return {'bytes': n, 'sha256': digest.hexdigest()}


def _file_size(path: str) -> Optional[int]:
    """The size of a file in bytes, or None when it does not exist."""
    import os

    if '://' not in path:
        try:
            return os.path.getsize(path)
        except FileNotFoundError:
            return None
    import tensorflow as tf

    try:
        return int(tf.io.gfile.stat(path).length)
    except tf.errors.NotFoundError:
        return None


def _redo_hint(manifest: Manifest) -> str:
    return (f'copy the dataset again or re-run ddsp-prepare (ddsp-prepare --verify '
            f'{manifest.directory} checks every shard)')


def check_shard_sizes(manifest: Manifest, paths: Iterable[str]) -> None:
    """Check that each shard exists and has the size its manifest recorded (cheap: one ``stat``
    per file). Shards the manifest records no size for (older manifests) are only checked to
    exist.

    Raises:
        ShardError: the first missing or wrongly sized shard (names it, the expected and the
            found size), with a count of any others.
    """
    problems = []
    for path in paths:
        size = _file_size(str(path))
        entry = manifest.shard_file(path)
        if size is None:
            problems.append(f'{path}: missing (listed in {manifest.path})')
        elif entry is not None and 'bytes' in entry and int(entry['bytes']) != size:
            problems.append(f'{path}: expected {int(entry["bytes"])} bytes (as {manifest.path} '
                            f'records), found {size}: the shard is truncated or was changed')
    if problems:
        more = f' ({len(problems) - 1} more shard(s) too)' if len(problems) > 1 else ''
        raise ShardError(f'{problems[0]}{more}; {_redo_hint(manifest)}')


def tf_error_text(error: Exception) -> str:
    """The first line of a TensorFlow error's message without the op decorations
    ('{{function_node ...}} corrupted record at 12 [Op:IteratorGetNext] name:' -> 'corrupted
    record at 12')."""
    text = str(getattr(error, 'message', None) or error).strip()
    text = re.sub(r'\{\{[^}]*\}\}\s*', '', text.splitlines()[0] if text else '')
    return re.sub(r'\s*\[Op:[^\]]*\].*$', '', text).strip() or type(error).__name__
#: Bytes of TFRecord framing around each record: length (8), its CRC (4), the data's CRC (4).
RECORD_FRAMING_BYTES = 16


def find_damaged_record(path: str, layout: Optional[Layout] = None
                        ) -> Optional[tuple[int, str]]:
    """Read a shard record by record (TFRecord CRCs checked) and find the first damaged one.

    Args:
        path: a TFRecord file.
        layout: also parse each record and check its feature lengths against this.

    Returns:
        ``(byte offset of the record, reason)`` of the first record that is cut short, fails its
        CRC or (with ``layout``) does not parse as the layout; None when all are sound.
    """
    import tensorflow as tf

    offset, index = 0, 0
    try:
        for raw in tf.data.TFRecordDataset(str(path)):
            data = raw.numpy()
            if layout is not None:
                try:
                    lengths = {k: int(v.size) for k, v in parse_example(data).items()}
                    check_lengths(lengths, layout, f'record {index}')
                except LayoutError as e:
                    return offset, str(e)
            offset += RECORD_FRAMING_BYTES + len(data)
            index += 1
    except tf.errors.OpError as e:
        # the record's start (TensorFlow's own number may point into the record)
        return offset, tf_error_text(e)
    return None


def verify_shards(manifest: Manifest) -> tuple[list[str], list[str]]:
    """Check every shard the manifest lists against its recorded size and SHA-256 (reads them
    all); shards without a recorded digest (older manifests) are read record by record instead,
    which checks each record's CRC.

    Returns:
        (the shards checked, one line per problem naming the shard: missing, wrong size, digest
        differs, with the offset of the first damaged record where one can be found).
    """
    checked, problems = [], []
    for split in SPLITS:
        for path in manifest.shards(split):
            checked.append(path)
            entry = manifest.shard_file(path)
            size = _file_size(path)
            if size is None:
                problems.append(f'{path}: missing')
                continue
            if entry is not None and int(entry.get('bytes', size)) != size:
                problems.append(f'{path}: expected {int(entry["bytes"])} bytes, found {size} '
                                '(truncated or changed)')
                continue
            if entry is not None and entry.get('sha256'):
                found = file_entry(path)['sha256']
                if found == entry['sha256']:
                    continue
                damaged = find_damaged_record(path, manifest.layout)
                where = (f'; first damaged record at byte {damaged[0]} ({damaged[1]})'
                         if damaged else '')
                problems.append(f'{path}: SHA-256 {found[:12]}... differs from the manifest\'s '
                                f'{entry["sha256"][:12]}... (the file changed after it was '
                                f'written){where}')
            else:
                damaged = find_damaged_record(path, manifest.layout)
                if damaged:
                    problems.append(f'{path}: damaged record at byte {damaged[0]} '
                                    f'({damaged[1]})')
    return checked, problems
