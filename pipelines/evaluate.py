"""``ddsp-eval``: how good is a trained model's resynthesis of a dataset split?

Locally it evaluates in this process (:func:`trainer.evaluation.evaluate.evaluate`); with a Beam
runner (``--runner DirectRunner`` for local worker processes, ``--runner DataflowRunner ...``) the
same evaluation function (:func:`trainer.evaluation.evaluate.evaluate_batch`) runs over the shards
in parallel, the model loaded once per worker by a RunInference model handler::

    shards --ReadShard--> (id, example) --Reshuffle--> RunInference(model + CREPE) --> rows
    rows --> examples.jsonl;  rows --> aggregate --> aggregate.json

Either way it prints a table, writes ``examples.jsonl`` / ``aggregate.json`` and the best and
worst examples' audio and spectrograms to ``--out``, and logs ``eval/*`` metrics and those files
to the model's MLflow run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from ddsp_core.f0 import CREPE_PRECISIONS, resolve_crepe_precision

log = logging.getLogger('ddsp-eval')


class EvaluationModelHandler(ModelHandler[tuple, PredictionResult, Any]):
    """RunInference handler: ``(id, example)`` -> PredictionResult(id, metrics row), the model
    (:class:`trainer.serving.inference.TrainedModel`) loaded once per worker.

    Args:
        model: a model directory or ``runs:/RUN_ID``.
        example_secs: the records' length (the model is built for it).
        crepe_capacity: CREPE model for the resynthesis' pitch.
        batch_size: examples per model call.
        tracking_uri: for ``runs:/`` models.
        crepe_precision: CREPE's number format ('float32', 'bfloat16'; 'auto' resolves on the
            worker).
    """

    def __init__(self, model: str, example_secs: float, crepe_capacity: str,
                 batch_size: int = 8, tracking_uri: Optional[str] = None,
                 crepe_precision: str = 'float32'):
        super().__init__(min_batch_size=1, max_batch_size=batch_size)
        self.model_spec = model
        self.example_secs = example_secs
        self.crepe_capacity = crepe_capacity
        self.tracking_uri = tracking_uri
        self.crepe_precision = crepe_precision

    def load_model(self):
        from ddsp_core import runtime
        from pipelines.runner import claim_worker_gpus
        from trainer.serving.inference import TrainedModel

        claim_worker_gpus()  # a local worker's own GPU(s), before TensorFlow starts
        runtime.import_tensorflow()
        from ddsp_core.f0 import resolve_crepe_precision

        # 'auto' for this worker's hardware, once (not for every batch)
        self.crepe_precision = resolve_crepe_precision(self.crepe_precision)
        return TrainedModel.load(self.model_spec, self.example_secs, self.tracking_uri)

    def run_inference(self, batch: Sequence[tuple], model: Any,
                      inference_args: Optional[dict[str, Any]] = None
                      ) -> Iterable[PredictionResult]:
        import numpy as np

        from ddsp_core import records
        from trainer.evaluation.evaluate import evaluate_batch

        if not batch:
            return []
        ids = [key for key, _ in batch]
        stacked = {k: np.stack([ex[k] for _, ex in batch]) for k in records.REQUIRED_FEATURES}
        rows = evaluate_batch(model, stacked, ids, self.crepe_capacity,
                              crepe_precision=self.crepe_precision)
        return [PredictionResult(key, row) for key, row in zip(ids, rows, strict=True)]

    def get_metrics_namespace(self) -> str:
        return 'ddsp_eval'


def _read_shard(path: str, layout):
    from trainer.evaluation.evaluate import iter_records

    yield from iter_records([path], layout)


def _write_aggregate(rows, out_dir: str, step: int, split: Optional[str]):
    from trainer.evaluation import evaluate as evaluation
    from trainer.evaluation import metrics

    rows = sorted(rows, key=lambda r: r['id'])
    aggregate = metrics.aggregate(rows)
    summary = evaluation.EvaluationResult(rows, aggregate, None, None, step, split,
                                          crepe_precision=evaluation.precision_of(rows))
    with FileSystems.create(FileSystems.join(out_dir, 'aggregate.json')) as f:
        f.write(evaluation.summary_json(summary).encode())
    with FileSystems.create(FileSystems.join(out_dir, 'examples.jsonl')) as f:
        for row in rows:
            f.write((json.dumps(row, sort_keys=True, default=float) + '\n').encode())
    yield aggregate


def build_pipeline(pipeline: beam.Pipeline, model: str, source, out_dir: str,
                   crepe_capacity: str, step: int, batch_size: int = 8,
                   tracking_uri: Optional[str] = None, crepe_precision: str = 'float32') -> None:
    """Add the evaluation job (every shard of ``source``) to ``pipeline``."""
    layout = source.layout
    handler = EvaluationModelHandler(model, layout.example_secs, crepe_capacity, batch_size,
                                     tracking_uri, crepe_precision)
    rows = (pipeline
            | 'Shards' >> beam.Create(list(source.files))
            | 'Read' >> beam.FlatMap(_read_shard, layout)
            | 'Spread' >> beam.Reshuffle()
            | 'Evaluate' >> RunInference(handler)
            | 'Row' >> beam.Map(lambda result: result.inference))
    _ = (rows
         | 'Collect' >> beam.combiners.ToList()
         | 'Aggregate' >> beam.FlatMap(_write_aggregate, out_dir, step, source.split))


def evaluate_on_beam(model: str, source, out_dir: str, crepe_capacity: str, step: int,
                     pipeline_args: Sequence[str], batch_size: int = 8,
                     tracking_uri: Optional[str] = None,
                     crepe_precision: str = 'float32') -> list[dict]:
    """Run the evaluation job; returns the rows (read back from ``examples.jsonl``)."""
    from pipelines import runner

    if '://' not in out_dir:
        os.makedirs(out_dir, exist_ok=True)

    def build():  # again for each attempt (a job whose worker died is run again, whole)
        pipeline = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
        build_pipeline(pipeline, model, source, out_dir, crepe_capacity, step, batch_size,
                       tracking_uri, crepe_precision)
        return pipeline

    runner.run_and_wait(build, 'evaluation pipeline')
    with FileSystems.open(FileSystems.join(out_dir, 'examples.jsonl')) as f:
        return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]


# ---- CLI ----------------------------------------------------------------------------------------
def build_arg_parser() -> argparse.ArgumentParser:
    from ddsp_core import runtime
    from trainer.serving.inference import add_model_argument

    p = runtime.command_parser(
        'ddsp-eval',
        description="Measure a trained model's resynthesis of a dataset split: f0 L1 "
                    '(semitones), f0 outlier ratio, raw pitch and chroma accuracy, loudness L1 '
                    '(dB) and the multi-scale spectral distance, per example and aggregated.',
        epilog='Without --runner the evaluation runs in this process; with a Beam runner '
               '(--runner DirectRunner --direct_num_workers 2, or --runner DataflowRunner '
               '--project ... --region ... --temp_location gs://...) it runs on Beam. Any '
               'other option is passed to Beam. Exit codes: 0 done, 1 failed, 2 bad usage '
               '(a missing, truncated or damaged shard included).')
    add_model_argument(p)
    p.add_argument('--data', required=True,
                   help='a prepared-dataset directory (its --split), or TFRecord glob(s)')
    p.add_argument('--split', default='eval', choices=('train', 'eval'),
                   help='split of a dataset directory')
    p.add_argument('--out', default=None,
                   help='output directory (default: <model_dir>/eval/<split>-step_N)')
    p.add_argument('--crepe_capacity', default=None,
                   help="CREPE model for the resynthesis' pitch (default: the dataset's)")
    p.add_argument('--crepe_precision', default='auto', choices=CREPE_PRECISIONS,
                   help="CREPE's number format: auto is bfloat16 where the hardware has it (a CPU "
                        'with AVX-512 BF16/AMX under oneDNN, a GPU of compute capability >= 8.0; '
                        'decided on the launching machine), else float32')
    p.add_argument('--batch_size', type=int, default=8, help='examples per model call')
    p.add_argument('--max_examples', type=int, default=None,
                   help='evaluate only the first N examples (in-process only)')
    p.add_argument('--listen', type=int, default=3,
                   help='keep the audio of the first N examples (eval/listen/, the same for '
                        'every model on the split; ddsp-compare plays them side by side)')
    p.add_argument('--tracking_uri', default=None,
                   help="MLflow tracking URI (default: the model's run's, from mlflow_run.json)")
    p.add_argument('--no_mlflow', action='store_true', help="don't log to the model's run")
    p.add_argument('--no_progress', action='store_true', help='no progress bar')
    p.add_argument('--verbose', action='store_true', help="TensorFlow's and Beam's own logs")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``ddsp-eval``."""
    from ddsp_core import runtime
    from pipelines import runner

    opened = runner.open_beam_cli(build_arg_parser(), argv, start_trainer=True)
    if isinstance(opened, int):
        return opened
    args, beam_args = opened
    from trainer.evaluation import evaluate as evaluation
    from trainer.model.config import ConfigError
    from trainer.serving.inference import ModelDirError, TrainedModel
    from trainer.training.data import DataError, open_source

    beam_run = runner.runner_name(PipelineOptions(beam_args)) is not None
    if beam_args and not beam_run:
        return runtime.usage_error('ddsp-eval', f'unknown option(s) {" ".join(beam_args)} '
                                                '(Beam options need a --runner)')
    if args.batch_size < 1:
        return runtime.usage_error('ddsp-eval', '--batch_size must be >= 1')
    try:
        source = open_source(args.data, split=args.split)
        model = TrainedModel.load(args.model, example_secs=source.layout.example_secs,
                                  tracking_uri=args.tracking_uri)
        data = model.config.data
        if (data.sample_rate, data.frame_rate) != (source.layout.sample_rate,
                                                   source.layout.frame_rate):
            raise DataError(f'{source.where} holds {source.layout.describe()}; the model was '
                            f'trained at {data.sample_rate} Hz, {data.frame_rate} frames/s')
    except (DataError, ModelDirError, ConfigError) as e:
        return runtime.usage_error('ddsp-eval', e)
    capacity = args.crepe_capacity or evaluation.default_crepe_capacity(
        source.manifest or model.manifest)
    # On Beam each worker resolves 'auto' for its own hardware (the rows say what it chose).
    precision = resolve_crepe_precision(args.crepe_precision)
    shown = (f'{args.crepe_precision} ({precision} here)'
             if beam_run and args.crepe_precision == 'auto' else precision)
    out = args.out
    if out is None:  # beside the model: its own folder, or the bucket it was read from
        name = f'eval/{source.split or "data"}-step_{model.step}'
        if '://' in str(args.model):  # model.model_dir is a temporary download
            out = f'{str(args.model).rstrip("/")}/{name}'
        else:
            base = model.model_dir if not str(args.model).startswith('runs:/') else Path('.')
            out = str(Path(base) / name)
    print(f'ddsp-eval: model at step {model.step} on {source.describe()}; CREPE {capacity} '
          f'{shown}; '
          f'{runtime.describe_devices()}' + (' (on Beam)' if beam_run else ''),
          file=sys.stderr, flush=True)
    try:
        if beam_run:
            rows = evaluate_on_beam(str(args.model), source, out, capacity, model.step,
                                    beam_args, args.batch_size, args.tracking_uri,
                                    args.crepe_precision)
            result = _result_from_rows(model, source, rows, capacity, args.listen, precision)
        else:
            result = evaluation.evaluate(model, source, capacity, args.batch_size,
                                         args.max_examples, progress=not args.no_progress,
                                         listen=args.listen, crepe_precision=precision)
        evaluation.write_outputs(result, out, model.sample_rate)
    except DataError as e:  # a damaged or wrongly laid out record: names the shard
        return runtime.usage_error('ddsp-eval', e)
    except Exception as e:  # noqa: BLE001 - report any failure with exit code 1
        return runtime.failure('ddsp-eval', e, log=log, what='evaluation')
    print(evaluation.format_table(result))
    print(f'ddsp-eval: {len(result.rows)} examples; results in {out}', file=sys.stderr)
    run_id = model.run_info.get('run_id')
    if str(args.model).startswith('runs:/'):
        run_id = str(args.model)[len('runs:/'):].split('/')[0]
    if not args.no_mlflow and run_id:
        try:
            evaluation.log_to_mlflow(result, run_id,
                                     args.tracking_uri or model.run_info.get('tracking_uri'),
                                     model.sample_rate)
            print(f'ddsp-eval: logged eval/* metrics and eval/ artifacts to MLflow run '
                  f'{run_id}', file=sys.stderr)
            from trainer.tracking.store import print_run_link

            print_run_link('ddsp-eval', args.tracking_uri or model.run_info.get('tracking_uri'),
                           run_id, 'eval')
        except Exception as e:  # noqa: BLE001 - results are on disk; say why MLflow failed
            print(f'ddsp-eval: warning: could not log to MLflow run {run_id}: {e}',
                  file=sys.stderr)
    return 0


