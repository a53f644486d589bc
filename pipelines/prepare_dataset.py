"""``ddsp-prepare``: recordings of one instrument -> training-ready TFRecords, on Apache Beam.

Runs locally on Beam's DirectRunner (multi-process, all cores, listening on loopback only) or on
Dataflow by adding pipeline options (``--runner DataflowRunner --project ... --region ...
--temp_location gs://... --setup_file ./setup.py``). See ``docs/prepare.md``.

This module assembles the job and is the command; its steps are in :mod:`pipelines.prepare_steps`
(each a thin shell around a pure function of :mod:`pipelines.audio_io`, :mod:`pipelines.chunking`,
:mod:`pipelines.examples`, :mod:`pipelines.stats` or :mod:`pipelines.manifest`)::

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
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
import uuid
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from ddsp_core import records, shards
from ddsp_core.f0 import CREPE_PRECISIONS, resolve_crepe_precision
from pipelines import prepare_steps as steps
from pipelines import runner, splitting
from pipelines.crepe_inference import CrepeModelHandler
from pipelines.inputs import FILE, InputEntry, expand_inputs
from pipelines.options import SPLIT_METHODS, OptionError, PrepareOptions, parse_db_or_none
from pipelines.prepare_steps import (
    DEAD_LETTERS,
    DECODE_BAD_INPUT,
    MANIFEST,
    NAMESPACE,
    DecodeFile,
    MakeExamples,
    SplitStatsFn,
    WriteShard,
)

log = logging.getLogger('ddsp-prepare')

__all__ = ['OptionError', 'PrepareError', 'PrepareOptions', 'build_pipeline', 'expand_inputs',
           'main', 'prepare_dataset']


class PrepareError(RuntimeError):
    """The pipeline ran but failed (exit code 1)."""


# ---- pipeline ----------------------------------------------------------------------------------
class _BeamTagWarningFilter(logging.Filter):
    """Drops Beam's "Tags ... requested in with_outputs() but not declared in type hints"
    warning, which ``ParDo.with_outputs(...).with_exception_handling()`` raises against itself
    (Beam 2.78: its exception-handling wrapper declares only its own 'bad' tag)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'requested in with_outputs() but not declared' not in record.getMessage()


