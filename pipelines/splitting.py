"""Which examples are held out: the train/eval split of ``ddsp-prepare`` as pure functions.

Two methods (``--split_by``):

* ``file``: whole files go to ``eval`` by the SHA-256 of their split key
  (:func:`pipelines.inputs.assign_split`). Leak-free, but all or nothing when there are few files.
* ``segment``: each file holds out contiguous *blocks* of example windows that add up to
  ``eval_fraction`` of its audio (at least one window), placed by a seeded hash of the file's
  split key and the block's index, with a *guard* of one example window of audio on each side of
  every block that neither split uses. A training window therefore never shares a sample with an
  eval window, and is at least ``example_secs`` of audio away from one, whatever ``hop_secs``.
  A file too short to keep, wherever its blocks fall, at least as many training windows as it
  holds out goes whole to one split by its key's hash, as with ``file``.

``auto`` (the default) chooses ``file`` when the path hash sends a share of the files to ``eval``
within half the fraction of it (enough files to come close), else ``segment``
(:func:`choose_method`).

Everything here is a pure function of split keys, lengths and options, so a dataset's split is
the same run to run and on every runner. Geometry is in frames and window indices, as in
:mod:`pipelines.chunking`: window ``w`` covers frames ``[w*H, w*H + E)`` (``H`` hop, ``E``
example frames).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import math
from typing import Optional, Sequence

from pipelines import chunking
from pipelines.inputs import assign_split
from pipelines.options import SPLIT_METHODS, PrepareOptions

AUTO, FILE, SEGMENT = SPLIT_METHODS
#: Split label of a file that holds out blocks of its windows (its others are train or guard).
SEGMENTED = 'segmented'
#: A held-out block holds about this many example windows of audio at most: longer files hold out
#: several blocks, spread over the file, rather than one long stretch.
BLOCK_EXAMPLES = 8
#: ``auto`` splits by file when the share of files the hash sends to eval is within this part of
#: the fraction (of the smaller of the fraction and its complement).
AUTO_TOLERANCE = 0.5


def _unit(seed: int, key: str, index: int) -> float:
    """A number in [0, 1) from the SHA-256 of (seed, key, index): the same on every machine."""
    digest = hashlib.sha256(f'{seed}\0{key}\0{index}'.encode()).digest()
    return int.from_bytes(digest[:8], 'big') / 2.0 ** 64


def choose_method(keys: Sequence[str], opts: PrepareOptions) -> str:
    """The split method for a dataset whose files have these split keys: ``opts.split_by``, or
    for ``auto`` ``file`` when the path hash sends to eval a share of the files within
    ``AUTO_TOLERANCE`` of the fraction (and neither none nor all of them), else ``segment``.
    A fraction of 0 or 1 splits by file (every file goes to one split either way)."""
    if opts.split_by != AUTO:
        return opts.split_by
    fraction = opts.eval_fraction
    if not keys or fraction <= 0.0 or fraction >= 1.0:
        return FILE
    n_eval = sum(assign_split(k, fraction) == 'eval' for k in keys)
    share = n_eval / len(keys)
    close = abs(share - fraction) <= AUTO_TOLERANCE * min(fraction, 1.0 - fraction)
    return FILE if 0 < n_eval < len(keys) and close else SEGMENT


@dataclasses.dataclass(frozen=True)
class FileSplit:
    """How one file's windows are split.

    Attributes:
        split: ``'train'`` or ``'eval'`` (the whole file), or ``'segmented'``.
        n_windows: the file's example windows (:func:`pipelines.chunking.n_windows`).
        blocks: held-out blocks ``(first window, number of windows)``, sorted; empty unless
            segmented.
        hop_frames, example_frames: window geometry (frames).
    """

    split: str
    n_windows: int
    blocks: tuple[tuple[int, int], ...] = ()
    hop_frames: int = 1
    example_frames: int = 1

    def window_split(self, w: int) -> Optional[str]:
        """``'train'``, ``'eval'`` or None (a guard window: in neither split) for window ``w``."""
        if self.split != SEGMENTED:
            return self.split
        h, e = self.hop_frames, self.example_frames
        # blocks are sorted and disjoint: only the last one starting at or before w and the
        # first one after it can hold w or reach it with their guard
        i = bisect.bisect_right(self.blocks, (w, math.inf))
        near = self.blocks[max(0, i - 1):i + 1]
        for a, k in near:
            if a <= w < a + k:
                return 'eval'
        for a, k in near:
            # the window plus one example of guard after it, or before it, reaches the block
            if w * h + 2 * e > a * h and w * h < (a + k - 1) * h + 2 * e:
                return None
        return 'train'

    def labels(self) -> list[Optional[str]]:
        """:meth:`window_split` of every window."""
        return [self.window_split(w) for w in range(self.n_windows)]

    def counts(self) -> dict[str, int]:
        """Windows per label: ``train``, ``eval``, ``guard``."""
        out = {'train': 0, 'eval': 0, 'guard': 0}
        for label in self.labels():
            out[label or 'guard'] += 1
        return out

    def eval_blocks_frames(self) -> list[tuple[int, int]]:
        """The held-out audio of each block, ``[first frame, end frame)``."""
        h, e = self.hop_frames, self.example_frames
        return [(a * h, (a + k - 1) * h + e) for a, k in self.blocks]


def plan_file(key: str, n_samples: int, opts: PrepareOptions, method: str) -> FileSplit:
    """The split of a file with split key ``key`` and ``n_samples`` samples at
    ``opts.sample_rate``, by ``method`` (``file`` or ``segment``; see the module docstring).

    By segment the file's held-out audio is ``eval_fraction`` of its length, in ``B =
    ceil(held-out / (BLOCK_EXAMPLES windows))`` blocks of whole windows (at least one window
    each; a block of ``k`` windows holds ``(k - 1) * hop + example`` frames of audio). Block ``i``
    lies in the ``i``-th of ``B`` equal parts of the file's windows, at an offset drawn from
    ``sha256(split_seed, key, i)``.
    """
    whole = FileSplit(assign_split(key, opts.eval_fraction), chunking.n_windows(n_samples, opts),
                      (), opts.hop_frames, opts.example_frames)
    if method == FILE or opts.eval_fraction <= 0.0:
        return whole
    if method != SEGMENT:
        raise ValueError(f'unknown split method {method!r} (one of {FILE}, {SEGMENT})')
    h, e, n = opts.hop_frames, opts.example_frames, whole.n_windows
    target = opts.eval_fraction * n_samples / opts.hop_samples  # held-out frames asked for
    n_blocks = max(1, math.ceil(target / (BLOCK_EXAMPLES * e)))
    n_eval = max(n_blocks, round((target - n_blocks * (e - h)) / h))
    lost_per_side = math.ceil(2 * e / h) - 1  # windows a block's guard takes on each side
    if n - n_eval - 2 * n_blocks * lost_per_side < n_eval:
        return whole  # too short to keep as much for training as it holds out, wherever
    blocks = []
    for i in range(n_blocks):
        size = n_eval // n_blocks + (1 if i < n_eval % n_blocks else 0)
        lo, hi = i * n // n_blocks, (i + 1) * n // n_blocks
        size = min(size, hi - lo)
        start = lo + int(_unit(opts.split_seed, key, i) * (hi - lo - size + 1))
        blocks.append((start, size))
    return FileSplit(SEGMENTED, n, tuple(blocks), h, e)


def _union_frames(intervals: Sequence[tuple[int, int]]) -> int:
    total, end = 0, None
    for lo, hi in sorted(intervals):
        if end is None or lo > end:
            total += hi - lo
            end = hi
        elif hi > end:
            total += hi - end
            end = hi
    return total


def describe(plan: FileSplit, n_samples: int, opts: PrepareOptions) -> dict:
    """What the ledger says about a file's split: ``eval_blocks`` (``[start, end]`` seconds of
    held-out audio each, within the file), ``eval_seconds`` (held-out audio), ``guard_seconds``
    (audio neither split uses) and ``guard_windows`` (windows left out for the guard)."""
    length = n_samples / opts.hop_samples  # frames of real audio (the rest is padding)
    rate = float(opts.frame_rate)
    h, e = plan.hop_frames, plan.example_frames

    def clip(lo, hi):
        return (min(lo, length), min(hi, length))

    blocks = [clip(lo, hi) for lo, hi in plan.eval_blocks_frames()]
    labels = plan.labels()
    cover = {s: [clip(w * h, w * h + e) for w, lab in enumerate(labels) if lab == s]
             for s in ('train', 'eval')}
    used = _union_frames(cover['train']) + _union_frames(cover['eval'])
    guard = max(0.0, length - used) if plan.split == SEGMENTED else 0.0
    return {
        'eval_blocks': [[round(lo / rate, 6), round(hi / rate, 6)] for lo, hi in blocks],
        'eval_seconds': round((_union_frames(blocks) if plan.split == SEGMENTED else
                               (length if plan.split == 'eval' else 0.0)) / rate, 6),
        'guard_seconds': round(guard / rate, 6),
        'guard_windows': labels.count(None),
    }
