"""``ddsp-prepare``: recordings of one instrument -> training-ready TFRecords, on Apache Beam.

Runs locally on Beam's DirectRunner (multi-process, all cores) or on Dataflow by adding pipeline
options (``--runner DataflowRunner --project ... --region ... --temp_location gs://...
--setup_file ./setup.py``). See ``docs/prepare.md``.

Pipeline (each step a thin DoFn around :mod:`pipelines.audio_io` / :mod:`pipelines.features`)::

    files --DecodeFile--> chunks --Reshuffle--> RunInference(CREPE) --MakeExamples--> examples
      |  (validate, split by path hash,                (batched across     (loudness, f0 decode,
      |   stream-resample, cut chunks)                  chunks and files)   windows, serialise)
      +--> dead letters (every stage, ``with_exception_handling``) --> dead_letters.jsonl
    examples --> train-*.tfrecord / eval-*.tfrecord;  stats + counts --> manifest.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
import soundfile as sf
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from pipelines import audio_io, features
from pipelines.crepe_inference import CrepeModelHandler, decode_chunk
from pipelines.features import OptionError, PrepareOptions

log = logging.getLogger('ddsp-prepare')
NAMESPACE = 'ddsp_prepare'
MANIFEST = 'manifest.json'
DEAD_LETTERS = 'dead_letters.jsonl'
PROGRESS_EVERY_SECS = 10.0
# Errors that mean "this file is unusable" at decode time: dead-lettered. Anything else there (a
# remote read error, which may be transient) fails the bundle so that the runner retries it.
DECODE_BAD_INPUT = (audio_io.BadInputError, sf.SoundFileError, ValueError)


class PrepareError(RuntimeError):
    """The pipeline ran but failed (exit code 1)."""


# ---- inputs ------------------------------------------------------------------------------------
def expand_inputs(patterns: Sequence[str]) -> list[tuple[str, str]]:
    """Match file patterns (any Beam FileSystems path; comma lists allowed).

    Returns:
        Sorted, de-duplicated ``(path, split_key)`` pairs.

    Raises:
        OptionError: a pattern matches nothing (named in the message).
    """
    found: dict[str, str] = {}
    flat = [p.strip() for item in patterns for p in str(item).split(',') if p.strip()]
    if not flat:
        raise OptionError('--input: no file pattern given')
    for pattern in flat:
        if '://' not in pattern and os.path.isdir(pattern):
            pattern = os.path.join(pattern, '*')
        base = features.pattern_base(pattern)
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as e:  # noqa: BLE001 - Beam raises various errors for bad patterns
            raise OptionError(f'--input {pattern!r}: cannot list files ({e})') from e
        paths = sorted(m.path for m in matched if not m.path.endswith('/'))
        if not paths:
            raise OptionError(f'--input {pattern!r}: no files match this pattern')
        for path in paths:
            found.setdefault(path, features.split_key(path, base))
    return sorted(found.items())


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
    """(path, split_key) -> chunk dicts. Validates the whole file before emitting anything."""

    def __init__(self, opts: PrepareOptions):
        self.opts = opts
        self.files = Metrics.counter(NAMESPACE, 'files_decoded')
        self.chunks = Metrics.counter(NAMESPACE, 'chunks')
        self.seconds = Metrics.distribution(NAMESPACE, 'file_ms')

    def process(self, element):
        path, key = element
        opts = self.opts
        info = audio_io.scan_audio(path, opts.min_secs)
        split = features.assign_split(key, opts.eval_fraction)
        n = audio_io.resampled_length(info.n_samples, info.sample_rate, opts.sample_rate)
        specs = features.plan_chunks(n, opts)
        rates, lengths, hops = [opts.sample_rate], [n], [opts.hop_samples]
        if opts.with_audio_16k:
            rates.append(features.CREPE_SAMPLE_RATE)
            lengths.append(audio_io.resampled_length(info.n_samples, info.sample_rate,
                                                     features.CREPE_SAMPLE_RATE))
            hops.append(opts.hop_16k)
        self.files.inc()
        self.seconds.update(int(info.seconds * 1000))
        blocks = audio_io.stream_resampled(path, tuple(rates))
        for spec, segs in features.iter_chunk_audio(blocks, tuple(lengths), tuple(hops), specs):
            self.chunks.inc()
            yield {'path': path, 'key': key, 'split': split, 'seconds': info.seconds,
                   'sha256': info.sha256, 'source_rate': info.sample_rate, 'spec': spec,
                   'audio': segs[0], 'audio_16k': segs[1] if len(segs) > 1 else None}


class MakeExamples(beam.DoFn):
    """PredictionResult(chunk, activations) -> serialised examples (tagged 'train'/'eval'), plus
    'stats' (per-example statistics) and 'counts' ((path, (examples, dropped)) per chunk)."""

    def __init__(self, opts: PrepareOptions, total_files: int = 0):
        self.opts = opts
        self.total_files = total_files
        self.examples = Metrics.counter(NAMESPACE, 'examples')
        self.frames = Metrics.counter(NAMESPACE, 'frames')
        self.dropped = Metrics.counter(NAMESPACE, 'windows_dropped_silent')
        self.audio_ms = Metrics.counter(NAMESPACE, 'audio_ms_processed')

    def setup(self):
        self._t0 = time.time()
        self._last = 0.0
        self._chunks = 0
        self._secs = 0.0

    def process(self, result):
        from ddsp_core.spectral_ops import compute_loudness

        opts = self.opts
        chunk, activations = result.example, np.asarray(result.inference)
        spec = chunk['spec']
        f0, conf = decode_chunk(activations, opts.viterbi)
        loud = compute_loudness(chunk['audio'], sample_rate=opts.sample_rate,
                                frame_rate=opts.frame_rate, n_fft=opts.loudness_n_fft,
                                use_tf=False, padding='center')
        loud = np.asarray(loud, np.float32).reshape(-1)
        f0, conf, loud = (features.interior(x, spec) for x in (f0, conf, loud))
        windows, dropped = features.make_windows(spec, chunk['audio'], chunk['audio_16k'], f0,
                                                 conf, loud, opts)
        outputs = []
        for start, ex in windows:
            outputs.append(beam.pvalue.TaggedOutput(chunk['split'],
                                                    features.serialize_example(ex)))
            outputs.append(beam.pvalue.TaggedOutput(
                'stats', features.example_stats(chunk['split'], chunk['key'], start, ex)))
        outputs.append(beam.pvalue.TaggedOutput('counts', (chunk['path'], (len(windows), dropped))))
        if spec.index == 0:
            outputs.append(beam.pvalue.TaggedOutput('files', {
                'path': chunk['path'], 'key': chunk['key'], 'split': chunk['split'],
                'seconds': chunk['seconds'], 'sha256': chunk['sha256']}))
        self.examples.inc(len(windows))
        self.frames.inc(spec.end_frame - spec.first_frame)
        self.dropped.inc(dropped)
        secs = (spec.end_frame - spec.first_frame) / opts.frame_rate
        self.audio_ms.inc(int(secs * 1000))
        self._progress(secs)
        yield from outputs

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
    """Per-split statistics (:func:`pipelines.features.merge_split_stats`)."""

    def create_accumulator(self):
        return {s: features.empty_split_stats() for s in features.SPLITS}

    def add_input(self, acc, stats):
        acc[stats['split']] = features.merge_split_stats(
            acc[stats['split']], {k: v for k, v in stats.items() if k != 'split'})
        return acc

    def merge_accumulators(self, accs):
        accs = list(accs)
        out = accs[0]
        for a in accs[1:]:
            out = {s: features.merge_split_stats(out[s], a[s]) for s in features.SPLITS}
        return out

    def extract_output(self, acc):
        return acc


def _sum_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    a = b = 0
    for x, y in pairs:
        a += x
        b += y
    return a, b


def _silent_file_letter(item, opts: PrepareOptions):
    path, (n_examples, n_dropped) = item
    if n_examples == 0:
        yield {'path': path, 'stage': 'windows', 'error': 'NoUsableWindows',
               'reason': f'{path}: all {n_dropped} windows are silent (loudest frame below '
                         f'--drop_silence_db {opts.drop_silence_db} dB)'}


def _write_manifest(_, output_dir, opts, inputs, n_files_in, file_records, split_stats, counts,
                    dead_letters, train_shards, eval_shards):
    counts = dict(counts)
    manifest = features.build_manifest(
        opts, inputs, n_files_in, list(file_records), split_stats,
        {p: c[0] for p, c in counts.items()}, list(dead_letters),
        {'train': list(train_shards), 'eval': list(eval_shards)},
        sum(c[1] for c in counts.values()))
    path = FileSystems.join(output_dir, MANIFEST)
    with FileSystems.create(path) as f:
        f.write((json.dumps(manifest, indent=2, sort_keys=True) + '\n').encode('utf-8'))
    yield manifest


# ---- pipeline ----------------------------------------------------------------------------------
def local_worker_threads(options: PipelineOptions) -> Optional[int]:
    """TensorFlow threads per worker for a multi-process DirectRunner (cores / workers), so that
    the workers' CREPE calls do not oversubscribe the cores; None for other runners."""
    from apache_beam.options.pipeline_options import DirectOptions

    runner = options.view_as(StandardOptions).runner
    direct = options.view_as(DirectOptions)
    if runner not in ('DirectRunner', 'BundleBasedDirectRunner', 'FnApiRunner') or \
            direct.direct_running_mode != 'multi_processing':
        return None
    cores = os.cpu_count() or 1
    workers = direct.direct_num_workers or cores
    return max(1, cores // workers)


def build_pipeline(pipeline: beam.Pipeline, files: list[tuple[str, str]], output_dir: str,
                   opts: PrepareOptions, inputs: Sequence[str]) -> None:
    """Add the prepare job to ``pipeline`` (``files`` from :func:`expand_inputs`)."""
    dead = []
    decoded = (pipeline
               | 'Files' >> beam.Create(files)
               | 'Decode' >> beam.ParDo(DecodeFile(opts)).with_exception_handling(
                   partial=True, exc_class=DECODE_BAD_INPUT))
    dead.append(decoded.bad | 'DecodeDL' >> beam.MapTuple(
        lambda el, err: _dead_letter(el, err, 'decode')))
    chunks = decoded.good | 'Spread' >> beam.Reshuffle()

    handler = CrepeModelHandler(opts.crepe_capacity, opts.frame_rate, opts.inference_batch_size,
                                intra_op_threads=local_worker_threads(pipeline.options))
    inferred, failed = (chunks
                        | 'CREPE' >> RunInference(handler).with_exception_handling())
    dead.append(failed.failed_inferences | 'CrepeDL' >> beam.FlatMapTuple(
        lambda batch, err: [_dead_letter(c, err, 'crepe') for c in batch]))

    made = inferred | 'Examples' >> beam.ParDo(MakeExamples(opts, len(files))).with_outputs(
        'train', 'eval', 'stats', 'counts', 'files', main='main').with_exception_handling()
    dead.append(made.bad | 'ExamplesDL' >> beam.MapTuple(
        lambda el, err: _dead_letter(el, err, 'examples')))

    shards = {}
    for split in features.SPLITS:
        shards[split] = getattr(made, split) | f'Write{split}' >> beam.io.WriteToTFRecord(
            FileSystems.join(output_dir, split), file_name_suffix='.tfrecord',
            num_shards=opts.num_shards)
    counts = made.counts | 'CountPerFile' >> beam.CombinePerKey(_sum_pairs)
    dead.append(counts | 'SilentDL' >> beam.FlatMap(_silent_file_letter, opts))
    dead_letters = tuple(dead) | 'AllDL' >> beam.Flatten()
    _ = (dead_letters
         | 'DLJson' >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
         | 'WriteDL' >> beam.io.WriteToText(FileSystems.join(output_dir, 'dead_letters'),
                                            file_name_suffix='.jsonl', num_shards=1,
                                            shard_name_template=''))
    _ = dead_letters | 'CountDL' >> beam.Map(
        lambda d: Metrics.counter(NAMESPACE, 'dead_letters').inc())
    stats = made.stats | 'Stats' >> beam.CombineGlobally(SplitStatsFn())
    side = beam.pvalue
    _ = (pipeline
         | 'Once' >> beam.Create([None])
         | 'Manifest' >> beam.FlatMap(
             _write_manifest, output_dir, opts, list(inputs), len(files),
             side.AsList(made.files), side.AsSingleton(stats), side.AsList(counts),
             side.AsList(dead_letters), side.AsList(shards['train']),
             side.AsList(shards['eval'])))


def _pipeline_options(pipeline_args: Optional[Sequence[str]]) -> PipelineOptions:
    args = list(pipeline_args or [])
    options = PipelineOptions(args)
    known = options.get_all_options(retain_unknown_options=False)
    everything = options.get_all_options(retain_unknown_options=True)
    unknown = sorted(set(everything) - set(known))
    if unknown:
        raise OptionError(f'unknown option(s) {", ".join("--" + u for u in unknown)} '
                          '(neither a ddsp-prepare flag nor a Beam pipeline option; see --help)')
    std = options.view_as(StandardOptions)
    if std.runner is None:
        # Local default: Beam's DirectRunner, one process per core.
        extra = ['--runner=DirectRunner', '--direct_running_mode=multi_processing']
        if not any(a.startswith('--direct_num_workers') for a in args):
            extra.append('--direct_num_workers=0')
        options = PipelineOptions(args + extra)
    return options


def prepare_dataset(input_patterns: Sequence[str] | str, output_dir: str,
                    options: Optional[PrepareOptions] = None, *,
                    pipeline_args: Optional[Sequence[str]] = None, **option_overrides
                    ) -> Optional[dict]:
    """Prepare a dataset directory from audio files.

    Args:
        input_patterns: file pattern(s) (any Beam FileSystems path; comma lists allowed).
        output_dir: where ``train-*.tfrecord``, ``eval-*.tfrecord``, ``manifest.json`` and
            ``dead_letters.jsonl`` go (local or ``gs://``).
        options: a :class:`PrepareOptions`; ``option_overrides`` (its field names) replace fields.
        pipeline_args: Beam pipeline options (e.g. ``['--runner=DataflowRunner', ...]``); default
            DirectRunner, multi-process, one worker per core.

    Returns:
        The manifest dict, or None when the runner only built the job (``--dry_run``).

    Raises:
        OptionError: bad options or inputs (message names the option or pattern).
        PrepareError: the pipeline failed.
    """
    import dataclasses

    if isinstance(input_patterns, str):
        input_patterns = [input_patterns]
    opts = dataclasses.replace(options or PrepareOptions(), **option_overrides).validate()
    files = expand_inputs(input_patterns)
    beam_options = _pipeline_options(pipeline_args)
    if '://' not in output_dir:
        output_dir = os.path.abspath(output_dir)
        os.makedirs(output_dir, exist_ok=True)
    t0 = time.time()
    pipeline = beam.Pipeline(options=beam_options)
    build_pipeline(pipeline, files, output_dir, opts, input_patterns)
    result = pipeline.run()
    if result is None or beam_options.view_as(TestOptions).dry_run:
        return None  # the runner only built the job (DataflowRunner --dry_run)
    state = result.wait_until_finish()
    if str(state) not in ('DONE', 'PipelineState.DONE'):
        raise PrepareError(f'pipeline finished in state {state}')
    _log_metrics(result)
    manifest_path = FileSystems.join(output_dir, MANIFEST)
    if not FileSystems.exists(manifest_path):
        raise PrepareError(f'the pipeline finished but wrote no {manifest_path}')
    with FileSystems.open(manifest_path) as f:
        manifest = json.loads(f.read().decode('utf-8'))
    manifest['_wall_secs'] = time.time() - t0
    return manifest


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


# ---- CLI ---------------------------------------------------------------------------------------
def build_arg_parser() -> argparse.ArgumentParser:
    d = PrepareOptions()
    p = argparse.ArgumentParser(
        prog='ddsp-prepare', allow_abbrev=False,
        description='Turn recordings of one instrument into training-ready TFRecords '
                    '(train-*.tfrecord, eval-*.tfrecord, manifest.json, dead_letters.jsonl).',
        epilog='Any other option is passed to Beam. Local runs use the DirectRunner with one '
               'process per core. On Dataflow add: --runner DataflowRunner --project PROJECT '
               '--region REGION --temp_location gs://BUCKET/tmp --setup_file ./setup.py '
               '(needs apache-beam[gcp]: pip install -e ".[gcp]"). See docs/prepare.md.')
    p.add_argument('--input', action='append', required=True, metavar='PATTERN',
                   help='audio file pattern (local or gs://...; repeatable or comma list); '
                        'wav/flac/ogg/mp3')
    p.add_argument('--output_dir', required=True, help='dataset directory to write')
    p.add_argument('--sample_rate', type=int, default=d.sample_rate,
                   help='sample rate of the audio feature (Hz); != 16000 adds audio_16k')
    p.add_argument('--frame_rate', type=int, default=d.frame_rate,
                   help='frames per second of f0/loudness (must divide 16000)')
    p.add_argument('--example_secs', type=float, default=d.example_secs,
                   help='example window length (s)')
    p.add_argument('--hop_secs', type=float, default=d.hop_secs,
                   help='step between windows (s)')
    p.add_argument('--chunk_secs', type=float, default=d.chunk_secs,
                   help='files are cut into chunks of this length for parallelism (s; multiple '
                        'of --hop_secs)')
    p.add_argument('--eval_fraction', type=float, default=d.eval_fraction,
                   help='fraction of files (by sha256 of their path) in the eval split')
    p.add_argument('--crepe_capacity', default=d.crepe_capacity,
                   help='CREPE model size: tiny, small, medium, large, full')
    p.add_argument('--viterbi', action=argparse.BooleanOptionalAction, default=d.viterbi,
                   help='Viterbi-decode CREPE (per chunk)')
    p.add_argument('--inference_batch_size', type=int, default=d.inference_batch_size,
                   help='frames per CREPE model call')
    p.add_argument('--drop_silence_db', type=lambda s: None if s.lower() == 'none' else float(s),
                   default=d.drop_silence_db,
                   help='drop windows whose loudest frame is below this loudness (dB); '
                        '"none" keeps all')
    p.add_argument('--min_secs', type=float, default=d.min_secs,
                   help='files shorter than this are dead-lettered (s)')
    p.add_argument('--num_shards', type=int, default=d.num_shards,
                   help='TFRecord shards per split (0: runner decides)')
    return p


class _StderrHandler(logging.Handler):
    """Logs to whatever ``sys.stderr`` is at the time (survives redirection in tests)."""

    def emit(self, record):
        try:
            print(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never fail the job
            self.handleError(record)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``ddsp-prepare``. Exit codes: 0 done, 1 failed, 2 bad usage."""
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter('%(levelname)s %(name)s: %(message)s'))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger('apache_beam').setLevel(logging.WARNING)
    parser = build_arg_parser()
    try:
        args, beam_args = parser.parse_known_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    kwargs = {k: v for k, v in vars(args).items() if k not in ('input', 'output_dir')}
    try:
        opts = PrepareOptions(**kwargs).validate()
        manifest = prepare_dataset(args.input, args.output_dir, opts, pipeline_args=beam_args)
    except OptionError as e:
        print(f'ddsp-prepare: error: {e}', file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - report any pipeline failure with exit code 1
        log.exception('pipeline failed')
        print(f'ddsp-prepare: failed: {type(e).__name__}: {e}', file=sys.stderr)
        return 1
    if manifest is None:
        print('ddsp-prepare: job built (not run)', file=sys.stderr)
        return 0
    files = manifest['files']
    print(f'ddsp-prepare: {manifest["examples"]} examples ({manifest["hours"]:.3f} h) from '
          f'{files["written"]}/{files["in"]} files in {manifest.get("_wall_secs", 0):.1f} s; '
          f'train {manifest["splits"]["train"]["examples"]}, '
          f'eval {manifest["splits"]["eval"]["examples"]}; '
          f'{manifest["dead_letters"]} dead letters -> {args.output_dir}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