@contextlib.contextmanager
def _without_beam_tag_warning():
    root, flt = logging.getLogger(), _BeamTagWarningFilter()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def build_pipeline(pipeline: beam.Pipeline, entries: Sequence[InputEntry], output_dir: str,
                   opts: PrepareOptions, inputs: Sequence[str]) -> None:
    """Add the prepare job to ``pipeline`` (``entries`` from :func:`expand_inputs`)."""
    files = [(e.path, e.key) for e in entries if e.kind == FILE]
    split_method = splitting.choose_method([key for _path, key in files], opts)
    dead = []
    # On a local runner the chunks' audio and then the examples wait in spill files (a fresh
    # folder for each job built), so that the runner's groupings (the reshuffle that spreads a
    # file's chunks, the shards) hold references, not the bytes (a local runner holds a grouping
    # in memory; Dataflow's shuffle does not).
    spill = (os.path.join(steps.spill_root(output_dir), uuid.uuid4().hex)
             if runner.is_local_runner(pipeline.options) else None)
    decoded = (pipeline
               | 'Files' >> beam.Create(files)
               | 'Decode' >> beam.ParDo(DecodeFile(opts, split_method, spill))
               .with_exception_handling(partial=True, exc_class=DECODE_BAD_INPUT))
    dead.append(decoded.bad | 'DecodeDL' >> beam.MapTuple(
        lambda el, err: steps.dead_letter(el, err, 'decode')))
    chunks = decoded.good | 'Spread' >> beam.Reshuffle()
    if spill:
        chunks = chunks | 'Unspill' >> beam.ParDo(steps.LoadChunkAudio())

    handler = CrepeModelHandler(opts.crepe_capacity, opts.frame_rate, opts.inference_batch_size,
                                precision=opts.crepe_precision, crepe_rate=opts.crepe_rate)
    inferred, failed = (chunks
                        | 'CREPE' >> RunInference(handler).with_exception_handling())
    dead.append(failed.failed_inferences | 'CrepeDL' >> beam.FlatMapTuple(
        lambda batch, err: [steps.dead_letter(c, err, 'crepe') for c in batch]))

    with _without_beam_tag_warning():
        made = inferred | 'Examples' >> beam.ParDo(
            MakeExamples(opts, len(files), spill)).with_outputs(
                'records', 'stats', 'counts', 'files', 'precisions',
                main='main').with_exception_handling()
    dead.append(made.bad | 'ExamplesDL' >> beam.MapTuple(
        lambda el, err: steps.dead_letter(el, err, 'examples')))

    # Deterministic shards: the shard count follows from the split's size, each record's shard
    # from its key, and records are sorted inside their shard.
    layout = opts.layout
    split_counts = (made.records
                    | 'SplitOf' >> beam.Map(lambda item: (item[0], 1))
                    | 'CountSplits' >> beam.CombinePerKey(sum))
    shard_counts = split_counts | 'ShardCount' >> beam.MapTuple(
        lambda split, n: (split, opts.num_shards or records.auto_shard_count(n, layout)))
    keyed = made.records | 'AssignShard' >> beam.Map(steps.assign_shard,
                                                     beam.pvalue.AsDict(shard_counts))
    empty = (pipeline
             | 'Splits' >> beam.Create(list(records.SPLITS))
             | 'EmptySplits' >> beam.FlatMap(steps.empty_split_shard,
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

    counts = made.counts | 'CountPerFile' >> beam.CombinePerKey(steps.sum_pairs)
    dead.append(counts | 'SilentDL' >> beam.FlatMap(steps.silent_file_letter, opts))
    dead_letters = tuple(dead) | 'AllDL' >> beam.Flatten()
    _ = dead_letters | 'CountDL' >> beam.Map(
        lambda d: Metrics.counter(NAMESPACE, 'dead_letters').inc())
    split_stats = made.stats | 'Stats' >> beam.CombineGlobally(SplitStatsFn())
    precisions = made.precisions | 'FramesPerPrecision' >> beam.CombinePerKey(sum)
    side = beam.pvalue
    _ = (pipeline
         | 'Once' >> beam.Create([None])
         | 'Manifest' >> beam.FlatMap(
             steps.finish, output_dir, opts, list(inputs), list(entries), side.AsList(made.files),
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
    found = steps.existing_shards(output_dir)
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

    local = runner.is_local_runner(beam_options) and not dry_run

    def build():  # again for each attempt (a job whose worker died is run again, whole)
        if local:
            steps.remove_spill(output_dir)  # a failed attempt's (its job has ended)
        pipeline = beam.Pipeline(options=beam_options)
        build_pipeline(pipeline, entries, output_dir, opts, input_patterns)
        return pipeline

    try:
        result = runner.run_and_wait(build, error=PrepareError)
    finally:  # the job's own last step removes it; this covers a local job that failed
        if local:
            steps.remove_spill(output_dir)
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
    p = runtime.command_parser(
        'ddsp-prepare',
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
        return runtime.usage_error('ddsp-prepare', 'the following arguments are required: '
                                                   f'{", ".join(missing)} (or --verify '
                                                   'DATASET_DIR)')
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
        return runtime.usage_error('ddsp-prepare', e)
    except PrepareError as e:  # the job failed (its own message says how)
        print(f'ddsp-prepare: failed: {e}', file=sys.stderr)
        return runtime.EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - report any pipeline failure with exit code 1
        return runtime.failure('ddsp-prepare', e, log=log, what='pipeline',
                               hint='free some space and run again with --overwrite')
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
        return runtime.usage_error('ddsp-prepare', f'--verify {directory}: {e}')
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