def _result_from_rows(model, source, rows: list[dict], capacity: str, listen: int = 3,
                      crepe_precision: str = 'float32'):
    """An EvaluationResult from the Beam job's rows, the best, the worst and the listening
    examples resynthesised again here (a few examples) for their audio."""
    from trainer.evaluation import evaluate as evaluation
    from trainer.evaluation import metrics

    rows = sorted(rows, key=lambda r: r['id'])
    ranked = sorted(rows, key=evaluation._rank)
    wanted = {ranked[0]['id']: 'best', ranked[-1]['id']: 'worst'}
    order = [key for key, _ in evaluation.iter_records(source.files, source.layout)]
    first = order[:listen]
    wanted.update({key: 'listen' for key in first})
    found = {}
    for key, example in evaluation.iter_records(source.files, source.layout):
        if key in wanted:
            batch = {k: example[k][None] for k in example}
            (row,) = evaluation.evaluate_batch(model, batch, [key], capacity, keep_audio=True,
                                               crepe_precision=crepe_precision)
            found[key] = row
            if len(found) == len(wanted):
                break
    best = found.get(ranked[0]['id'])
    worst = found.get(ranked[-1]['id'])
    return evaluation.EvaluationResult(rows, metrics.aggregate(rows), best, worst, model.step,
                                       source.split, [found[k] for k in first if k in found],
                                       evaluation.precision_of(rows))


if __name__ == '__main__':
    sys.exit(main())
