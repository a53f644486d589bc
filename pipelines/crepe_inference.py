"""CREPE pitch tracking as a Beam RunInference model handler.

The handler's examples are *chunks* (dicts made by :mod:`pipelines.prepare_dataset`) holding a
segment of 16 kHz audio; it frames each chunk (``ddsp_core.f0.crepe_frames``) and runs the model
on each chunk's frames in calls of ``inference_batch_size`` frames. A Beam batch holds several
chunks (of several files), but a model call never mixes chunks: a chunk's calls, hence its
activations to the last bit, are then the same whatever it is batched with (TensorFlow's kernels
round differently for other call shapes, e.g. a call of one frame), which keeps the shards
byte-identical across runs. Decoding to f0 (``ddsp_core.f0.activations_to_f0``,
Viterbi or local average) is then done per chunk by :func:`pipelines.examples.chunk_features`.

Same bytes whatever the worker's share of the cores: TensorFlow's kernels sum in an order that
depends on the intra-op thread count for some call shapes (e.g. a chunk's last call of a few
frames), so every process that runs the handler runs TensorFlow on ``CREPE_THREADS`` threads
(set before its first op; parallelism comes from worker processes, one per core by default).

The model is loaded once per worker process (``ddsp_core.f0.load_crepe_forward``: CREPE's network
from crepe's weights, ~2x faster than its Keras model on CPU, same activations); with
``share_across_processes=True`` Beam's multi-process sharing keeps one copy per machine instead.
TensorFlow places the model on a GPU when the worker has one.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

log = logging.getLogger(__name__)

# Chunks are grouped into one RunInference batch until they hold this many model batches.
MODEL_BATCHES_PER_BEAM_BATCH = 8
#: TensorFlow threads of a process running CREPE for ddsp-prepare (fixed: see the docstring).
CREPE_THREADS = 1


def crepe_audio(chunk: dict) -> np.ndarray:
    """The 16 kHz audio of a chunk: ``audio_16k`` when present, else ``audio`` (float32 [n])."""
    audio = chunk.get('audio_16k')
    return chunk['audio'] if audio is None else audio


def result_precision(result: PredictionResult) -> str:
    """The number format ('bfloat16' or 'float32') the worker ran CREPE in for a result."""
    return str(result.model_id).rsplit(':', 1)[-1]


def chunk_frame_count(chunk: dict) -> int:
    """Number of CREPE frames of a chunk (its weight for batching)."""
    spec = chunk['spec']
    return int(spec.seg_end - spec.seg_first + 1)


class CrepeModelHandler(ModelHandler[dict, PredictionResult, Any]):
    """RunInference handler: chunk dict -> PredictionResult(example=chunk,
    inference=activations float32 [n_frames, 360]).

    Args:
        model_capacity: CREPE size ('tiny' ... 'full').
        frame_rate: frames per second (must divide 16000).
        inference_batch_size: frames per model call.
        share_across_processes: share one model per machine between worker processes.
        intra_op_threads: TensorFlow threads of the worker process (default
            ``CREPE_THREADS``, the same on every runner so that the activations are; None:
            TensorFlow's default, all cores); set before the worker's first TensorFlow op,
            else left alone with a warning (the bytes may then differ from other runs').
        precision: CREPE's number format, 'float32', 'bfloat16' or 'auto': resolved where the
            model loads, i.e. by each worker process for its own hardware
            (``ddsp_core.f0.resolve_crepe_precision``); each result's ``model_id`` says which
            (:func:`result_precision`).
        crepe_rate: frames per second CREPE runs at (default ``frame_rate``; lower with
            ``--f0_hop_ms``, the f0 being interpolated to ``frame_rate`` afterwards).
    """

    def __init__(self, model_capacity: str = 'full', frame_rate: int = 250,
                 inference_batch_size: int = 512, share_across_processes: bool = False,
                 intra_op_threads: Optional[int] = CREPE_THREADS, precision: str = 'float32',
                 crepe_rate: Optional[int] = None):
        # BatchElements measures batches in frames (element_size_fn), so chunks of several
        # files share a Beam batch until it holds MODEL_BATCHES_PER_BEAM_BATCH model calls'
        # worth (each chunk still gets its own model calls).
        super().__init__(min_batch_size=1,
                         max_batch_size=inference_batch_size * MODEL_BATCHES_PER_BEAM_BATCH,
                         element_size_fn=chunk_frame_count, large_model=share_across_processes)
        self.model_capacity = model_capacity
        self.frame_rate = frame_rate
        self.inference_batch_size = inference_batch_size
        self.intra_op_threads = intra_op_threads
        self.precision = precision
        self.crepe_rate = crepe_rate or frame_rate

    def load_model(self):
        from ddsp_core import runtime
        from ddsp_core.f0 import load_crepe_forward
        from pipelines.runner import claim_worker_gpus

        claim_worker_gpus()  # a local worker's own GPU(s), before TensorFlow starts
        tf = runtime.import_tensorflow()
        if self.intra_op_threads and not runtime.set_threads(self.intra_op_threads):
            log.warning('TensorFlow already started in this process with other thread settings '
                        'than CREPE\'s %d: its activations may differ in the last bits from '
                        'a run in fresh worker processes', self.intra_op_threads)
        model = load_crepe_forward(self.model_capacity, self.precision)
        try:
            gpus = tf.config.list_logical_devices('GPU')
            log.info('CREPE %s (%s) loaded; running on %s', self.model_capacity,
                     model.precision, gpus[0].name if gpus else 'CPU')
        except Exception:  # pragma: no cover - logging only
            pass
        return model

    def activations(self, model, frames: np.ndarray) -> np.ndarray:
        """CREPE activations of normalised frames [n, 1024] -> float32 [n, 360], in model calls
        of ``inference_batch_size`` frames."""
        return model(frames, batch_size=self.inference_batch_size)

    def run_inference(self, batch: Sequence[dict], model: Any,
                      inference_args: Optional[dict[str, Any]] = None
                      ) -> Iterable[PredictionResult]:
        from ddsp_core.f0 import crepe_frames

        if not batch:
            return []
        # One chunk's frames per model call (see the module docstring): deterministic bits.
        return [PredictionResult(chunk, self.activations(
                    model, crepe_frames(self.analysed_audio(chunk), self.crepe_rate,
                                        padding='center')),
                    f'{self.model_capacity}:{model.precision}')
                for chunk in batch]

    def analysed_audio(self, chunk: dict) -> np.ndarray:
        """The audio CREPE frames: the chunk's 16 kHz audio, after
        ``pipelines.chunking.crepe_offset`` zeros, so that its frames lie on the whole file's
        grid when CREPE runs at another rate."""
        from pipelines.chunking import crepe_offset

        audio = crepe_audio(chunk)
        lead = crepe_offset(chunk['spec'], self.frame_rate, self.crepe_rate)
        return np.concatenate([np.zeros(lead, audio.dtype), audio]) if lead else audio

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        return int(sum(crepe_audio(c).nbytes for c in batch))

    def get_metrics_namespace(self) -> str:
        return 'ddsp_prepare_crepe'
