"""ddsp-transfer's analysis: f0, confidence, loudness (and frame power) of an input, computed as
``ddsp-prepare`` computes them, chunk by chunk, with CREPE in a worker thread overlapped with the
rest (:class:`CrepeStream`, :func:`analyze`, :class:`Features`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

from ddsp_core import audio_stream

# ddsp-prepare's feature settings come from the dataset contract (ddsp_core.records) and CREPE.
from ddsp_core.f0 import CREPE_FRAME_SIZE, CREPE_N_BINS, CREPE_SAMPLE_RATE, analysis_rate
from ddsp_core.records import VITERBI_CONTEXT_SECS, loudness_n_fft
from trainer.serving.transfer_audio import TransferError, stream_audio

#: Frames per CREPE model call: small, since CrepeForward holds a [batch, 256, 512] window matrix
#: (256 MB at 512 frames); as fast as larger batches on CPU, activations equal to the last bits.
CREPE_BATCH = 64
#: Frames analysed per step (CREPE + loudness), 20 s at 250 frames/s.
ANALYSIS_CHUNK_SECS = 20.0
#: The level (dB) below which an input is silent.
SILENCE_DB = -70.0


class CrepeStream:
    """CREPE on a streamed 16 kHz signal, in a worker thread, overlapped with the caller's work.

    Analysis frame ``j`` is the 1024 samples centred on sample ``j * hop`` of the whole signal
    (``hop = 16000 // rate``; the file's grid, as ``crepe_frames`` frames it). As the signal
    arrives (:meth:`submit_ready`), its frames go to a worker thread in model calls of
    ``batch_size`` frames, each frame once; the caller meanwhile decodes and resamples the next
    block, computes loudness and Viterbi-decodes earlier frames (TensorFlow runs the model
    without the GIL). At most ``max_pending`` calls wait at a time (bounded memory; the caller
    then waits for the oldest). :meth:`activations` returns frames ``[j0, j1)`` when they are
    done; :meth:`drop_before` forgets those no longer needed. Use as a context manager: leaving
    it stops the worker (pending calls are cancelled).

    Args:
        forward: ``ddsp_core.f0.CrepeForward`` (normalised frames [n, 1024] -> [n, 360]).
        signal: the 16 kHz ``audio_stream.SignalBuffer`` being filled (zeros past its end).
        rate: analysis frames per second (divides 16000).
        batch_size: frames per model call.
        max_pending: model calls in flight at most.
    """

    def __init__(self, forward, signal: audio_stream.SignalBuffer, rate: int,
                 batch_size: int = CREPE_BATCH, max_pending: int = 16):
        self.forward = forward
        self.signal = signal
        self.rate = int(rate)
        self.hop = CREPE_SAMPLE_RATE // self.rate
        self.batch_size = int(batch_size)
        self.max_pending = int(max_pending)
        self.next_frame = 0  # first frame not yet submitted
        self._pending = collections.deque()  # futures of activations, in frame order
        self._done = np.zeros((0, CREPE_N_BINS), np.float32)  # frames [_base, _base + n)
        self._base = 0
        self._pool = None

    def __enter__(self) -> CrepeStream:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix='crepe')
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def first_unread(self) -> int:
        """First sample of the signal that frames not yet submitted need (drop before it)."""
        return self.next_frame * self.hop - CREPE_FRAME_SIZE // 2

    def _collect(self) -> None:
        done = self._pending.popleft().result()
        self._done = np.concatenate([self._done, done]) if len(self._done) else done

    def _submit(self, end: int) -> None:
        from ddsp_core.f0 import crepe_frames

        first, h = self.next_frame, CREPE_FRAME_SIZE // 2
        frames = crepe_frames(self.signal.get(first * self.hop - h, (end - 1) * self.hop + h),
                              self.rate, padding='valid')
        if len(self._pending) >= self.max_pending:
            self._collect()
        self._pending.append(self._pool.submit(self.forward, frames, self.batch_size))
        self.next_frame = end

    def submit_ready(self) -> None:
        """Submit every full model call whose frames the signal holds."""
        ready = (self.signal.received - CREPE_FRAME_SIZE // 2) // self.hop + 1
        while ready - self.next_frame >= self.batch_size:
            self._submit(self.next_frame + self.batch_size)

    def submit_until(self, end: int) -> None:
        """Submit frames up to ``end`` (the last call may be short; zeros past the signal)."""
        while self.next_frame < end:
            self._submit(min(end, self.next_frame + self.batch_size))

    def activations(self, first: int, end: int) -> np.ndarray:
        """Activations of frames ``[first, end)``, float32 [end - first, 360] (waits for them)."""
        if first < self._base:
            raise ValueError(f'frames before {self._base} were dropped (asked from {first})')
        self.submit_until(end)
        while self._base + len(self._done) < end:
            self._collect()
        return self._done[first - self._base:end - self._base]

    def drop_before(self, frame: int) -> None:
        """Forget the activations of frames before ``frame``."""
        cut = max(0, min(frame - self._base, len(self._done)))
        if cut:
            self._done = self._done[cut:]
            self._base += cut


@dataclasses.dataclass
class Features:
    """Frame-rate features of an input (float32 [n_frames] each) at the model's rates; the
    frame power (``trainer.model.autoencoder.frame_power_db``) only for a decoder that takes it.

    ``n_samples`` is the input's length at ``sample_rate``; frame i is centred on sample
    ``i * hop`` and ``n_frames = ceil(n_samples / hop)`` (what synthesis needs to cover it).
    """

    f0_hz: np.ndarray
    f0_confidence: np.ndarray
    loudness_db: np.ndarray
    n_samples: int
    sample_rate: int
    frame_rate: int
    peak: float
    power_db: Optional[np.ndarray] = None

    @property
    def n_frames(self) -> int:
        return int(len(self.f0_hz))

    @property
    def seconds(self) -> float:
        return self.n_samples / float(self.sample_rate)


def analyze(path: str | os.PathLike, sample_rate: int, frame_rate: int,
            crepe_capacity: str = 'full', viterbi: bool = True, batch_size: int = CREPE_BATCH,
            chunk_secs: float = ANALYSIS_CHUNK_SECS, power_frame_size: Optional[int] = None,
            on_seconds: Optional[Callable[[float], None]] = None,
            crepe_precision: str = 'auto', f0_hop_ms: Optional[float] = None) -> Features:
    """f0, confidence and loudness of an audio file, computed as ``ddsp-prepare`` computes
    them, chunk by chunk.

    Args:
        path: the audio file.
        sample_rate, frame_rate: the model's.
        crepe_capacity: CREPE size ('tiny' ... 'full').
        viterbi: Viterbi-decode CREPE's activations (else the local weighted average).
        batch_size: frames per CREPE model call.
        chunk_secs: frames analysed per step (memory).
        power_frame_size: also compute the frame power over frames of this many samples (as
            ``trainer.model.autoencoder.frame_power_db``, for decoders that take ``pw_scaled``).
        on_seconds: called with the seconds of input analysed by each step (progress).
        crepe_precision: CREPE's number format: 'auto' (bfloat16 where the hardware has it),
            'bfloat16' or 'float32' (``ddsp_core.f0.resolve_crepe_precision``).
        f0_hop_ms: None runs CREPE on every frame; else every this many ms, f0 and confidence
            interpolated to the frame rate (as ``ddsp-prepare --f0_hop_ms``).

    Raises:
        TransferError: the file cannot be read, or is silent, or ``f0_hop_ms`` is invalid.
    """
    from ddsp_core.f0 import (
        activations_to_f0,
        analysis_offset,
        interpolate_f0,
        load_crepe_forward,
    )
    from ddsp_core.spectral_ops import compute_loudness, compute_power

    hop = sample_rate // frame_rate
    hop16 = CREPE_SAMPLE_RATE // frame_rate
    if hop * frame_rate != sample_rate or hop16 * frame_rate != CREPE_SAMPLE_RATE:
        raise TransferError(f'frame rate {frame_rate} must divide {sample_rate} Hz and 16000 Hz')
    n_fft = loudness_n_fft(sample_rate)
    half = n_fft // 2
    # Model-rate windows centred on the frames: (size, half) for loudness and maybe power.
    windows = [(n_fft, half)] + ([(int(power_frame_size), int(power_frame_size) // 2)]
                                 if power_frame_size else [])
    lead = max(w // 2 for w, _ in windows)  # samples before a frame's centre still needed
    chunk = max(1, int(round(chunk_secs * frame_rate)))
    context = int(round(VITERBI_CONTEXT_SECS * frame_rate)) if viterbi else 0
    try:
        crepe_rate = analysis_rate(frame_rate, f0_hop_ms)
    except ValueError as e:
        raise TransferError(f'--f0_hop_ms: {e}') from None
    # With a coarser analysis hop, CREPE runs on the whole file's grid of analysis frames
    # (analysis_offset) and reaches one analysis hop further, so that every frame of the chunk
    # (and its context) lies between two analysis frames.
    extra16 = CREPE_SAMPLE_RATE // crepe_rate if crepe_rate != frame_rate else 0
    same_rate = sample_rate == CREPE_SAMPLE_RATE
    rates = (sample_rate,) if same_rate else (sample_rate, CREPE_SAMPLE_RATE)
    audio = audio_stream.SignalBuffer()
    audio16 = audio if same_rate else audio_stream.SignalBuffer()
    crepe = CrepeStream(load_crepe_forward(crepe_capacity, crepe_precision), audio16, crepe_rate,
                        batch_size)
    f0_parts, conf_parts, loud_parts, power_parts = [], [], [], []
    peak = 0.0
    start = 0  # first frame of the next chunk

    def needed(first: int, end: int) -> tuple[int, int]:
        """Sample ends (model rate, 16 kHz) that frames [first, end) plus context need."""
        return (max((end - 1) * hop - h + w for w, h in windows),
                (end + context - 1) * hop16 + CREPE_FRAME_SIZE // 2 + extra16)

    def run_chunk(first: int, end: int, n_frames: Optional[int]) -> None:
        lo = max(0, first - context)
        hi = end + context if n_frames is None else min(n_frames, end + context)
        # CREPE's analysis frames [j_lo, j_hi) cover frames [lo, hi) (on the file's grid; with
        # a coarser hop from the one at or before frame lo to one past frame hi - 1).
        offset = analysis_offset(lo, frame_rate, crepe_rate) if extra16 else 0
        j_lo = (lo * hop16 - offset) // crepe.hop
        j_hi = j_lo + ((hi - 1 - lo) * hop16 + extra16 + offset) // crepe.hop + 1
        crepe.submit_until(j_hi)  # (mostly in flight already: computed as the audio came)
        seg = audio.get(first * hop - half, (end - 1) * hop - half + n_fft)
        loud = compute_loudness(seg, sample_rate=sample_rate, frame_rate=frame_rate,
                                n_fft=n_fft, use_tf=False, padding='valid')
        loud_parts.append(np.asarray(loud, np.float32).reshape(-1))
        if power_frame_size:
            size, h = windows[1]
            power = compute_power(audio.get(first * hop - h, (end - 1) * hop - h + size),
                                  sample_rate, frame_rate, frame_size=size, padding='valid')
            power_parts.append(np.asarray(power, np.float32).reshape(-1))
        f0, conf = activations_to_f0(crepe.activations(j_lo, j_hi), viterbi=viterbi)
        if extra16:
            f0, conf = interpolate_f0(f0, conf, crepe_rate, frame_rate, hi - lo, offset=offset)
        f0_parts.append(f0[first - lo:end - lo])
        conf_parts.append(conf[first - lo:end - lo])
        next_lo = max(0, end - context)
        crepe.drop_before((next_lo * hop16 - analysis_offset(next_lo, frame_rate, crepe_rate))
                          // crepe.hop)
        if on_seconds is not None:
            on_seconds((end - first) / frame_rate)

    with crepe:
        for blocks in stream_audio(path, rates):
            audio.append(blocks[0])
            peak = max(peak, float(np.max(np.abs(blocks[0]), initial=0.0)))
            if not same_rate:
                audio16.append(blocks[1])
            crepe.submit_ready()  # CREPE runs on them while this thread reads on
            while True:
                end = start + chunk
                need, need16 = needed(start, end)
                if audio.received < need or audio16.received < need16:
                    break
                run_chunk(start, end, None)
                start = end
            # Kept: what the next chunk's loudness/power and CREPE's next frames need.
            audio.drop_before(min(start * hop - lead, crepe.first_unread) if same_rate else
                              start * hop - lead)
            if not same_rate:  # at 16 kHz audio16 is audio: dropped just above
                audio16.drop_before(crepe.first_unread)
        n_samples = audio.received
        n_frames = -(-n_samples // hop)
        while start < n_frames:
            end = min(start + chunk, n_frames)
            run_chunk(start, end, n_frames)
            start = end
    features = Features(np.concatenate(f0_parts).astype(np.float32),
                        np.concatenate(conf_parts).astype(np.float32),
                        np.concatenate(loud_parts).astype(np.float32), n_samples, sample_rate,
                        frame_rate, peak,
                        np.concatenate(power_parts).astype(np.float32) if power_parts else None)
    if peak == 0.0 or float(features.loudness_db.max()) < SILENCE_DB:
        raise TransferError(f'{path}: silent (no frame louder than {SILENCE_DB:g} dB, peak '
                            f'{20 * math.log10(max(peak, 1e-12)):.0f} dBFS); nothing to transfer')
    return features
