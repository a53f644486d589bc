"""How good is the resynthesis? The evaluation behind ``ddsp-eval`` (and its Beam pipeline).

:func:`evaluate_batch` is the one evaluation function: a batch of dataset examples in, one row
of resynthesis metrics (:mod:`trainer.evaluation.metrics`) per example out. :func:`evaluate` runs it
over a dataset split in this process; ``pipelines.evaluate`` runs it over many shards in parallel on
Beam. Both aggregate with :func:`trainer.evaluation.metrics.aggregate`, and :func:`log_to_mlflow`
records the result in the model's MLflow run: ``eval/*`` metrics at the model's step, the
per-example table, and the best and worst examples' audio and spectrograms.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ddsp_core import records, shards

logger = logging.getLogger(__name__)

#: The metric that orders examples from best to worst (lower is better).
RANK_METRIC = 'spectral_distance'
METRIC_PREFIX = 'eval/'


def default_crepe_capacity(manifest: Optional[records.Manifest]) -> str:
    """The CREPE model the dataset was prepared with, so that a resynthesis is tracked alike
    ('full' when the manifest does not say or there is none)."""
    return str(manifest.option('crepe_capacity') or 'full') if manifest else 'full'


def iter_records(files, layout: records.Layout) -> Iterator[tuple[str, dict]]:
    """``(id, example)`` for every record of the files, in order; the id is
    ``<shard file name>#<index in the shard>``; examples hold float32 numpy features.

    Raises:
        trainer.training.data.DataError: a damaged record (names the shard and the record's byte
            offset) or one that breaks the layout.
    """
    import tensorflow as tf

    from trainer.training.data import DataError

    for path in files:
        name = os.path.basename(str(path))
        offset = 0
        records_of = iter(tf.data.TFRecordDataset(str(path)))
        for i in itertools.count():
            try:
                raw = next(records_of, None)
            except tf.errors.OpError:
                found = shards.find_damaged_record(str(path))
                where, why = found if found else (offset, 'unreadable')
                raise DataError(f'{path}: damaged record at byte {where} ({why}); ddsp-prepare '
                                f'--verify {os.path.dirname(str(path))} checks every shard'
                                ) from None
            if raw is None:
                break
            data = raw.numpy()
            try:
                example = records.parse_example(data, f'{path} record {i} (byte {offset})')
                records.check_lengths({k: v.size for k, v in example.items()}, layout,
                                      f'{path} record {i} (byte {offset})')
            except records.LayoutError as e:
                raise DataError(str(e)) from None
            offset += shards.RECORD_FRAMING_BYTES + len(data)
            yield f'{name}#{i}', example


def batches(items: Iterator[tuple[str, dict]], batch_size: int
            ) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
    """Group ``(id, example)`` pairs into ``(ids, stacked features)``."""
    ids, group = [], []
    for key, example in items:
        ids.append(key)
        group.append(example)
        if len(group) == batch_size:
            yield ids, {k: np.stack([g[k] for g in group]) for k in records.REQUIRED_FEATURES}
            ids, group = [], []
    if group:
        yield ids, {k: np.stack([g[k] for g in group]) for k in records.REQUIRED_FEATURES}


def evaluate_batch(model, batch: dict[str, np.ndarray], ids: list[str],
                   crepe_capacity: str = 'full', keep_audio: bool = False,
                   crepe_precision: str = 'float32') -> list[dict]:
    """Resynthesise a batch of examples and measure each against its original.

    Args:
        model: a :class:`trainer.serving.inference.TrainedModel` built for the examples' length.
        batch: ``audio`` [batch, n_samples], ``f0_hz``, ``f0_confidence``, ``loudness_db``
            [batch, n_frames] (float32), at the model's rates.
        ids: one id per example.
        crepe_capacity: CREPE model that tracks the resynthesis' pitch.
        keep_audio: also return ``original`` and ``resynthesis`` (float32 arrays) per row.
        crepe_precision: CREPE's number format ('float32', 'bfloat16' or 'auto').

    Returns:
        One dict per example: ``id``, ``crepe_precision`` (the format CREPE ran in here:
        'auto' resolved by the process that measures, e.g. a Beam worker) and the metrics of
        :func:`trainer.evaluation.metrics.resynthesis_metrics`.
    """
    from ddsp_core.f0 import resolve_crepe_precision
    from trainer.evaluation import metrics

    precision = resolve_crepe_precision(crepe_precision)
    resynth = model.resynthesize(batch)
    rows = []
    for i, key in enumerate(ids):
        row = {'id': key, 'crepe_precision': precision}
        row.update(metrics.resynthesis_metrics(
            batch['audio'][i], resynth[i], model.sample_rate, model.frame_rate,
            crepe_capacity=crepe_capacity, f0_original=batch['f0_hz'][i],
            confidence_original=batch['f0_confidence'][i], crepe_precision=precision))
        if keep_audio:
            row['original'] = np.asarray(batch['audio'][i], np.float32)
            row['resynthesis'] = np.asarray(resynth[i], np.float32)
        rows.append(row)
    return rows


@dataclasses.dataclass
class EvaluationResult:
    """What :func:`evaluate` measured.

    Attributes:
        rows: one dict of metrics per example (with its ``id``).
        aggregate: :func:`trainer.evaluation.metrics.aggregate` of the rows.
        best, worst: the examples with the lowest and highest :data:`RANK_METRIC`, with their
            ``original`` and ``resynthesis`` audio.
        step: the model's training step.
        split: the split evaluated.
        listen: the first examples (in id order), with their audio: the same examples for every
            model evaluated on the split, for listening side by side (``ddsp-compare``).
        crepe_precision: the format CREPE ran in for the rows (:func:`precision_of`).
    """

    rows: list[dict]
    aggregate: dict
    best: Optional[dict]
    worst: Optional[dict]
    step: int
    split: Optional[str]
    listen: list = dataclasses.field(default_factory=list)
    crepe_precision: Optional[str] = None


def precision_of(rows: list[dict]) -> Optional[str]:
    """The CREPE format the rows were measured in: 'bfloat16' or 'float32', 'mixed' where the
    processes that measured them (Beam workers on different hardware) resolved 'auto'
    differently, None for no rows."""
    found = {row.get('crepe_precision') for row in rows} - {None}
    return None if not found else found.pop() if len(found) == 1 else 'mixed'


def summary_json(result: EvaluationResult) -> str:
    """``aggregate.json``'s text: the step, split and CREPE format with the aggregate."""
    return json.dumps({'step': result.step, 'split': result.split,
                       'crepe_precision': result.crepe_precision, **result.aggregate},
                      indent=2, sort_keys=True, default=float) + '\n'


