"""The options of ``ddsp-prepare`` (:class:`PrepareOptions`) and their validation."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from ddsp_core import records
from ddsp_core.f0 import (
    CREPE_CAPACITIES,
    CREPE_FRAME_SIZE,
    CREPE_PRECISIONS,
    CREPE_SAMPLE_RATE,
    analysis_rate,
)
from ddsp_core.records import LOUDNESS_WINDOW_SECS, VITERBI_CONTEXT_SECS  # noqa: F401

#: ``--split_by`` values (see :mod:`pipelines.splitting`).
SPLIT_METHODS = ('auto', 'file', 'segment')


class OptionError(ValueError):
    """An invalid option or input pattern; the message names it (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """Options of ``ddsp-prepare`` (see ``docs/prepare.md``).

    Attributes:
        sample_rate: sample rate of the ``audio`` feature (Hz).
        frame_rate: frames per second of ``f0_hz``, ``f0_confidence`` and ``loudness_db``.
        example_secs: length of one example window (s).
        hop_secs: step between example windows (s).
        chunk_secs: length of the file pieces processed in parallel (s), a multiple of hop_secs.
        eval_fraction: fraction of the data held out in the eval split.
        split_by: how the eval split is drawn: 'file' (whole files by path hash), 'segment'
            (held-out blocks of every file, with a guard; :mod:`pipelines.splitting`) or 'auto'
            (by file when there are enough files to come close to the fraction).
        split_seed: seed of the hash that places held-out blocks (``split_by`` segment).
        crepe_capacity: CREPE model size ('tiny' ... 'full').
        viterbi: Viterbi-decode CREPE's activations (else local weighted average).
        inference_batch_size: frames per CREPE model call.
        crepe_precision: CREPE's number format: 'auto' (bfloat16 where the hardware has it,
            else float32; resolved by each worker process where CREPE loads, see
            ``pipelines.manifest.f0_block``), 'bfloat16' or 'float32'.
        f0_hop_ms: None runs CREPE on every frame (the reference's way); else every this many
            ms (10: CREPE's native hop), f0 and confidence interpolated to ``frame_rate``.
        drop_silence_db: windows whose loudest frame is below this loudness (dB) are dropped
            (counted in the manifest); None keeps every window.
        min_secs: source files shorter than this (s) are dead-lettered as too short.
        num_shards: TFRecord shards per split; 0 picks about 128 MB of records per shard.
        reference_layout: also write ``audio_16k`` when ``sample_rate`` is 16000, as the
            reference library's ``TFRecordProvider`` requires.
    """

    sample_rate: int = 16000
    frame_rate: int = 250
    example_secs: float = 4.0
    hop_secs: float = 1.0
    chunk_secs: float = 20.0
    eval_fraction: float = 0.1
    split_by: str = 'auto'
    split_seed: int = 0
    crepe_capacity: str = 'full'
    viterbi: bool = True
    inference_batch_size: int = 512
    crepe_precision: str = 'auto'
    f0_hop_ms: Optional[float] = None
    drop_silence_db: Optional[float] = -70.0
    min_secs: float = 0.5
    num_shards: int = 0
    reference_layout: bool = False

    # ---- derived integer geometry -------------------------------------------------------------
    @property
    def hop_samples(self) -> int:
        """Samples of ``audio`` per frame."""
        return self.sample_rate // self.frame_rate

    @property
    def hop_16k(self) -> int:
        """Samples of 16 kHz audio (CREPE's input) per frame."""
        return CREPE_SAMPLE_RATE // self.frame_rate

    @property
    def crepe_rate(self) -> int:
        """Frames per second CREPE runs at: ``frame_rate``, or 1000 / ``f0_hop_ms``."""
        return analysis_rate(self.frame_rate, self.f0_hop_ms)

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
        return records.loudness_n_fft(self.sample_rate)

    @property
    def context_frames(self) -> int:
        """Extra frames computed on each side of a chunk (see :mod:`pipelines.chunking`)."""
        # With --f0_hop_ms a frame's f0 also reads the analysis frame up to one analysis hop
        # away, whose window reaches that much further.
        reach = CREPE_FRAME_SIZE / 2 + (CREPE_SAMPLE_RATE // self.crepe_rate
                                        if self.crepe_rate != self.frame_rate else 0)
        half = max(math.ceil(reach / self.hop_16k),
                   math.ceil(self.loudness_n_fft / 2 / self.hop_samples))
        extra = int(round(VITERBI_CONTEXT_SECS * self.frame_rate)) if self.viterbi else 0
        return half + extra

    @property
    def needs_16k(self) -> bool:
        """Whether CREPE needs its own 16 kHz copy of the audio (``sample_rate != 16000``)."""
        return self.sample_rate != CREPE_SAMPLE_RATE

    @property
    def layout(self) -> records.Layout:
        """The record layout these options write."""
        return records.Layout(self.sample_rate, self.frame_rate, self.example_secs,
                              audio_16k=self.needs_16k or self.reference_layout)

    def validate(self) -> PrepareOptions:
        """Check the options; raises :class:`OptionError` naming the bad option."""

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
        need(self.split_by in SPLIT_METHODS, 'split_by',
             f'must be one of {", ".join(SPLIT_METHODS)}')
        need(self.split_seed >= 0, 'split_seed', 'must be >= 0')
        need(self.crepe_capacity in CREPE_CAPACITIES, 'crepe_capacity',
             f'must be one of {", ".join(CREPE_CAPACITIES)}')
        need(self.inference_batch_size >= 1, 'inference_batch_size', 'must be >= 1')
        need(self.crepe_precision in CREPE_PRECISIONS, 'crepe_precision',
             f'must be one of {", ".join(CREPE_PRECISIONS)}')
        try:
            analysis_rate(self.frame_rate, self.f0_hop_ms)
        except ValueError as e:
            need(False, 'f0_hop_ms', str(e).split(': ', 1)[-1])
        need(self.min_secs >= 0, 'min_secs', 'must be >= 0')
        need(self.num_shards >= 0, 'num_shards', 'must be >= 0 (0: about 128 MB per shard)')
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_db_or_none(text: str) -> Optional[float]:
    """``--drop_silence_db`` values: a number of dB, or 'none' to keep every window."""
    import argparse

    if text.strip().lower() == 'none':
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r} is neither a loudness in dB (e.g. -70) nor "none"') from None
