"""The steps of ``ddsp-prepare``'s Beam job (:mod:`pipelines.prepare_dataset` assembles them):
decoding a file into chunks, making the examples of a chunk's CREPE activations, the per-split
statistics, writing the shards (each record's shard a hash of its key, records sorted in their
shard) and, last, the ledger, dead letters and manifest. Each is a thin shell around a function
of :mod:`pipelines.audio_io`, :mod:`pipelines.chunking`, :mod:`pipelines.examples`,
:mod:`pipelines.stats` or :mod:`pipelines.manifest`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any, Iterable, NamedTuple

import apache_beam as beam
import numpy as np
import soundfile as sf
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from ddsp_core import records, shards
from ddsp_core.f0 import CREPE_SAMPLE_RATE
from pipelines import audio_io, chunking, examples, manifest, splitting, stats
from pipelines.crepe_inference import result_precision
from pipelines.options import PrepareOptions

NAMESPACE = 'ddsp_prepare'  # of the job's Beam metrics
MANIFEST = records.MANIFEST
DEAD_LETTERS = records.DEAD_LETTERS
PROGRESS_EVERY_SECS = 10.0
# Errors that mean "this file is unusable" at decode time: dead-lettered. Anything else there (a
# remote read error, which may be transient) fails the bundle so that the runner retries it.
DECODE_BAD_INPUT = (audio_io.BadInputError, sf.SoundFileError, ValueError)


def dead_letter(element: Any, error: Any, stage: str) -> dict:
    """A dead-letter record from a ``with_exception_handling`` bad output."""
    if isinstance(element, tuple) and element and isinstance(element[0], str):
        path = element[0]
    elif isinstance(element, dict):
        path = element.get('path', '?')
    elif hasattr(element, 'example') and isinstance(element.example, dict):
        path = element.example.get('path', '?')
    else:
        path = repr(element)[:200]
    if isinstance(error, tuple) and len(error) >= 2:
        exc_type, exc_repr = error[0], error[1]
        name = getattr(exc_type, '__name__', str(exc_type))
        reason = exc_repr
        if reason.startswith(name + '(') and reason.endswith(')'):
            reason = reason[len(name) + 1:-1].strip('\'"')
    else:
        name, reason = type(error).__name__, str(error)
    return {'path': path, 'stage': stage, 'error': name, 'reason': reason}


# ---- DoFns -------------------------------------------------------------------------------------
SPILL_DIR = '.spill'  # under the output directory; removed when the job ends


class Spill:
    """Where a bundle's data waits on a local runner while the job groups it: one local file per
    bundle (under :func:`spill_root`), the items back to back, each referred to by ``(path,
    offset, length)``. Two steps spill: ``DecodeFile`` (the chunks' decoded audio, across the
    reshuffle that spreads a file's chunks over the workers) and ``MakeExamples`` (the
    serialised examples, until their shard is written).

    A local runner holds a grouping in memory (Dataflow's shuffle does not): the shards are
    written after every example is made (a record's shard follows from its split's size), and
    the reshuffle holds a file's chunks until the file is decoded, so without the spill both
    would hold the whole input (an hour of audio is about 1 GB of examples and 0.3 GB of
    decoded chunks); with it they hold references and memory stays flat. A retried
    bundle writes a new file; what a failed bundle wrote is never referred to, and the whole
    spill folder goes when the job ends. A failed write fails the bundle (:meth:`check`), never
    just the example: the file's offsets would no longer be known.
    """

    def __init__(self, folder: str):
        self.folder = folder
        self._file = None
        self._broken: Exception | None = None

    def put(self, data: bytes) -> tuple[str, int, int]:
        self.check()
        try:
            if self._file is None:
                import uuid

                os.makedirs(self.folder, exist_ok=True)
                self._file = open(os.path.join(self.folder, f'{uuid.uuid4().hex}.bin'), 'wb')
            offset = self._file.tell()
            self._file.write(data)
        except Exception as e:
            self._broken = e
            raise
        return self._file.name, offset, len(data)

    def check(self) -> None:
        """Raise the error a write met (the bundle fails, and is retried or fails the job)."""
        if self._broken is not None:
            name = self._file.name if self._file is not None else self.folder
            raise OSError(f'writing the spill file {name} failed: '
                          f'{self._broken}') from self._broken

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()


class SpillReader:
    """Reads :class:`Spill` references, one open file per spill file (records sorted by key
    mostly come in the order they were written, so reads go forward)."""

    def __init__(self):
        self._files = {}

    def get(self, ref: tuple[str, int, int]) -> bytes:
        path, offset, length = ref
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = open(path, 'rb')  # a local file (spill_root)
        f.seek(offset)
        data = f.read(length)
        if len(data) != length:
            raise OSError(f'{path}: {length} bytes at offset {offset} expected, '
                          f'{len(data)} found (spill file damaged or removed while the job ran)')
        return data

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}


def spill_root(output_dir: str) -> str:
    """The local folder where a local runner's job spills the examples of ``output_dir``:
    ``OUTPUT_DIR/.spill``, or for a remote ``OUTPUT_DIR`` (``gs://...``) a folder of this
    machine's temporary directory named by it (the job's workers are this machine's
    processes; remote reads of the spill would cost a request per record)."""
    if '://' not in output_dir:
        return os.path.join(output_dir, SPILL_DIR)
    import tempfile

    name = hashlib.sha256(output_dir.rstrip('/').encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), 'ddsp-prepare-spill', name)


def remove_spill(output_dir: str) -> None:
    """Remove the spill folder of ``output_dir`` (this job's, or one a failed run left)."""
    import shutil

    shutil.rmtree(spill_root(output_dir), ignore_errors=True)


class _SpillingDoFn(beam.DoFn):
    """A DoFn whose bundles write one :class:`Spill` file each when ``spill_dir`` is set (local
    runners): opened lazily by the bundle's first write, closed, and its write errors raised,
    before the bundle's outputs (the references into it) are committed."""

    def __init__(self, spill_dir: str | None = None):
        self.spill_dir = spill_dir
        self._spill = None

    def start_bundle(self):
        self._close_spill()  # a bundle that failed before finish_bundle
        self._spill = Spill(self.spill_dir) if self.spill_dir else None

    def finish_bundle(self):
        if self._spill is not None:
            self._spill.check()  # a failed write fails the bundle, not one element
            self._spill.close()  # before the bundle's outputs (its references) are committed

    def teardown(self):
        self._close_spill()

    def _close_spill(self):
        if self._spill is not None:
            try:
                self._spill.close()
            except Exception:  # noqa: BLE001 - a failed bundle's file: never referred to
                pass
            self._spill = None


class SpilledAudio(NamedTuple):
    """A float32 audio segment in a :class:`Spill` file (``DecodeFile`` on a local runner)."""

    path: str
    offset: int
    length: int


class LoadChunkAudio(beam.DoFn):
    """Chunk dicts whose audio is :class:`SpilledAudio` -> the same chunks with the arrays read
    back (after the reshuffle, so that the runner's grouping held references, not an hour of
    decoded audio). A spill file that cannot be read fails the bundle."""

    def start_bundle(self):
        self._reader = SpillReader()

    def finish_bundle(self):
        self._reader.close()

    def teardown(self):
        if getattr(self, '_reader', None) is not None:
            self._reader.close()

    def process(self, chunk):
        loaded = dict(chunk)
        for name in ('audio', 'audio_16k'):
            if isinstance(chunk.get(name), SpilledAudio):
                loaded[name] = np.frombuffer(self._reader.get(chunk[name]), np.float32).copy()
        yield loaded


class DecodeFile(_SpillingDoFn):
    """(path, split_key) -> chunk dicts. Validates the whole file before emitting anything.
    Each chunk carries the file's split plan (:func:`pipelines.splitting.plan_file` by
    ``split_method``). With ``spill_dir`` (local runners) a chunk's audio waits in a
    :class:`Spill` file and the chunk carries :class:`SpilledAudio` references instead
    (:class:`LoadChunkAudio` reads them back after the job's reshuffle)."""

    def __init__(self, opts: PrepareOptions, split_method: str = splitting.FILE,
                 spill_dir: str | None = None):
        super().__init__(spill_dir)
        self.opts = opts
        self.split_method = split_method
        self.files = Metrics.counter(NAMESPACE, 'files_decoded')
        self.chunks = Metrics.counter(NAMESPACE, 'chunks')
        self.seconds = Metrics.distribution(NAMESPACE, 'file_ms')

    def process(self, element):
        path, key = element
        opts = self.opts
        info = audio_io.scan_audio(path, opts.min_secs)
        n = audio_io.resampled_length(info.n_samples, info.sample_rate, opts.sample_rate)
        plan = splitting.plan_file(key, n, opts, self.split_method)
        specs = chunking.plan_chunks(n, opts)
        rates, lengths, hops = [opts.sample_rate], [n], [opts.hop_samples]
        if opts.needs_16k:
            rates.append(CREPE_SAMPLE_RATE)
            lengths.append(audio_io.resampled_length(info.n_samples, info.sample_rate,
                                                     CREPE_SAMPLE_RATE))
            hops.append(opts.hop_16k)
        self.files.inc()
        self.seconds.update(int(info.seconds * 1000))
        blocks = audio_io.stream_resampled(path, tuple(rates))
        for spec, segs in chunking.iter_chunk_audio(blocks, tuple(lengths), tuple(hops), specs):
            self.chunks.inc()
            yield {'path': path, 'key': key, 'split': plan.split, 'plan': plan,
                   'n_samples': n, 'seconds': info.seconds,
                   'sha256': info.sha256, 'source_rate': info.sample_rate, 'spec': spec,
                   'audio': self._keep(segs[0]),
                   'audio_16k': self._keep(segs[1]) if len(segs) > 1 else None}

    def _keep(self, audio: np.ndarray):
        """The segment itself, or on a local runner a reference to it in this bundle's spill."""
        if self._spill is None:
            return audio
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        return SpilledAudio(*self._spill.put(audio.tobytes()))


class MakeExamples(_SpillingDoFn):
    """PredictionResult(chunk, activations) -> tagged outputs of
    :func:`pipelines.examples.chunk_examples`: 'records' ``(split, (sort_key, bytes))`` (with
    ``spill_dir``: ``(split, (sort_key, (path, offset, length)))``, the bytes in a
    :class:`Spill` file), 'stats' (per record), 'counts' ``(path, (examples, dropped, eval
    examples))`` per chunk, 'files' (one per file, from its first chunk) and 'precisions'
    ``(CREPE's number format as the worker resolved it, frames analysed)`` per chunk."""

    def __init__(self, opts: PrepareOptions, total_files: int = 0,
                 spill_dir: str | None = None):
        super().__init__(spill_dir)
        self.opts = opts
        self.total_files = total_files
        self.examples = Metrics.counter(NAMESPACE, 'examples')
        self.frames = Metrics.counter(NAMESPACE, 'frames')
        self.dropped = Metrics.counter(NAMESPACE, 'windows_dropped_silent')
        self.audio_ms = Metrics.counter(NAMESPACE, 'audio_ms_processed')

    def setup(self):
        from ddsp_core import runtime

        runtime.import_tensorflow()  # quietly, before the first record is serialised
        self._t0 = time.time()
        self._last = 0.0
        self._chunks = 0
        self._secs = 0.0

    def process(self, result):
        chunk = result.example
        made = examples.chunk_examples(chunk, result.inference, self.opts)
        for split, (key, data) in zip(made.record_splits, made.records, strict=True):
            if self._spill is not None:
                data = self._spill.put(data)
            yield beam.pvalue.TaggedOutput('records', (split, (key, data)))
        for record_stats in made.stats:
            yield beam.pvalue.TaggedOutput('stats', record_stats)
        yield beam.pvalue.TaggedOutput('counts', (chunk['path'], (
            len(made.records), made.n_dropped, made.record_splits.count('eval'))))
        if chunk['spec'].index == 0:
            yield beam.pvalue.TaggedOutput('files', examples.file_record(chunk, self.opts))
        yield beam.pvalue.TaggedOutput('precisions', (result_precision(result),
                                                      len(result.inference)))
        self.examples.inc(len(made.records))
        self.frames.inc(made.frames)
        self.dropped.inc(made.n_dropped)
        secs = made.frames / self.opts.frame_rate
        self.audio_ms.inc(int(secs * 1000))
        self._progress(secs)

    def _progress(self, secs):
        self._chunks += 1
        self._secs += secs
        now = time.time()
        if now - self._last >= PROGRESS_EVERY_SECS:
            self._last = now
            elapsed = max(now - self._t0, 1e-9)
            print(f'[ddsp-prepare pid {os.getpid()}] {self._chunks} chunks, '
                  f'{self._secs:.0f} audio-s in {elapsed:.0f} s '
                  f'({self._secs / elapsed:.2f} audio-s/s) of {self.total_files} files',
                  file=sys.stderr, flush=True)


class SplitStatsFn(beam.CombineFn):
    """Per-split statistics (:func:`pipelines.stats.merge_split_stats`)."""

    def create_accumulator(self):
        return {s: stats.empty_split_stats() for s in records.SPLITS}

    def add_input(self, acc, item):
        split = item['split']
        acc[split] = stats.merge_split_stats(acc[split],
                                             {k: v for k, v in item.items() if k != 'split'})
        return acc

    def merge_accumulators(self, accs):
        accs = list(accs)
        out = accs[0]
        for a in accs[1:]:
            out = {s: stats.merge_split_stats(out[s], a[s]) for s in records.SPLITS}
        return out

    def extract_output(self, acc):
        return acc


def shard_of(sort_key: tuple[str, str, int], n_shards: int) -> int:
    """The shard a record goes to: a hash of its file's split key and start frame (stable across
    runs and processes, and spreading each file's windows over the shards)."""
    key, _path, start = sort_key
    digest = hashlib.sha256(f'{key}\0{start}'.encode()).digest()
    return int.from_bytes(digest[:8], 'big') % n_shards


def assign_shard(item, shard_counts):
    split, (sort_key, data) = item
    n = shard_counts[split]
    return (split, shard_of(sort_key, n), n), (sort_key, data)


def empty_split_shard(split, split_counts):
    if split not in split_counts:  # no record at all: one empty shard, so the split's pattern
        yield (split, 0, 1), []  # still matches a file and readers see an empty split


class WriteShard(beam.DoFn):
    """((split, index, n_shards), records) -> one TFRecord file with the records sorted by key,
    written under a temporary name and renamed (a retried bundle rewrites it whole). ``None``
    items are placeholders that make every shard index appear (empty shards are written too).
    Yields ``(split, file name, n_records, {'bytes', 'sha256'})``: the size and digest of the
    bytes as they were written (:class:`ddsp_core.shards.DigestingWriter`, no second read)."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def process(self, element):
        from apache_beam.io.tfrecordio import _TFRecordUtil

        (split, index, n_shards), items = element
        items = sorted((kv for kv in items if kv is not None), key=lambda kv: kv[0])
        name = records.shard_name(split, index, n_shards)
        final = FileSystems.join(self.output_dir, name)
        tmp = FileSystems.join(self.output_dir, f'.tmp-{name}')
        spilled = SpillReader()
        try:
            with FileSystems.create(tmp, mime_type='application/octet-stream',
                                    compression_type='uncompressed') as f:
                out = shards.DigestingWriter(f)
                for _key, data in items:
                    if not isinstance(data, bytes):  # a Spill reference
                        data = spilled.get(data)
                    _TFRecordUtil.write_record(out, data)
        finally:
            spilled.close()
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([tmp], [final])
        yield split, name, len(items), out.entry()


def sum_pairs(pairs: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    """Element-wise sum of equal-length count tuples."""
    out: tuple[int, ...] = ()
    for item in pairs:
        out = tuple(a + b for a, b in zip(out, item, strict=True)) if out else tuple(item)
    return out or (0, 0, 0)


def silent_file_letter(item, opts: PrepareOptions):
    path, (n_examples, n_dropped, *_) = item
    if n_examples == 0:
        yield {'path': path, 'stage': 'windows', 'error': 'NoUsableWindows',
               'reason': f'{path}: all {n_dropped} windows are silent (loudest frame below '
                         f'--drop_silence_db {opts.drop_silence_db} dB)'}


def _write_text(path: str, text: str) -> None:
    """Write a file whole: locally under a temporary name renamed into place
    (:func:`ddsp_core.runtime.write_atomic`); object stores (``gs://``) publish an object only
    when it is complete."""
    if '://' not in path:
        from ddsp_core import runtime

        runtime.write_atomic(path, text)
        return
    with FileSystems.create(path, mime_type='application/json') as f:
        f.write(text.encode('utf-8'))


def finish(_, output_dir, opts, patterns, entries, file_records, split_stats, counts,
           dead_letters, written, split_method=None, precisions=()):
    """Write the ledger, the dead letters and (last) the manifest; remove shards of an earlier
    dataset in the same directory that this run did not rewrite."""
    counts = dict(counts)
    dead_letters = sorted(dead_letters, key=lambda d: (d['path'], d['stage'], d['reason']))
    ledger = manifest.build_ledger(entries, file_records, counts, dead_letters, opts)
    names_by_split: dict[str, list[str]] = {s: [] for s in records.SPLITS}
    shard_files = {}
    for split, name, _n, check in written:
        names_by_split[split].append(name)
        shard_files[name] = check
    result = manifest.build_manifest(opts, patterns, ledger, split_stats, names_by_split,
                                     len(dead_letters), split_method=split_method,
                                     shard_files=shard_files, crepe_frames=dict(precisions))
    keep = {n for names in names_by_split.values() for n in names}
    stale = [p for p in existing_shards(output_dir) if p.rsplit('/', 1)[-1] not in keep]
    if stale:
        FileSystems.delete(stale)
    remove_spill(output_dir)  # every shard is written: the examples' spill is no longer read
    _write_text(FileSystems.join(output_dir, records.LEDGER),
                ''.join(json.dumps(line, sort_keys=True) + '\n' for line in ledger))
    _write_text(FileSystems.join(output_dir, DEAD_LETTERS),
                ''.join(json.dumps(d, sort_keys=True) + '\n' for d in dead_letters))
    _write_text(FileSystems.join(output_dir, MANIFEST),
                json.dumps(result, indent=2, sort_keys=True) + '\n')
    yield result


def existing_shards(output_dir: str) -> list[str]:
    found = []
    for split in records.SPLITS:
        pattern = FileSystems.join(output_dir, f'{split}-*-of-*{records.SHARD_SUFFIX}')
        found.extend(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    return sorted(found)