def _rank(row: dict) -> float:
    value = row.get(RANK_METRIC)
    return math.inf if value is None or not math.isfinite(value) else float(value)


def evaluate(model, source, crepe_capacity: Optional[str] = None, batch_size: int = 8,
             max_examples: Optional[int] = None, progress: bool = True,
             listen: int = 3, crepe_precision: str = 'float32') -> EvaluationResult:
    """Evaluate a trained model on a dataset split in this process.

    Args:
        model: a :class:`trainer.serving.inference.TrainedModel` (built for the records' length, see
            :meth:`TrainedModel.load`'s ``example_secs``).
        source: the data (:func:`trainer.training.data.open_source`), at the model's rates.
        crepe_capacity: for the resynthesis' pitch (default: the dataset's, from its manifest).
        batch_size: examples per model call.
        max_examples: stop after this many examples (default: all).
        progress: show a progress bar.
        listen: keep the audio of the first this many examples (see ``EvaluationResult``).
        crepe_precision: CREPE's number format ('float32', 'bfloat16' or 'auto').

    Raises:
        ValueError: the data's layout does not match the model's.
    """
    from tqdm.auto import tqdm

    from trainer.evaluation import metrics

    data = model.config.data
    layout = source.layout
    if (layout.sample_rate, layout.frame_rate) != (data.sample_rate, data.frame_rate) or \
            abs(layout.example_secs - data.example_secs) > 1e-9:
        raise ValueError(f'{source.where} holds {layout.describe()}, the model is built for '
                         f'{data.example_secs:g} s at {data.sample_rate} Hz, {data.frame_rate} '
                         'frames/s')
    capacity = crepe_capacity or default_crepe_capacity(source.manifest or model.manifest)
    from ddsp_core.f0 import resolve_crepe_precision

    crepe_precision = resolve_crepe_precision(crepe_precision)  # once, not per batch
    total = source.manifest.split_examples(source.split) if (source.manifest and
                                                              source.split) else None
    if max_examples is not None:
        total = min(total, max_examples) if total is not None else max_examples
    rows, best, worst, kept = [], None, None, []
    bar = tqdm(total=total, disable=not progress, unit='example', dynamic_ncols=True)
    items = iter_records(source.files, layout)
    if max_examples is not None:
        items = itertools.islice(items, max_examples)
    try:
        for ids, batch in batches(items, batch_size):
            for row in evaluate_batch(model, batch, ids, capacity, keep_audio=True,
                                      crepe_precision=crepe_precision):
                audio = {k: row.pop(k) for k in ('original', 'resynthesis')}
                rows.append(row)
                if len(kept) < listen:
                    kept.append({**row, **audio})
                if best is None or _rank(row) < _rank(best):
                    best = {**row, **audio}
                if worst is None or _rank(row) > _rank(worst):
                    worst = {**row, **audio}
                bar.update(1)
    finally:
        bar.close()
    if not rows:
        raise ValueError(f'{source.where}: no example to evaluate')
    return EvaluationResult(rows, metrics.aggregate(rows), best, worst, model.step,
                            source.split, kept, precision_of(rows))


