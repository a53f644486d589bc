"""What ``--input`` matched, and which split each file goes to.

:func:`expand_inputs` lists every entry the patterns match, directories and dangling symlinks
included (Beam's own matching silently leaves both out), so that the dataset's ledger can account
for each of them. A file's split is a pure function of its *split key*, its path relative to the
wildcard-free prefix of the pattern that matched it (:func:`split_key`), so moving or copying the
whole folder keeps every file in its split.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
from typing import Sequence

from pipelines.options import OptionError

#: Kinds of matched entries.
FILE, DIRECTORY = 'file', 'directory'


@dataclasses.dataclass(frozen=True, order=True)
class InputEntry:
    """One entry a pattern matched.

    Attributes:
        path: its path (absolute for local files, a URL for remote ones).
        key: the split key (see :func:`split_key`).
        kind: ``'file'`` (decoded; dangling symlinks included, which decoding rejects) or
            ``'directory'`` (skipped, but listed in the ledger).
    """

    path: str
    key: str
    kind: str = FILE


def pattern_base(pattern: str) -> str:
    """Directory prefix of a pattern before its first wildcard ('data/a/*.wav' -> 'data/a/')."""
    cut = len(pattern)
    for ch in '*?[{':
        i = pattern.find(ch)
        if i >= 0:
            cut = min(cut, i)
    prefix = pattern[:cut]
    if cut == len(pattern):  # a plain file name: its directory
        return prefix.rsplit('/', 1)[0] + '/' if '/' in prefix else ''
    return prefix[:prefix.rfind('/') + 1] if '/' in prefix else ''


def split_key(path: str, base: str) -> str:
    """The name used to assign ``path`` to a split: its path relative to ``base`` (the fixed,
    wildcard-free directory prefix of the pattern that matched it), with '/' separators. Moving the
    whole folder (or copying it to GCS) keeps every file's split."""
    path = path.replace('\\', '/')
    base = base.replace('\\', '/')
    if base and path.startswith(base):
        rel = path[len(base):].lstrip('/')
        if rel:
            return rel
    return path.rsplit('/', 1)[-1]


def assign_split(key: str, eval_fraction: float) -> str:
    """'eval' or 'train' for a file, from the SHA-256 of its split key: stable across runs,
    processes and machines (unlike Python's salted ``hash``)."""
    value = int.from_bytes(hashlib.sha256(key.encode('utf-8')).digest()[:8], 'big') / 2.0 ** 64
    return 'eval' if value < eval_fraction else 'train'


def _match_local(pattern: str) -> list[tuple[str, str]]:
    """(path, kind) of every local entry the pattern matches, dangling symlinks included."""
    out = []
    for path in glob.glob(pattern, recursive=True):
        path = os.path.abspath(path)
        out.append((path, DIRECTORY if os.path.isdir(path) else FILE))
    return out


def _match_remote(pattern: str) -> list[tuple[str, str]]:
    from apache_beam.io.filesystems import FileSystems

    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # noqa: BLE001 - Beam raises various errors for bad patterns
        raise OptionError(f'--input {pattern!r}: cannot list files ({e})') from e
    # Object stores have no directories; a name ending in '/' is a folder placeholder.
    return [(m.path, DIRECTORY if m.path.endswith('/') else FILE) for m in matched]


def expand_inputs(patterns: Sequence[str]) -> list[InputEntry]:
    """Match file patterns (local paths or any Beam FileSystems URL; comma lists allowed; a
    directory means every entry in it).

    Returns:
        Every matched entry once, sorted by path (the first pattern that matched a path gives its
        split key).

    Raises:
        OptionError: no pattern given, or a pattern matches no file (named in the message).
    """
    found: dict[str, InputEntry] = {}
    flat = [p.strip() for item in patterns for p in str(item).split(',') if p.strip()]
    if not flat:
        raise OptionError('--input: no file pattern given')
    for pattern in flat:
        local = '://' not in pattern or pattern.startswith('file://')
        if local and pattern.startswith('file://'):
            pattern = pattern[len('file://'):]
        if local and os.path.isdir(pattern):
            pattern = os.path.join(pattern, '*')
        if local:
            pattern = os.path.abspath(pattern)
        base = pattern_base(pattern)
        matched = _match_local(pattern) if local else _match_remote(pattern)
        files = [p for p, kind in matched if kind == FILE]
        if not files:
            dirs = len(matched)
            detail = (f'it matches only {dirs} director{"y" if dirs == 1 else "ies"}; use a '
                      "pattern such as 'dir/**/*.wav' for files in subdirectories"
                      if dirs else 'no files match this pattern')
            raise OptionError(f'--input {pattern!r}: {detail}')
        for path, kind in matched:
            if path not in found:
                found[path] = InputEntry(path, split_key(path, base), kind)
    return sorted(found.values())
