"""Pure functions behind ``ddsp-prepare``: options, split hashing, chunk plans, windowing, example
serialisation and dataset statistics. Nothing here needs Beam; the DoFns in
:mod:`pipelines.prepare_dataset` are thin shells around these.

Geometry (all positions are integer *frames* at ``frame_rate``; a frame is ``sample_rate //
frame_rate`` samples of ``audio`` and ``16000 // frame_rate`` samples of ``audio_16k``):

* A file of ``L`` samples yields windows starting at frames ``0, H, 2H, ...`` (``H`` = hop) up to
  and including the first window that reaches the end of the file, so only the last window can
  extend past the end; the file is zero-padded (logically) to the end of that window, never further.
  A file shorter than one example gives exactly one (padded) window.
* Windows are *aligned to chunks*: chunk ``k`` owns the windows starting in frames
  ``[k*C, (k+1)*C)`` (``C`` = chunk length, a multiple of ``H``) and computes features for the
  frames those windows cover, plus ``context`` frames either side (clipped to the padded file).
  Every frame's loudness and CREPE activations depend only on the audio under its own window, so
  with ``context`` ≥ half a window they are exactly the whole-file values; Viterbi decoding runs
  per chunk over the chunk's frames including the context, so decoded f0 can differ from a
  whole-file decode only in the rare case that the best path through the context frames differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Iterable, Optional

import numpy as np

SCHEMA_VERSION = 1
CREPE_SAMPLE_RATE = 16000
CREPE_WINDOW = 1024  # samples at 16 kHz
LOUDNESS_WINDOW_SECS = 0.032  # 512 samples at 16 kHz
VITERBI_CONTEXT_SECS = 0.25
VOICED_CONFIDENCE = 0.5
CONFIDENCE_BINS = 10
F0_HIST_MIN_HZ = 20.0  # voiced-f0 histogram: 20-cent bins from 20 Hz up to ~4.1 kHz
F0_HIST_BINS_PER_OCTAVE = 60
F0_HIST_BINS = 460
F0_RANGE_PERCENTILES = (1.0, 99.0)
SPLITS = ('train', 'eval')


class OptionError(ValueError):
    """An invalid option; the message names the option."""


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """Options of ``ddsp-prepare`` (see ``docs/prepare.md``).

    Attributes:
        sample_rate: sample rate of the ``audio`` feature (Hz).
        frame_rate: frames per second of ``f0_hz``, ``f0_confidence`` and ``loudness_db``.
        example_secs: length of one example window (s).
        hop_secs: step between example windows (s).
        chunk_secs: length of the file pieces processed in parallel (s), a multiple of hop_secs.
        eval_fraction: fraction of source files assigned to the eval split (by path hash).
        crepe_capacity: CREPE model size ('tiny' ... 'full').
        viterbi: Viterbi-decode CREPE's activations (else local weighted average).
        inference_batch_size: frames per CREPE model call.
        drop_silence_db: windows whose loudest frame is below this loudness (dB) are dropped
            (counted in the manifest); None keeps every window.
        min_secs: source files shorter than this (s) are dead-lettered as too short.
        num_shards: TFRecord shards per split; 0 lets the runner decide.
    """

    sample_rate: int = 16000
    frame_rate: int = 250
    example_secs: float = 4.0
    hop_secs: float = 1.0
    chunk_secs: float = 20.0
    eval_fraction: float = 0.1
    crepe_capacity: str = 'full'
    viterbi: bool = True
    inference_batch_size: int = 512
    drop_silence_db: Optional[float] = -70.0
    min_secs: float = 0.5
    num_shards: int = 0

    # ---- derived integer geometry -----------------------------------------------------------
    @property
    def hop_samples(self) -> int:
        """Samples of ``audio`` per frame."""
        return self.sample_rate // self.frame_rate

    @property
    def hop_16k(self) -> int:
        """Samples of ``audio_16k`` per frame."""
        return CREPE_SAMPLE_RATE // self.frame_rate

    @property
    def example_frames(self) -> int:
        return int(round(self.example_secs * self.frame_rate))

    @property
    def hop_frames(self) -> int:
        return int(round(self.hop_secs * self.frame_rate))

    @property
    def chunk_frames(self) -> int:
        return int(round(self.chunk_secs * self.frame_rate))

    @property
    def loudness_n_fft(self) -> int:
        """FFT size of the loudness frames: 32 ms (512 samples at 16 kHz)."""
        return int(round(LOUDNESS_WINDOW_SECS * self.sample_rate))

    @property
    def context_frames(self) -> int:
        """Extra frames computed on each side of a chunk (see module docstring)."""
        half = max(math.ceil(CREPE_WINDOW / 2 / self.hop_16k),
                   math.ceil(self.loudness_n_fft / 2 / self.hop_samples))
        extra = int(round(VITERBI_CONTEXT_SECS * self.frame_rate)) if self.viterbi else 0
        return half + extra

    @property
    def with_audio_16k(self) -> bool:
        return self.sample_rate != CREPE_SAMPLE_RATE

    def validate(self) -> PrepareOptions:
        """Check the options; raises :class:`OptionError` naming the bad option."""
        from ddsp_core.f0 import CREPE_CAPACITIES

        def need(cond, option, msg):
            if not cond:
                raise OptionError(f'--{option}={getattr(self, option)!r}: {msg}')

        need(self.sample_rate > 0, 'sample_rate', 'must be positive')
        need(self.frame_rate > 0, 'frame_rate', 'must be positive')
        need(CREPE_SAMPLE_RATE % self.frame_rate == 0, 'frame_rate',
             'must divide 16000 (CREPE hop must be whole samples)')
        need(self.sample_rate % self.frame_rate == 0, 'frame_rate',
             f'must divide --sample_rate {self.sample_rate}')
        for name in ('example_secs', 'hop_secs', 'chunk_secs'):
            value = getattr(self, name)
            need(value > 0, name, 'must be positive')
            need(abs(value * self.frame_rate - round(value * self.frame_rate)) < 1e-6, name,
                 f'must be a whole number of frames at --frame_rate {self.frame_rate}')
        need(self.chunk_frames % self.hop_frames == 0, 'chunk_secs',
             f'must be a multiple of --hop_secs {self.hop_secs}')
        need(0.0 <= self.eval_fraction <= 1.0, 'eval_fraction', 'must be in [0, 1]')
        need(self.crepe_capacity in CREPE_CAPACITIES, 'crepe_capacity',
             f'must be one of {", ".join(CREPE_CAPACITIES)}')
        need(self.inference_batch_size >= 1, 'inference_batch_size', 'must be >= 1')
        need(self.min_secs >= 0, 'min_secs', 'must be >= 0')
        need(self.num_shards >= 0, 'num_shards', 'must be >= 0 (0: runner decides)')
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- split -------------------------------------------------------------------------------------
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


def assign_split(key: str, eval_fraction: float) -> str:
    """'eval' or 'train' for a file, from the SHA-256 of its split key: stable across runs,
    processes and machines (unlike Python's salted ``hash``)."""
    value = int.from_bytes(hashlib.sha256(key.encode('utf-8')).digest()[:8], 'big') / 2.0 ** 64
    return 'eval' if value < eval_fraction else 'train'


# ---- chunk plan --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ChunkSpec:
    """One chunk of a file, in frames (see module docstring).

    Attributes:
        index: chunk number in the file.
        n_chunks: chunks in the file.
        first_frame, end_frame: frames whose features the chunk's windows use, ``[first, end)``.
        seg_first, seg_end: frames of audio handed to the feature extractors (with context).
        window_starts: start frames of the windows the chunk owns.
    """

    index: int
    n_chunks: int
    first_frame: int
    end_frame: int
    seg_first: int
    seg_end: int
    window_starts: tuple[int, ...]


def n_windows(n_samples: int, opts: PrepareOptions) -> int:
    """Number of example windows of a file with ``n_samples`` samples at ``opts.sample_rate``."""
    example = opts.example_frames * opts.hop_samples
    hop = opts.hop_frames * opts.hop_samples
    if n_samples <= example:
        return 1
    return 1 + math.ceil((n_samples - example) / hop)


def padded_frames(n_samples: int, opts: PrepareOptions) -> int:
    """Length in frames of the file zero-padded to the end of its last window."""
    return (n_windows(n_samples, opts) - 1) * opts.hop_frames + opts.example_frames


def plan_chunks(n_samples: int, opts: PrepareOptions) -> list[ChunkSpec]:
    """The chunks of a file of ``n_samples`` samples at ``opts.sample_rate``."""
    n_win = n_windows(n_samples, opts)
    per_chunk = opts.chunk_frames // opts.hop_frames
    n_chunks = math.ceil(n_win / per_chunk)
    total = padded_frames(n_samples, opts)
    ctx = opts.context_frames
    specs = []
    for k in range(n_chunks):
        wins = tuple(w * opts.hop_frames for w in range(k * per_chunk, min((k + 1) * per_chunk,
                                                                            n_win)))
        first, end = wins[0], wins[-1] + opts.example_frames
        specs.append(ChunkSpec(k, n_chunks, first, end, max(0, first - ctx), min(total, end + ctx),
                               wins))
    return specs


class _Buffer:
    """A growing 1-D signal of known final length, of which only a tail is kept."""

    def __init__(self, length: int):
        self.length = length  # logical length; samples past it are ignored, before it zero-filled
        self.offset = 0  # absolute index of self.data[0]
        self.data = np.zeros(0, np.float32)
        self.received = 0

    def append(self, x: np.ndarray):
        self.data = np.concatenate([self.data, x.astype(np.float32, copy=False)])
        self.received += len(x)

    def ready(self, end: int, finished: bool) -> bool:
        return finished or self.received >= min(end, self.length)

    def get(self, start: int, end: int) -> np.ndarray:
        out = np.zeros(end - start, np.float32)
        lo, hi = max(start, self.offset), min(end, self.offset + len(self.data), self.length)
        if hi > lo:
            out[lo - start:hi - start] = self.data[lo - self.offset:hi - self.offset]
        return out

    def drop_before(self, start: int):
        cut = max(0, min(start - self.offset, len(self.data)))
        if cut:
            self.data = self.data[cut:]
            self.offset += cut


def iter_chunk_audio(blocks: Iterable[tuple[np.ndarray, ...]], lengths: tuple[int, ...],
                     hops: tuple[int, ...], specs: list[ChunkSpec]):
    """Cut streamed audio into chunk segments as soon as each is complete.

    Args:
        blocks: iterable of tuples of float32 arrays, one per stream (e.g. ``audio`` and
            ``audio_16k``), as from :func:`pipelines.audio_io.stream_resampled`.
        lengths: logical length in samples of each stream (the file's resampled length).
        hops: samples per frame of each stream.
        specs: the file's chunks, from :func:`plan_chunks`.

    Yields:
        ``(spec, segments)``: segments[i] is float32 [(seg_end - seg_first) * hops[i]], samples
        ``seg_first * hop ... seg_end * hop`` of stream i, zero past the file's end.
    """
    bufs = [_Buffer(n) for n in lengths]
    pending = list(specs)

    def emit(finished):
        while pending and all(b.ready(pending[0].seg_end * h, finished)
                              for b, h in zip(bufs, hops, strict=True)):
            spec = pending.pop(0)
            segs = tuple(b.get(spec.seg_first * h, spec.seg_end * h)
                         for b, h in zip(bufs, hops, strict=True))
            if pending:
                for b, h in zip(bufs, hops, strict=True):
                    b.drop_before(pending[0].seg_first * h)
            yield spec, segs

    for block in blocks:
        for b, x in zip(bufs, block, strict=True):
            b.append(x)
        yield from emit(False)
    yield from emit(True)


def interior(features: np.ndarray, spec: ChunkSpec) -> np.ndarray:
    """Frames ``[first_frame, end_frame)`` of per-segment features [n_seg_frames, ...]."""
    lo = spec.first_frame - spec.seg_first
    hi = spec.end_frame - spec.seg_first
    if features.shape[0] < hi:
        raise ValueError(f'expected >= {hi} frames of features for chunk {spec.index}, '
                         f'got {features.shape[0]}')
    return features[lo:hi]


# ---- windows and examples ----------------------------------------------------------------------
def make_windows(spec: ChunkSpec, audio: np.ndarray, audio_16k: Optional[np.ndarray],
                 f0_hz: np.ndarray, f0_confidence: np.ndarray, loudness_db: np.ndarray,
                 opts: PrepareOptions) -> tuple[list[tuple[int, dict[str, np.ndarray]]], int]:
    """Cut a chunk's features into example windows.

    Args:
        spec: the chunk.
        audio: float32 [(seg_end - seg_first) * hop_samples], the chunk segment at sample_rate.
        audio_16k: float32 [(seg_end - seg_first) * hop_16k] at 16 kHz, or None when
            sample_rate is 16000.
        f0_hz, f0_confidence, loudness_db: float32 [end_frame - first_frame], the chunk's
            interior frames (Hz, 0..1, dB).
        opts: options.

    Returns:
        (windows, n_dropped): windows is a list of ``(start_frame, example)`` where example maps
        feature names to float32 arrays (``audio`` [example_secs * sample_rate], ``audio_16k``
        [example_secs * 16000] when sample_rate != 16000, frame features [example_frames]);
        n_dropped counts windows dropped as silent.
    """
    out, dropped = [], 0
    n = opts.example_frames
    for start in spec.window_starts:
        fi = start - spec.first_frame
        loud = loudness_db[fi:fi + n]
        if opts.drop_silence_db is not None and float(np.max(loud)) < opts.drop_silence_db:
            dropped += 1
            continue
        si = (start - spec.seg_first) * opts.hop_samples
        ex = {'audio': audio[si:si + n * opts.hop_samples]}
        if audio_16k is not None:
            s16 = (start - spec.seg_first) * opts.hop_16k
            ex['audio_16k'] = audio_16k[s16:s16 + n * opts.hop_16k]
        ex['f0_hz'] = f0_hz[fi:fi + n]
        ex['f0_confidence'] = f0_confidence[fi:fi + n]
        ex['loudness_db'] = loud
        out.append((start, {k: np.asarray(v, np.float32) for k, v in ex.items()}))
    return out, dropped


def serialize_example(example: dict[str, np.ndarray]) -> bytes:
    """A ``tf.train.Example`` (one float list per feature) serialised to bytes."""
    import tensorflow as tf

    feature = {k: tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(v)))
               for k, v in example.items()}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`serialize_example`: feature name -> float32 array."""
    import tensorflow as tf

    ex = tf.train.Example.FromString(serialized)
    return {k: np.asarray(f.float_list.value, np.float32) for k, f in ex.features.feature.items()}


# ---- statistics ---------------------------------------------------------------------------------
def example_stats(split: str, key: str, start: int, example: dict[str, np.ndarray]) -> dict:
    """Summable statistics of one example (see :class:`StatsAccumulator`)."""
    loud = example['loudness_db'].astype(np.float64)
    conf = example['f0_confidence'].astype(np.float64)
    f0 = example['f0_hz'].astype(np.float64)
    voiced = conf >= VOICED_CONFIDENCE
    digest = hashlib.sha256(f'{key}@{start}'.encode())
    digest.update(np.ascontiguousarray(example['audio'], '<f4').tobytes())
    return {
        'split': split,
        'examples': 1,
        'frames': int(loud.size),
        'loud_sum': float(loud.sum()), 'loud_sq': float((loud ** 2).sum()),
        'loud_min': float(loud.min()), 'loud_max': float(loud.max()),
        'conf_sum': float(conf.sum()),
        'conf_hist': np.histogram(conf, bins=CONFIDENCE_BINS, range=(0.0, 1.0))[0].tolist(),
        'voiced': int(voiced.sum()),
        'voiced_loud_sum': float(loud[voiced].sum()), 'voiced_loud_sq': float((loud[voiced] ** 2)
                                                                              .sum()),
        'f0_min': float(f0[voiced].min()) if voiced.any() else math.inf,
        'f0_max': float(f0[voiced].max()) if voiced.any() else -math.inf,
        'log2_f0_sum': float(np.log2(np.maximum(f0[voiced], 1e-3)).sum()),
        'f0_hist': _f0_histogram(f0[voiced]),
        'digest': int.from_bytes(digest.digest(), 'big'),
    }


def _f0_histogram(f0: np.ndarray) -> list[int]:
    pos = np.log2(np.maximum(f0, 1e-3) / F0_HIST_MIN_HZ) * F0_HIST_BINS_PER_OCTAVE
    pos = np.clip(pos, 0, F0_HIST_BINS - 1e-6)
    return np.histogram(pos, bins=F0_HIST_BINS, range=(0, F0_HIST_BINS))[0].tolist()


def f0_percentile(hist: list[int], q: float) -> Optional[float]:
    """The q-th percentile (0..100) of f0 (Hz) from a voiced-f0 histogram (20-cent bins)."""
    counts = np.asarray(hist, np.float64)
    if counts.sum() == 0:
        return None
    i = int(np.searchsorted(np.cumsum(counts), q / 100.0 * counts.sum()))
    return float(F0_HIST_MIN_HZ * 2.0 ** ((min(i, F0_HIST_BINS - 1) + 0.5)
                                         / F0_HIST_BINS_PER_OCTAVE))


_SUM_KEYS = ('examples', 'frames', 'loud_sum', 'loud_sq', 'conf_sum', 'voiced',
             'voiced_loud_sum', 'voiced_loud_sq', 'log2_f0_sum', 'digest')


def empty_split_stats() -> dict:
    return {'examples': 0, 'frames': 0, 'loud_sum': 0.0, 'loud_sq': 0.0, 'loud_min': math.inf,
            'loud_max': -math.inf, 'conf_sum': 0.0, 'conf_hist': [0] * CONFIDENCE_BINS,
            'voiced': 0, 'voiced_loud_sum': 0.0, 'voiced_loud_sq': 0.0, 'f0_min': math.inf,
            'f0_max': -math.inf, 'log2_f0_sum': 0.0, 'f0_hist': [0] * F0_HIST_BINS, 'digest': 0}


def merge_split_stats(a: dict, b: dict) -> dict:
    """Combine two per-split accumulators (commutative and associative)."""
    out = {k: a[k] + b[k] for k in _SUM_KEYS}
    out['digest'] %= 1 << 256
    out['loud_min'] = min(a['loud_min'], b['loud_min'])
    out['loud_max'] = max(a['loud_max'], b['loud_max'])
    out['f0_min'] = min(a['f0_min'], b['f0_min'])
    out['f0_max'] = max(a['f0_max'], b['f0_max'])
    for key in ('conf_hist', 'f0_hist'):
        out[key] = [x + y for x, y in zip(a[key], b[key], strict=True)]
    return out


def _mean_std(total, squares, n):
    if n == 0:
        return None, None
    mean = total / n
    return mean, math.sqrt(max(0.0, squares / n - mean * mean))


def summarize_split(acc: dict, opts: PrepareOptions) -> dict:
    """The manifest entry of one split from its accumulator."""
    n = acc['frames']
    mean, std = _mean_std(acc['loud_sum'], acc['loud_sq'], n)
    vmean, vstd = _mean_std(acc['voiced_loud_sum'], acc['voiced_loud_sq'], acc['voiced'])
    finite = lambda x: None if (x is None or not math.isfinite(x)) else float(x)
    return {
        'examples': acc['examples'],
        'frames': n,
        'hours': acc['examples'] * opts.example_secs / 3600.0,
        'loudness_db': {'mean': finite(mean), 'std': finite(std), 'min': finite(acc['loud_min']),
                        'max': finite(acc['loud_max']), 'voiced_mean': finite(vmean),
                        'voiced_std': finite(vstd)},
        'f0_confidence': {'mean': acc['conf_sum'] / n if n else None,
                          'voiced_fraction': acc['voiced'] / n if n else None,
                          'voiced_threshold': VOICED_CONFIDENCE,
                          'histogram': acc['conf_hist'],
                          'histogram_edges': np.linspace(0, 1, CONFIDENCE_BINS + 1).round(3)
                          .tolist()},
        'f0_hz': {'min': finite(acc['f0_min']), 'max': finite(acc['f0_max']),
                  'p01': f0_percentile(acc['f0_hist'], F0_RANGE_PERCENTILES[0]),
                  'p99': f0_percentile(acc['f0_hist'], F0_RANGE_PERCENTILES[1]),
                  'geometric_mean': (2.0 ** (acc['log2_f0_sum'] / acc['voiced'])
                                     if acc['voiced'] else None),
                  'of': f'frames with f0_confidence >= {VOICED_CONFIDENCE}'},
    }


def build_manifest(opts: PrepareOptions, inputs: list[str], n_files_in: int,
                   file_records: list[dict], split_stats: dict[str, dict],
                   example_counts: dict[str, int], dead_letters: list[dict],
                   shards: dict[str, list[str]], dropped_silent: int) -> dict:
    """Assemble ``manifest.json``.

    Args:
        opts: options of the run.
        inputs: the input patterns.
        n_files_in: number of distinct files matched.
        file_records: one dict per file that passed validation (``path``, ``key``, ``split``,
            ``seconds``, ``sha256``).
        split_stats: per-split accumulators (:func:`merge_split_stats`).
        example_counts: path -> examples written.
        dead_letters: dead-letter records (``path``, ``reason``, ``stage``); a file with both
            examples and dead letters counts as ``partially_written``.
        shards: split -> written shard paths.
        dropped_silent: windows dropped by ``drop_silence_db``.
    """
    dead_paths = {d['path'] for d in dead_letters}
    with_examples = {p for p, n in example_counts.items() if n > 0}
    # A file can be dead-lettered after some of its chunks were written (e.g. a decode error
    # half-way through, or one failed CREPE batch): its examples are in the dataset, so it counts
    # as partially written (with its dead letters), not as rejected.
    written = with_examples - dead_paths
    partial = with_examples & dead_paths
    rejected = dead_paths - with_examples
    files_by_split = {s: 0 for s in SPLITS}
    secs_by_split = {s: 0.0 for s in SPLITS}
    for rec in file_records:
        if rec['path'] in with_examples:
            files_by_split[rec['split']] += 1
            secs_by_split[rec['split']] += rec['seconds']
    total_digest = 0
    for s in SPLITS:
        digest = split_stats.get(s, empty_split_stats())['digest']
        total_digest = (total_digest + digest) % (1 << 256)
    opt_dict = opts.to_dict()
    fp = hashlib.sha256()
    fp.update(repr(sorted((k, v) for k, v in opt_dict.items() if k != 'num_shards')).encode())
    fp.update(total_digest.to_bytes(32, 'big'))
    splits = {}
    for s in SPLITS:
        entry = summarize_split(split_stats.get(s, empty_split_stats()), opts)
        entry.update({'files': files_by_split[s], 'source_hours': secs_by_split[s] / 3600.0,
                      'shards': sorted(p.replace('\\', '/').rsplit('/', 1)[-1]
                                       for p in shards.get(s, []))})
        splits[s] = entry
    train = splits['train']
    return {
        'schema_version': SCHEMA_VERSION,
        'generator': 'pipelines.prepare_dataset',
        'fingerprint': fp.hexdigest()[:16],
        'options': opt_dict,
        'inputs': list(inputs),
        'sample_rate': opts.sample_rate,
        'frame_rate': opts.frame_rate,
        'example_secs': opts.example_secs,
        'features': feature_spec(opts),
        'files': {
            'in': n_files_in,
            'written': len(written),
            'partially_written': len(partial),
            'dead_lettered': len(rejected),
            'reconciled': n_files_in == len(written) + len(partial) + len(rejected),
        },
        'examples': sum(splits[s]['examples'] for s in SPLITS),
        'hours': sum(splits[s]['hours'] for s in SPLITS),
        'source_hours': sum(secs_by_split.values()) / 3600.0,
        'windows_dropped_silent': dropped_silent,
        'dead_letters': len(dead_letters),
        'splits': splits,
        'mean_loudness_db': train['loudness_db']['mean'],
        'std_loudness_db': train['loudness_db']['std'],
        # robust f0 range (1st..99th percentile of voiced train frames, 20-cent resolution)
        'f0_range_hz': [train['f0_hz']['p01'], train['f0_hz']['p99']],
    }


def feature_spec(opts: PrepareOptions) -> dict[str, list[int]]:
    """Feature name -> shape of each example's float list."""
    spec = {'audio': [opts.example_frames * opts.hop_samples]}
    if opts.with_audio_16k:
        spec['audio_16k'] = [opts.example_frames * opts.hop_16k]
    for k in ('f0_hz', 'f0_confidence', 'loudness_db'):
        spec[k] = [opts.example_frames]
    return spec