def safe_name(example_id: str) -> str:
    """An example id as a folder name ('eval-00000-of-00001.tfrecord#3' -> '...tfrecord_3')."""
    return ''.join(c if c.isalnum() or c in '.-_' else '_' for c in example_id)


def format_table(result: EvaluationResult) -> str:
    """A terminal table of the aggregate metrics (and the best and worst example)."""
    lines = [f'{"metric":<22} {"value":>12}']
    for key, value in result.aggregate.items():
        text = f'{value:12.4f}' if isinstance(value, float) else f'{value:>12}'
        lines.append(f'{key:<22} {text}')
    if result.crepe_precision:
        lines.append(f'{"crepe_precision":<22} {result.crepe_precision:>12}')
    for label, row in (('best', result.best), ('worst', result.worst)):
        if row is not None:
            lines.append(f'{label + " example":<22} {row["id"]} ({RANK_METRIC} '
                         f'{row[RANK_METRIC]:.4f})')
    return '\n'.join(lines)


def write_outputs(result: EvaluationResult, out_dir: str | os.PathLike,
                  sample_rate: int) -> str:
    """Write ``examples.jsonl`` (one row per example), ``aggregate.json``, the best and worst
    examples' ``{original,resynthesis}.wav`` and ``spectrogram.png`` under ``best/`` and
    ``worst/``, and the same for the listening examples under ``listen/<example id>/``.

    ``out_dir`` is a local folder or a TensorFlow filesystem URL (``gs://...``): there, the files
    are written to a local temporary folder and then copied up one by one. Returns ``out_dir``.
    """
    if '://' in str(out_dir):
        import tensorflow as tf

        with tempfile.TemporaryDirectory(prefix='ddsp-eval-') as tmp:
            _write_local_outputs(result, Path(tmp), sample_rate)
            for folder, _, files in os.walk(tmp):
                relative = os.path.relpath(folder, tmp)
                target = str(out_dir).rstrip('/') + ('' if relative == '.' else '/' + relative)
                tf.io.gfile.makedirs(target)
                for name in sorted(files):
                    tf.io.gfile.copy(os.path.join(folder, name), f'{target}/{name}',
                                     overwrite=True)
        return str(out_dir)
    return str(_write_local_outputs(result, Path(out_dir), sample_rate))


def _write_local_outputs(result: EvaluationResult, out: Path, sample_rate: int) -> Path:
    from trainer.tracking import artifacts

    out.mkdir(parents=True, exist_ok=True)
    with open(out / 'examples.jsonl', 'w') as f:
        for row in result.rows:
            f.write(json.dumps(row, sort_keys=True, default=float) + '\n')
    (out / 'aggregate.json').write_text(summary_json(result))
    named = [('best', result.best), ('worst', result.worst)]
    named += [(f'listen/{safe_name(row["id"])}', row) for row in result.listen]
    for label, row in named:
        if row is None:
            continue
        folder = out / label
        artifacts.write_wav(folder / 'original.wav', row['original'], sample_rate)
        artifacts.write_wav(folder / 'resynthesis.wav', row['resynthesis'], sample_rate)
        artifacts.spectrogram_comparison_png(
            folder / 'spectrogram.png', row['original'], row['resynthesis'], sample_rate,
            title=f'{label}: {row["id"]} ({RANK_METRIC} {row[RANK_METRIC]:.3f})')
        (folder / 'example.json').write_text(json.dumps(
            {k: v for k, v in row.items() if k not in ('original', 'resynthesis')},
            indent=2, default=float) + '\n')
    return out


def log_to_mlflow(result: EvaluationResult, run_id: str, tracking_uri: Optional[str],
                  sample_rate: int) -> None:
    """Record an evaluation in the model's MLflow run without changing its status: ``eval/*``
    metrics at the model's step, and the files of :func:`write_outputs` under ``eval/``."""
    from mlflow.entities import Metric

    from trainer.tracking.store import make_client, resolve_tracking_uri

    client = make_client(resolve_tracking_uri(tracking_uri))
    now = int(time.time() * 1000)
    points = [Metric(f'{METRIC_PREFIX}{k}', float(v), now, result.step)
              for k, v in result.aggregate.items()
              if isinstance(v, (int, float)) and math.isfinite(float(v))]
    client.log_batch(run_id, metrics=points)
    with tempfile.TemporaryDirectory(prefix='ddsp-eval-') as tmp:
        write_outputs(result, tmp, sample_rate)
        client.log_artifacts(run_id, tmp, 'eval')
