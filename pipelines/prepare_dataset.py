"""``ddsp-prepare``: recordings of one instrument -> training-ready TFRecords, on Apache Beam.

Runs locally on Beam's DirectRunner (multi-process, all cores, listening on loopback only) or on
Dataflow by adding pipeline options (``--runner DataflowRunner --project ... --region ...
--temp_location gs://... --setup_file ./setup.py``). See ``docs/prepare.md``.

Pipeline (each step a thin shell around a pure function of :mod:`pipelines.audio_io`,
:mod:`pipelines.chunking`, :mod:`pipelines.examples`, :mod:`pipelines.stats` or
:mod:`pipelines.manifest`)::

    files --DecodeFile--> chunks --Reshuffle--> RunInference(CREPE) --MakeExamples--> records
      |  (validate, split plan,                   (batched across      (f0 decode, loudness,
      |   stream-resample, cut chunks)             chunks and files)    windows, serialise)
      +--> dead letters (every stage, ``with_exception_handling``)
    records --assign shard (hash of file key and start)--> GroupByKey --WriteShard (sorted)-->
      train-*.tfrecord / eval-*.tfrecord        (byte-identical across runs)
    stats + counts + dead letters + shards --> files.jsonl, dead_letters.jsonl, manifest.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import soundfile as sf
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from ddsp_core import records, shards
from ddsp_core.f0 import CREPE_PRECISIONS, CREPE_SAMPLE_RATE, resolve_crepe_precision
from pipelines import audio_io, chunking, examples, manifest, runner, splitting, stats
from pipelines.crepe_inference import CrepeModelHandler, result_precision
from pipelines.inputs import FILE, InputEntry, expand_inputs
from pipelines.options import SPLIT_METHODS, OptionError, PrepareOptions, parse_db_or_none

log = logging.getLogger('ddsp-prepare')
NAMESPACE = 'ddsp_prepare'
MANIFEST = records.MANIFEST
DEAD_LETTERS = records.DEAD_LETTERS
PROGRESS_EVERY_SECS = 10.0
# Errors that mean "this file is unusable" at decode time: dead-lettered. Anything else there (a
# remote read error, which may be transient) fails the bundle so that the runner retries it.
DECODE_BAD_INPUT = (audio_io.BadInputError, sf.SoundFileError, ValueError)

__all__ = ['OptionError', 'PrepareError', 'PrepareOptions', 'build_pipeline', 'expand_inputs',
           'main', 'prepare_dataset']


class PrepareError(RuntimeError):
    """The pipeline ran but failed (exit code 1)."""


def _dead_letter(element: Any, error: Any, stage: str) -> dict:
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
class DecodeFile(beam.DoFn):
    """(path, split_key) -> chunk dicts. Validates the whole file before emitting anything.
    Each chunk carries the file's split plan (:func:`pipelines.splitting.plan_file` by
    ``split_method``)."""

    def __init__(self, opts: PrepareOptions, split_method: str = splitting.FILE):
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
                   'audio': segs[0], 'audio_16k': segs[1] if len(segs) > 1 else None}


class MakeExamples(beam.DoFn):
    """PredictionResult(chunk, activations) -> tagged outputs of
    :func:`pipelines.examples.chunk_examples`: 'records' ``(split, (sort_key, bytes))``,
    'stats' (per record), 'counts' ``(path, (examples, dropped, eval examples))`` per chunk,
    'files' (one per file, from its first chunk) and 'precisions' ``(CREPE's number format as
    the worker resolved it, frames analysed)`` per chunk."""

    def __init__(self, opts: PrepareOptions, total_files: int = 0):
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
        for split, record in zip(made.record_splits, made.records, strict=True):
            yield beam.pvalue.TaggedOutput('records', (split, record))
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


def _assign_shard(item, shard_counts):
    split, (sort_key, data) = item
    n = shard_counts[split]
    return (split, shard_of(sort_key, n), n), (sort_key, data)


def _empty_split_shard(split, split_counts):
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
        with FileSystems.create(tmp, mime_type='application/octet-stream',
                                compression_type='uncompressed') as f:
            out = shards.DigestingWriter(f)
            for _key, data in items:
                _TFRecordUtil.write_record(out, data)
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([tmp], [final])
        yield split, name, len(items), out.entry()


def _sum_pairs(pairs: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    """Element-wise sum of equal-length count tuples."""
    out: tuple[int, ...] = ()
    for item in pairs:
        out = tuple(a + b for a, b in zip(out, item, strict=True)) if out else tuple(item)
    return out or (0, 0, 0)


def _silent_file_letter(item, opts: PrepareOptions):
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


def _finish(_, output_dir, opts, patterns, entries, file_records, split_stats, counts,
            dead_letters, written, split_method=None, precisions=()):
    """Write the ledger, the dead letters and (last) the manifest; remove shards of an earlier
    dataset in the same directory that this run did not rewrite."""
    counts = dict(counts)
    dead_letters = sorted(dead_letters, key=lambda d: (d['path'], d['stage'], d['reason']))
    ledger = manifest.build_ledger(entries, file_records, counts, dead_letters, opts)
    shards: dict[str, list[str]] = {s: [] for s in records.SPLITS}
    shard_files = {}
    for split, name, _n, check in written:
        shards[split].append(name)
        shard_files[name] = check
    result = manifest.build_manifest(opts, patterns, ledger, split_stats, shards,
                                     len(dead_letters), split_method=split_method,
                                     shard_files=shard_files, crepe_frames=dict(precisions))
    keep = {n for names in shards.values() for n in names}
    stale = [p for p in _existing_shards(output_dir) if p.rsplit('/', 1)[-1] not in keep]
    if stale:
        FileSystems.delete(stale)
    _write_text(FileSystems.join(output_dir, records.LEDGER),
                ''.join(json.dumps(line, sort_keys=True) + '\n' for line in ledger))
    _write_text(FileSystems.join(output_dir, DEAD_LETTERS),
                ''.join(json.dumps(d, sort_keys=True) + '\n' for d in dead_letters))
    _write_text(FileSystems.join(output_dir, MANIFEST),
                json.dumps(result, indent=2, sort_keys=True) + '\n')
    yield result


def _existing_shards(output_dir: str) -> list[str]:
    found = []
    for split in records.SPLITS:
        pattern = FileSystems.join(output_dir, f'{split}-*-of-*{records.SHARD_SUFFIX}')
        found.extend(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    return sorted(found)


# ---- pipeline ----------------------------------------------------------------------------------
def build_pipeline(pipeline: beam.Pipeline, entries: Sequence[InputEntry], output_dir: str,
                   opts: PrepareOptions, inputs: Sequence[str]) -> None:
    """Add the prepare job to ``pipeline`` (``entries`` from :func:`expand_inputs`)."""
    files = [(e.path, e.key) for e in entries if e.kind == FILE]
    split_method = splitting.choose_method([key for _path, key in files], opts)
    dead = []
    decoded = (pipeline
               | 'Files' >> beam.Create(files)
               | 'Decode' >> beam.ParDo(DecodeFile(opts, split_method)).with_exception_handling(
                   partial=True, exc_class=DECODE_BAD_INPUT))
    dead.append(decoded.bad | 'DecodeDL' >> beam.MapTuple(
        lambda el, err: _dead_letter(el, err, 'decode')))
    chunks = decoded.good | 'Spread' >> beam.Reshuffle()

    handler = CrepeModelHandler(opts.crepe_capacity, opts.frame_rate, opts.inference_batch_size,
                                precision=opts.crepe_precision, crepe_rate=opts.crepe_rate)
    inferred, failed = (chunks
                        | 'CREPE' >> RunInference(handler).with_exception_handling())
    dead.append(failed.failed_inferences | 'CrepeDL' >> beam.FlatMapTuple(
        lambda batch, err: [_dead_letter(c, err, 'crepe') for c in batch]))

    made = inferred | 'Examples' >> beam.ParDo(MakeExamples(opts, len(files))).with_outputs(
        'records', 'stats', 'counts', 'files', 'precisions',
        main='main').with_exception_handling()
    dead.append(made.bad | 'ExamplesDL' >> beam.MapTuple(
        lambda el, err: _dead_letter(el, err, 'examples')))

    # Deterministic shards: the shard count follows from the split's size, each record's shard
    # from its key, and records are sorted inside their shard.
    layout = opts.layout
    split_counts = (made.records
                    | 'SplitOf' >> beam.Map(lambda item: (item[0], 1))
                    | 'CountSplits' >> beam.CombinePerKey(sum))
    shard_counts = split_counts | 'ShardCount' >> beam.MapTuple(
        lambda split, n: (split, opts.num_shards or records.auto_shard_count(n, layout)))
    keyed = made.records | 'AssignShard' >> beam.Map(_assign_shard,
                                                     beam.pvalue.AsDict(shard_counts))
    empty = (pipeline
             | 'Splits' >> beam.Create(list(records.SPLITS))
             | 'EmptySplits' >> beam.FlatMap(_empty_split_shard,
                                             beam.pvalue.AsDict(split_counts)))
    # One placeholder per shard index, so that a shard no record hashes to is still written
    # (empty): '-of-0000N' promises N files.
    every_shard = shard_counts | 'EveryShard' >> beam.FlatMapTuple(
        lambda split, n: [((split, i, n), None) for i in range(n)])
    grouped = ((keyed, every_shard)
               | 'WithEveryShard' >> beam.Flatten()
               | 'GroupShards' >> beam.GroupByKey())
    written = ((grouped, empty)
               | 'AllShards' >> beam.Flatten()
               | 'WriteShards' >> beam.ParDo(WriteShard(output_dir)))

    counts = made.counts | 'CountPerFile' >> beam.CombinePerKey(_sum_pairs)
    dead.append(counts | 'SilentDL' >> beam.FlatMap(_silent_file_letter, opts))
    dead_letters = tuple(dead) | 'AllDL' >> beam.Flatten()
    _ = dead_letters | 'CountDL' >> beam.Map(
        lambda d: Metrics.counter(NAMESPACE, 'dead_letters').inc())
    split_stats = made.stats | 'Stats' >> beam.CombineGlobally(SplitStatsFn())
    precisions = made.precisions | 'FramesPerPrecision' >> beam.CombinePerKey(sum)
    side = beam.pvalue
    _ = (pipeline
         | 'Once' >> beam.Create([None])
         | 'Manifest' >> beam.FlatMap(
             _finish, output_dir, opts, list(inputs), list(entries), side.AsList(made.files),
             side.AsSingleton(split_stats), side.AsList(counts), side.AsList(dead_letters),
             side.AsList(written), split_method, side.AsList(precisions)))


def _pipeline_options(pipeline_args: Optional[Sequence[str]]) -> PipelineOptions:
    args = list(pipeline_args or [])
    options = PipelineOptions(args)
    known = options.get_all_options(retain_unknown_options=False)
    everything = options.get_all_options(retain_unknown_options=True)
    unknown = sorted(set(everything) - set(known))
    if unknown:
        raise OptionError(f'unknown option(s) {", ".join("--" + u for u in unknown)} '
                          '(neither a ddsp-prepare flag nor a Beam pipeline option; see --help)')
    return PipelineOptions(runner.with_local_default(args))


def check_output_dir(output_dir: str, overwrite: bool) -> list[str]:
    """The dataset files already in ``output_dir``.

    Raises:
        OptionError: it holds a dataset (manifest, ledger or shards) and ``overwrite`` is off.
    """
    found = _existing_shards(output_dir)
    for name in (MANIFEST, records.LEDGER, DEAD_LETTERS):
        path = FileSystems.join(output_dir, name)
        if FileSystems.exists(path):
            found.append(path)
    if found and not overwrite:
        names = ', '.join(sorted(p.rsplit('/', 1)[-1] for p in found)[:4])
        more = f' and {len(found) - 4} more' if len(found) > 4 else ''
        raise OptionError(f'--output_dir {output_dir} already holds a dataset ({names}{more}); '
                          'pass --overwrite to replace it, or choose another directory')
    return found


def prepare_dataset(input_patterns: Sequence[str] | str, output_dir: str,
                    options: Optional[PrepareOptions] = None, *,
                    pipeline_args: Optional[Sequence[str]] = None, overwrite: bool = False,
                    **option_overrides) -> Optional[dict]:
    """Prepare a dataset directory from audio files.

    Args:
        input_patterns: file pattern(s) (any Beam FileSystems path; comma lists allowed).
        output_dir: where ``train-*.tfrecord``, ``eval-*.tfrecord``, ``manifest.json``,
            ``files.jsonl`` and ``dead_letters.jsonl`` go (local or ``gs://``).
        options: a :class:`PrepareOptions`; ``option_overrides`` (its field names) replace fields.
        pipeline_args: Beam pipeline options (e.g. ``['--runner=DataflowRunner', ...]``); default
            DirectRunner, multi-process, one worker per core.
        overwrite: replace a dataset already in ``output_dir`` (else that is an error).

    Returns:
        The manifest dict, or None when the runner only built the job (``--dry_run``).

    Raises:
        OptionError: bad options or inputs (message names the option or pattern).
        PrepareError: the pipeline failed.
    """
    if isinstance(input_patterns, str):
        input_patterns = [input_patterns]
    opts = dataclasses.replace(options or PrepareOptions(), **option_overrides).validate()
    # --crepe_precision auto is resolved by each worker for its own hardware (manifest: f0).
    entries = expand_inputs(input_patterns)
    beam_options = _pipeline_options(pipeline_args)
    if '://' not in output_dir:
        output_dir = os.path.abspath(output_dir)
        os.makedirs(output_dir, exist_ok=True)
    dry_run = beam_options.view_as(TestOptions).dry_run  # the job is built, nothing written
    existing = [] if dry_run else check_output_dir(output_dir, overwrite)
    manifest_path = FileSystems.join(output_dir, MANIFEST)
    if existing and FileSystems.exists(manifest_path):
        FileSystems.delete([manifest_path])  # the directory is not a valid dataset until done
    t0 = time.time()
    pipeline = beam.Pipeline(options=beam_options)
    build_pipeline(pipeline, entries, output_dir, opts, input_patterns)
    result = runner.run_and_wait(pipeline, error=PrepareError)
    if result is None:
        return None  # the runner only built the job (DataflowRunner --dry_run)
    _log_metrics(result)
    if not FileSystems.exists(manifest_path):
        raise PrepareError(f'the pipeline finished but wrote no {manifest_path}')
    with FileSystems.open(manifest_path) as f:
        out = json.loads(f.read().decode('utf-8'))
    out['_wall_secs'] = time.time() - t0
    return out


def _log_metrics(result) -> dict[str, Any]:
    """Log (and return) the job's ddsp_prepare counters, where the runner reports them."""
    from apache_beam.metrics.metric import MetricsFilter

    out: dict[str, Any] = {}
    try:
        metrics = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except Exception:  # noqa: BLE001 - some runners do not report metrics
        return out
    for counter in metrics.get('counters', []):
        out[counter.key.metric.name] = counter.committed
    for dist in metrics.get('distributions', []):
        out[dist.key.metric.name] = dist.committed.mean if dist.committed else None
    if out:
        log.info('metrics: %s', ', '.join(f'{k}={v}' for k, v in sorted(out.items())))
    return out


def _summary_lines(result: dict, output_dir: str) -> Iterable[str]:
    files = result['files']
    splits = result['splits']
    yield (f'ddsp-prepare: {result["examples"]} examples ({result["hours"]:.3f} h) from '
           f'{files["written"] + files["partially_written"]}/{files["in"]} files in '
           f'{result.get("_wall_secs", 0):.1f} s -> {output_dir}')
    for split in records.SPLITS:
        n = splits[split]['examples']
        shards = len(splits[split]['shards'])
        yield (f'  {split}: ' + (f'{n} examples, {splits[split]["files"]} files, {shards} '
                                 f'shard{"s" if shards != 1 else ""}' if n else
                                 'empty (0 examples)'))
    split = result.get('split')
    if split and split['method'] == splitting.SEGMENT:
        n = split['files_segmented']
        yield (f'  split by segment ({n} file{" holds" if n == 1 else "s hold"} out blocks): '
               f'{split["held_out_seconds"]:.1f} s held out, {split["guard_seconds"]:.1f} s of '
               f'guard in neither split')
    if result['dead_letters']:
        yield (f'  {result["dead_letters"]} dead letters ({files["dead_lettered"]} files '
               f'rejected, {files["partially_written"]} partly written): see '
               f'{DEAD_LETTERS}; every input is listed in {records.LEDGER}')
    if files.get('skipped_directories'):
        yield f'  {files["skipped_directories"]} directories skipped (listed in {records.LEDGER})'
    if not files['reconciled']:
        yield '  WARNING: the file counts do not reconcile; see manifest.json "files"'


# ---- CLI ---------------------------------------------------------------------------------------
def build_arg_parser() -> argparse.ArgumentParser:
    from ddsp_core import runtime

    d = PrepareOptions()
    p = argparse.ArgumentParser(
        prog='ddsp-prepare', allow_abbrev=False,
        formatter_class=runtime.HelpFormatter,
        description='Turn recordings of one instrument into a training-ready dataset directory '
                    '(train-*.tfrecord, eval-*.tfrecord, manifest.json, files.jsonl, '
                    'dead_letters.jsonl).',
        epilog='Any other option is passed to Beam. Local runs use the DirectRunner with one '
               'process per core. On Dataflow add: --runner DataflowRunner --project PROJECT '
               '--region REGION --temp_location gs://BUCKET/tmp --setup_file ./setup.py '
               '(needs apache-beam[gcp]: pip install -e ".[gcp]"). See docs/prepare.md.')
    p.add_argument('--input', action='append', metavar='PATTERN',
                   help='audio file pattern (local or gs://...; repeatable or comma list; a '
                        'directory means all files in it); any format libsndfile reads '
                        '(wav, flac, ogg, mp3...); required unless --verify')
    p.add_argument('--output_dir', help='dataset directory to write; required unless --verify')
    p.add_argument('--verify', metavar='DATASET_DIR',
                   help='only check a prepared dataset: every shard its manifest.json lists '
                        'exists with the recorded size and SHA-256 (each damaged shard is named, '
                        'with the byte offset of its first damaged record); exit 1 if one '
                        'differs')
    p.add_argument('--sample_rate', type=int, default=d.sample_rate,
                   help='sample rate of the audio feature (Hz); != 16000 adds audio_16k')
    p.add_argument('--frame_rate', type=int, default=d.frame_rate,
                   help='frames per second of f0/loudness (must divide 16000 and --sample_rate)')
    p.add_argument('--example_secs', type=float, default=d.example_secs,
                   help='example window length (s)')
    p.add_argument('--hop_secs', type=float, default=d.hop_secs,
                   help='step between windows (s)')
    p.add_argument('--chunk_secs', type=float, default=d.chunk_secs,
                   help='files are cut into chunks of this length for parallelism (s; multiple '
                        'of --hop_secs)')
    p.add_argument('--eval_fraction', type=float, default=d.eval_fraction,
                   help='fraction of the data held out in the eval split')
    p.add_argument('--split_by', default=d.split_by, choices=SPLIT_METHODS,
                   help='hold out whole files (by sha256 of their path), blocks of every file '
                        '(with a guard of one example window either side that neither split '
                        'uses), or auto: by file when there are enough files to come close to '
                        '--eval_fraction, else by segment (see docs/prepare.md)')
    p.add_argument('--split_seed', type=int, default=d.split_seed,
                   help='seed of the hash that places held-out blocks (--split_by segment)')
    p.add_argument('--crepe_capacity', default=d.crepe_capacity,
                   help='CREPE model size: tiny, small, medium, large, full')
    p.add_argument('--viterbi', action=argparse.BooleanOptionalAction, default=d.viterbi,
                   help='Viterbi-decode CREPE (per chunk)')
    p.add_argument('--inference_batch_size', type=int, default=d.inference_batch_size,
                   help='frames per CREPE model call')
    p.add_argument('--crepe_precision', default=d.crepe_precision, choices=CREPE_PRECISIONS,
                   help="CREPE's number format: auto is bfloat16 where the hardware has it (a CPU "
                        'with AVX-512 BF16/AMX under oneDNN, a GPU of compute capability >= 8.0; '
                        'decided by each worker for its own hardware), else float32; recorded '
                        "in the manifest's f0.precision ('mixed' if workers differed)")
    p.add_argument('--f0_hop_ms', type=float, default=d.f0_hop_ms, metavar='MS',
                   help='run CREPE every MS milliseconds (10: its native hop) and interpolate '
                        'f0 and confidence to --frame_rate: faster, at a small accuracy cost '
                        '(docs/prepare.md); default: every frame, as the reference')
    p.add_argument('--drop_silence_db', type=parse_db_or_none, default=d.drop_silence_db,
                   metavar='DB',
                   help='drop windows whose loudest frame is below this loudness (dB); '
                        '"none" keeps all')
    p.add_argument('--min_secs', type=float, default=d.min_secs,
                   help='files shorter than this are dead-lettered (s)')
    p.add_argument('--num_shards', type=int, default=d.num_shards,
                   # %(default)s spelled out: runtime.HelpFormatter takes a default of 0 for
                   # False (0 == False) and would leave it out
                   help='TFRecord shards per split; 0: about 128 MB of records per shard '
                        '(default: %(default)s)')
    p.add_argument('--reference_layout', action='store_true', default=d.reference_layout,
                   help='also write audio_16k at 16 kHz, as the reference ddsp library\'s '
                        'TFRecordProvider requires (doubles the audio on disk)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace a dataset already in --output_dir')
    p.add_argument('--verbose', action='store_true',
                   help="show TensorFlow's and Beam's own start-up and progress logs")
    return p


class _StderrHandler(logging.Handler):
    """Logs to whatever ``sys.stderr`` is at the time (survives redirection in tests); without
    ``--verbose`` it leaves out Beam's own messages (pipeline construction notes, worker
    start-up), which Beam logs on the root logger."""

    def __init__(self, verbose: bool = False):
        super().__init__()
        self.verbose = verbose

    def filter(self, record):
        return self.verbose or record.levelno >= logging.ERROR or (
            'apache_beam' not in record.pathname and not record.name.startswith('apache_beam'))

    def emit(self, record):
        try:
            print(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never fail the job
            self.handleError(record)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``ddsp-prepare``. Exit codes: 0 done, 1 failed, 2 bad usage."""
    from ddsp_core import runtime

    opened = runner.open_beam_cli(build_arg_parser(), argv, configure=False)
    if isinstance(opened, int):
        return opened
    args, beam_args = opened
    if args.verify:
        return verify_main(args.verify)
    missing = [flag for flag, value in (('--input', args.input),
                                        ('--output_dir', args.output_dir)) if not value]
    if missing:
        print(f'ddsp-prepare: error: the following arguments are required: {", ".join(missing)} '
              '(or --verify DATASET_DIR)', file=sys.stderr)
        return 2
    runtime.set_verbose(args.verbose)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler(args.verbose)
    handler.setFormatter(logging.Formatter('%(levelname)s %(name)s: %(message)s'))
    root.addHandler(handler)
    root.setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger('apache_beam').setLevel(logging.INFO if args.verbose else logging.ERROR)
    kwargs = {k: v for k, v in vars(args).items()
              if k not in ('input', 'output_dir', 'overwrite', 'verbose', 'verify')}
    try:
        opts = PrepareOptions(**kwargs).validate()
        precision = opts.crepe_precision
        if precision == 'auto':  # each worker decides; what this machine would
            precision = f'auto ({resolve_crepe_precision(precision)} here)'
        print(f'ddsp-prepare: {len(args.input)} pattern(s) -> {args.output_dir} '
              f'({opts.layout.describe()}; CREPE {opts.crepe_capacity} {precision}'
              f'{f" every {opts.f0_hop_ms:g} ms" if opts.f0_hop_ms else ""} on '
              f'{runner.describe_runner(beam_args)})', file=sys.stderr, flush=True)
        result = prepare_dataset(args.input, args.output_dir, opts, pipeline_args=beam_args,
                                 overwrite=args.overwrite)
    except OptionError as e:
        print(f'ddsp-prepare: error: {e}', file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - report any pipeline failure with exit code 1
        full = runtime.disk_full_message(e)
        if full:
            print(f'ddsp-prepare: failed: {full}; free some space and run again with '
                  '--overwrite', file=sys.stderr)
            return 1
        log.exception('pipeline failed')
        print(f'ddsp-prepare: failed: {type(e).__name__}: {e}', file=sys.stderr)
        return 1
    if result is None:
        print('ddsp-prepare: job built (not run)', file=sys.stderr)
        return 0
    for line in _summary_lines(result, args.output_dir):
        print(line, file=sys.stderr)
    return 0


def verify_main(directory: str) -> int:
    """``ddsp-prepare --verify DATASET_DIR``: check every shard against the manifest
    (:func:`ddsp_core.shards.verify_shards`); one line per damaged shard. Exit codes: 0 all
    match, 1 a shard is missing or differs, 2 no readable manifest there."""
    from ddsp_core import runtime

    runtime.import_tensorflow()
    try:
        found = records.read_manifest(directory)
    except records.LayoutError as e:
        print(f'ddsp-prepare: error: --verify {directory}: {e}', file=sys.stderr)
        return 2
    checked, problems = shards.verify_shards(found)
    for line in problems:
        print(f'ddsp-prepare: {line}', file=sys.stderr)
    recorded = sum(found.shard_file(p) is not None for p in checked)
    how = ('sizes and SHA-256 digests' if recorded == len(checked) else
           f'{recorded} by size and SHA-256, {len(checked) - recorded} (the manifest records no '
           'digest for them) by reading every record\'s checksum')
    if problems:
        print(f'ddsp-prepare: --verify {directory}: {len(problems)} of {len(checked)} shards '
              f'are missing or damaged ({how}); copy the dataset again or re-run ddsp-prepare',
              file=sys.stderr)
        return 1
    print(f'ddsp-prepare: --verify {directory}: all {len(checked)} shards match '
          f'{found.path} ({how})', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
