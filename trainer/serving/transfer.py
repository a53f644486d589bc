"""Timbre transfer: any recording, rendered by a trained model (``ddsp-transfer``).

Example::

    ddsp-transfer --model runs/violin --input voice.wav --output violin.wav
    ddsp-transfer --model runs:/RUN_ID --input song.flac --output out.wav --pitch_shift -12 \\
        --no-auto_adjust --dry --log_to_mlflow

Steps (each a function here, usable from Python):

1. :func:`analyze`: the input (any length, sample rate, channel count and format ``soundfile``
   reads) is decoded block by block, mixed down to mono and resampled with ``soxr`` (as
   ``ddsp-prepare`` does) to the model's sample rate and to CREPE's 16 kHz; f0 and confidence
   (CREPE, the dataset's capacity and Viterbi setting by default) and loudness (A-weighted, 32 ms
   windows, centred frames: ``compute_loudness(use_tf=False, padding='center')``; and the frame
   power for decoders that take it) are computed in chunks whose frames equal the whole file's
   (Viterbi decoding runs per chunk with 0.25 s of context either side, as in preparation).
2. :func:`adjust`: with ``auto_adjust``, the pitch moves by whole octaves towards the training
   data's pitch range, the loudness of voiced frames is mapped onto the training data's
   distribution (quantile mapping from the manifest's ``voiced_percentiles``; mean/std when the
   manifest has no percentiles) and unconfident, quiet frames are attenuated; then the manual
   ``pitch_shift`` (semitones) and ``loudness_shift`` (dB) are added.
3. :class:`trainer.serving.streaming.StreamingSynth` renders the audio chunk by chunk (decoder
state,
   oscillator phase, noise filter tails and reverb tail carried across chunks; the same audio
   as a one-shot rendering of the whole file) and it is written to the output file block by
   block; ``dry`` leaves out the learned reverb, ``reverb_from`` uses another model's instead
   (:func:`load_room`).

Memory is bounded in the file's length: only frame-rate features are held for the whole file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from ddsp_core import runtime

# ddsp-prepare's feature settings come from the dataset contract (ddsp_core.records) and CREPE.
from ddsp_core.f0 import (
    CREPE_FRAME_SIZE,
    CREPE_PRECISIONS,
    CREPE_SAMPLE_RATE,
    analysis_rate,
    resolve_crepe_precision,
)
from ddsp_core.records import (  # noqa: F401 - LOUDNESS_WINDOW_SECS is part of this API
    LOUDNESS_WINDOW_SECS,
    VITERBI_CONTEXT_SECS,
    VOICED_CONFIDENCE,
    loudness_n_fft,
)

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

READ_BLOCK = 1 << 16  # source frames decoded per read
#: Frames per CREPE model call: small, since CrepeForward holds a [batch, 256, 512] window matrix
#: (256 MB at 512 frames); as fast as larger batches on CPU, activations equal to the last bits.
CREPE_BATCH = 64
RESAMPLE_QUALITY = 'HQ'
#: Frames analysed per step (CREPE + loudness), 20 s at 250 frames/s.
ANALYSIS_CHUNK_SECS = 20.0
#: Default synthesis chunk (s).
SYNTH_CHUNK_SECS = 4.0
#: Loudness floor of compute_loudness (dB) and the level below which an input is silent.
DB_FLOOR = -80.0
SILENCE_DB = -70.0
#: Auto-adjust defaults.
QUIET_DB = 20.0
CONFIDENCE_SMOOTHING_SECS = 0.1
MAX_OCTAVES = 4
#: Seconds of input and output in the spectrogram logged to MLflow.
SPECTROGRAM_SECS = 30.0


class TransferError(ValueError):
    """Bad input to a transfer (unreadable or silent audio, a bad option); the message names
    the file or option (exit code 2)."""


# ---- reading audio --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """An input file as ``soundfile`` opens it: ``path``, native ``sample_rate``, ``channels``
    and ``frames`` (the header's count, an estimate for some compressed formats)."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def seconds(self) -> float:
        return self.frames / float(self.sample_rate) if self.sample_rate else 0.0


def _sound_file_error(path: str, error: Exception) -> TransferError:
    return TransferError(f'{path}: cannot read audio ({type(error).__name__}: {error})')


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Open ``path`` with ``soundfile`` and describe it.

    Raises:
        TransferError: missing, a directory, empty or not audio ``soundfile`` can decode.
    """
    import soundfile as sf

    path = str(path)
    if not os.path.exists(path):
        raise TransferError(f'{path}: file not found')
    if os.path.isdir(path):
        raise TransferError(f'{path}: is a directory, not an audio file')
    if os.path.getsize(path) == 0:
        raise TransferError(f'{path}: empty file (0 bytes)')
    try:
        with sf.SoundFile(path) as snd:
            return AudioInfo(path, int(snd.samplerate), int(snd.channels), int(snd.frames),
                             str(snd.format))
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        raise _sound_file_error(path, e) from e


def stream_audio(path: str | os.PathLike, target_rates: Sequence[int],
                 block: int = READ_BLOCK) -> Iterator[tuple[np.ndarray, ...]]:
    """Decode a file block by block, mixed down to mono, resampled to each rate.

    ``soxr``'s streaming resampler (quality 'HQ', as ``ddsp-prepare``), whose concatenated
    output equals resampling the whole file at once; memory is bounded by ``block``.

    Yields:
        Tuples with one float32 array per target rate (lengths vary; the resamplers' delay is
        flushed with the last block).

    Raises:
        TransferError: the file cannot be decoded, or holds NaN/Inf samples.
    """
    import soundfile as sf
    import soxr

    path = str(path)
    try:
        with sf.SoundFile(path) as snd:
            rate = int(snd.samplerate)
            streams = [None if r == rate else
                       soxr.ResampleStream(rate, int(r), 1, dtype='float32',
                                           quality=RESAMPLE_QUALITY) for r in target_rates]
            pending, done = None, 0
            while True:
                data = snd.read(frames=block, dtype='float32', always_2d=True)
                if data.shape[0] == 0:
                    break
                mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
                if not np.isfinite(mono).all():
                    bad = done + int(np.argmin(np.isfinite(mono)))
                    raise TransferError(f'{path}: contains NaN/Inf samples (first at '
                                        f'{bad / rate:.3f} s)')
                done += len(mono)
                if pending is not None:
                    yield tuple(pending if s is None else s.resample_chunk(pending, last=False)
                                for s in streams)
                pending = np.ascontiguousarray(mono)
    except (sf.SoundFileError, RuntimeError) as e:
        raise _sound_file_error(path, e) from e
    if pending is None:
        raise TransferError(f'{path}: no audio (0 samples)')
    yield tuple(pending if s is None else s.resample_chunk(pending, last=True) for s in streams)


class _Signal:
    """A streamed 1-D signal of which only a window is kept, read at absolute positions (zero
    before the start and after the end)."""

    def __init__(self):
        self.data = np.zeros(0, np.float32)
        self.offset = 0  # absolute position of data[0]
        self.length = None  # known when the stream ends

    @property
    def received(self) -> int:
        return self.offset + len(self.data)

    def append(self, x: np.ndarray) -> None:
        self.data = np.concatenate([self.data, np.asarray(x, np.float32)])

    def get(self, start: int, end: int) -> np.ndarray:
        out = np.zeros(end - start, np.float32)
        lo, hi = max(start, self.offset), min(end, self.received)
        if hi > lo:
            out[lo - start:hi - start] = self.data[lo - self.offset:hi - self.offset]
        return out

    def drop_before(self, position: int) -> None:
        cut = max(0, min(position - self.offset, len(self.data)))
        if cut:
            self.data = self.data[cut:]
            self.offset += cut


# ---- analysis ----------------------------------------------------------------------------------
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
        crepe_frames,
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
    forward = load_crepe_forward(crepe_capacity, crepe_precision)
    same_rate = sample_rate == CREPE_SAMPLE_RATE
    rates = (sample_rate,) if same_rate else (sample_rate, CREPE_SAMPLE_RATE)
    audio, audio16 = _Signal(), None
    audio16 = audio if same_rate else _Signal()
    f0_parts, conf_parts, loud_parts, power_parts = [], [], [], []
    peak = 0.0
    start = 0  # first frame of the next chunk

    def needed(first: int, end: int) -> tuple[int, int]:
        """Sample ends (model rate, 16 kHz) that frames [first, end) plus context need."""
        return (max((end - 1) * hop - h + w for w, h in windows),
                (end + context - 1) * hop16 + CREPE_FRAME_SIZE // 2 + extra16)

    def run_chunk(first: int, end: int, n_frames: Optional[int]) -> None:
        seg = audio.get(first * hop - half, (end - 1) * hop - half + n_fft)
        loud = compute_loudness(seg, sample_rate=sample_rate, frame_rate=frame_rate,
                                n_fft=n_fft, use_tf=False, padding='valid')
        lo = max(0, first - context)
        hi = end + context if n_frames is None else min(n_frames, end + context)
        lead = analysis_offset(lo, frame_rate, crepe_rate) if extra16 else 0
        seg16 = audio16.get(lo * hop16 - lead - CREPE_FRAME_SIZE // 2,
                            (hi - 1) * hop16 + CREPE_FRAME_SIZE // 2 + extra16)
        activations = forward(crepe_frames(seg16, crepe_rate, padding='valid'), batch_size)
        f0, conf = activations_to_f0(activations, viterbi=viterbi)
        if extra16:
            f0, conf = interpolate_f0(f0, conf, crepe_rate, frame_rate, hi - lo, offset=lead)
        f0_parts.append(f0[first - lo:end - lo])
        conf_parts.append(conf[first - lo:end - lo])
        loud_parts.append(np.asarray(loud, np.float32).reshape(-1))
        if power_frame_size:
            size, h = windows[1]
            power = compute_power(audio.get(first * hop - h, (end - 1) * hop - h + size),
                                  sample_rate, frame_rate, frame_size=size, padding='valid')
            power_parts.append(np.asarray(power, np.float32).reshape(-1))
        if on_seconds is not None:
            on_seconds((end - first) / frame_rate)

    for blocks in stream_audio(path, rates):
        audio.append(blocks[0])
        peak = max(peak, float(np.max(np.abs(blocks[0]), initial=0.0)))
        if not same_rate:
            audio16.append(blocks[1])
        while True:
            end = start + chunk
            need, need16 = needed(start, end)
            if audio.received < need or audio16.received < need16:
                break
            run_chunk(start, end, None)
            start = end
            keep16 = (start - context) * hop16 - CREPE_FRAME_SIZE // 2 - extra16
            audio.drop_before(min(start * hop - lead, keep16) if same_rate else
                              start * hop - lead)
            if not same_rate:  # at 16 kHz audio16 is audio: dropped just above
                audio16.drop_before(keep16)
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


# ---- the training data's statistics --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainingStats:
    """What auto-adjust matches an input to, read from the dataset's manifest.

    Attributes:
        f0_range_hz: (low, high) robust pitch range of voiced training frames (1st-99th
            percentile), or None.
        f0_mean_hz: their geometric mean pitch, or None.
        loudness_percentiles: loudness (dB) of voiced training frames at percentiles 0..100,
            or None (older manifests).
        loudness_mean, loudness_std: mean and std of voiced (else all) training frames' dB.
        voiced_threshold: the confidence from which a frame counts as voiced.
    """

    f0_range_hz: Optional[tuple[float, float]]
    f0_mean_hz: Optional[float]
    loudness_percentiles: Optional[tuple[float, ...]]
    loudness_mean: Optional[float]
    loudness_std: Optional[float]
    voiced_threshold: float = VOICED_CONFIDENCE

    @classmethod
    def from_manifest(cls, manifest: Optional[dict]) -> Optional[TrainingStats]:
        """The statistics of a manifest's train split, or None when it has none."""
        if not manifest:
            return None
        train = ((manifest.get('splits') or {}).get('train') or {})
        f0 = train.get('f0_hz') or {}
        loud = train.get('loudness_db') or {}
        conf = train.get('f0_confidence') or {}
        rng = manifest.get('f0_range_hz') or [f0.get('p01'), f0.get('p99')]
        f0_range = None
        if rng and len(rng) == 2 and all(isinstance(v, (int, float)) and v > 0 for v in rng):
            f0_range = (float(min(rng)), float(max(rng)))
        mean_hz = f0.get('geometric_mean')
        if not isinstance(mean_hz, (int, float)) or mean_hz <= 0:
            mean_hz = math.sqrt(f0_range[0] * f0_range[1]) if f0_range else None
        pct = loud.get('voiced_percentiles')
        pct = tuple(float(v) for v in pct) if isinstance(pct, list) and len(pct) == 101 else None
        mean = loud.get('voiced_mean', manifest.get('mean_loudness_db'))
        std = loud.get('voiced_std', manifest.get('std_loudness_db'))
        if mean is None:
            mean, std = manifest.get('mean_loudness_db'), manifest.get('std_loudness_db')
        if f0_range is None and pct is None and mean is None:
            return None
        return cls(f0_range, float(mean_hz) if mean_hz else None, pct,
                   None if mean is None else float(mean), None if std is None else float(std),
                   float(conf.get('voiced_threshold') or VOICED_CONFIDENCE))


# ---- auto-adjust -------------------------------------------------------------------------------
def _box_smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over ``width`` frames, renormalised at the edges."""
    if width <= 1 or len(x) == 0:
        return np.asarray(x, np.float64)
    kernel = np.ones(width)
    total = np.convolve(np.asarray(x, np.float64), kernel, mode='same')
    count = np.convolve(np.ones(len(x)), kernel, mode='same')
    return total / count


def activity(loudness_db: np.ndarray, confidence: np.ndarray, frame_rate: int,
             threshold: float = VOICED_CONFIDENCE) -> np.ndarray:
    """How much each frame is a note, float64 [n_frames]: (smoothed confidence / threshold)^2
    times the frame's level above the -80 dB floor relative to the voiced frames' mean level.
    About 1 for a voiced frame at the input's typical level; below 1 for unconfident or quiet
    frames, 0 for silence."""
    loud = np.asarray(loudness_db, np.float64)
    conf = _box_smooth(confidence, int(round(CONFIDENCE_SMOOTHING_SECS * frame_rate)))
    voiced = np.asarray(confidence) >= threshold
    reference = float(np.mean(loud[voiced])) if voiced.any() else float(np.mean(loud))
    level = np.maximum(loud - DB_FLOOR, 0.0) / max(reference - DB_FLOOR, 1e-3)
    return (conf / threshold) ** 2 * level


def octave_shift(f0_hz: np.ndarray, f0_range_hz: tuple[float, float],
                 f0_mean_hz: Optional[float] = None, max_octaves: int = MAX_OCTAVES) -> int:
    """The whole number of octaves that puts the most of ``f0_hz`` (the input's note frames)
    inside ``f0_range_hz``; ties go to the shift that brings the geometric mean nearest
    ``f0_mean_hz`` (the range's centre if None), then to the smallest shift."""
    f0 = np.asarray(f0_hz, np.float64)
    f0 = f0[f0 > 0]
    if f0.size == 0:
        return 0
    lo, hi = f0_range_hz
    centre = math.log2(f0_mean_hz) if f0_mean_hz else 0.5 * (math.log2(lo) + math.log2(hi))
    mean = float(np.mean(np.log2(f0)))
    best = None
    for k in range(-max_octaves, max_octaves + 1):
        shifted = f0 * 2.0 ** k
        inside = int(np.count_nonzero((shifted >= lo) & (shifted <= hi)))
        key = (-inside, round(abs(mean + k - centre), 9), abs(k))
        if best is None or key < best[0]:
            best = (key, k)
    return best[1]


def quantile_map(x: np.ndarray, source_percentiles: np.ndarray,
                 target_percentiles: np.ndarray, floor: float = DB_FLOOR) -> np.ndarray:
    """Map values so that the source distribution (its percentiles 1..99) lands on the target's.

    Piecewise linear through the percentile pairs, with slope 1 above the 99th; below the 1st
    it runs linearly to (``floor``, ``floor``), so silence stays silent. Monotone.
    """
    src = np.asarray(source_percentiles, np.float64)[1:100]
    dst = np.maximum.accumulate(np.asarray(target_percentiles, np.float64)[1:100])
    # Strictly increasing knots (ties in the source are a flat stretch of its distribution).
    src = np.maximum.accumulate(src) + 1e-6 * np.arange(len(src))
    if src[0] > floor:
        src = np.concatenate([[floor], src])
        dst = np.concatenate([[min(floor, dst[0])], dst])
    x = np.asarray(x, np.float64)
    y = np.interp(x, src, dst)
    above = x > src[-1]
    y[above] = dst[-1] + (x[above] - src[-1])
    below = x < src[0]
    y[below] = dst[0] + (x[below] - src[0])
    return y


@dataclasses.dataclass
class Adjustment:
    """What :func:`adjust` did.

    Attributes:
        octaves: auto-adjust's octave shift.
        pitch_shift: the total shift applied to f0, in semitones (octaves * 12 + manual).
        loudness_mapping: 'quantiles', 'mean_std' or 'none'.
        loudness_shift: the manual loudness shift (dB).
        median_change_db: the median change of voiced frames' loudness (mapping + shift).
        attenuated_fraction: fraction of frames attenuated as unconfident and quiet.
        notes: why something was skipped.
    """

    octaves: int = 0
    pitch_shift: float = 0.0
    loudness_mapping: str = 'none'
    loudness_shift: float = 0.0
    median_change_db: float = 0.0
    attenuated_fraction: float = 0.0
    notes: list = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        parts = [f'pitch {self.pitch_shift:+.1f} semitones'
                 + (f' (auto {self.octaves:+d} octave{"s" if abs(self.octaves) != 1 else ""})'
                    if self.octaves else '')]
        loud = f'loudness {self.median_change_db:+.1f} dB median'
        if self.loudness_mapping != 'none':
            loud += f' ({self.loudness_mapping.replace("_", "/")} mapping)'
        parts.append(loud)
        if self.attenuated_fraction:
            parts.append(f'{100 * self.attenuated_fraction:.0f}% of frames attenuated')
        return ', '.join(parts) + ''.join(f'; {n}' for n in self.notes)


def adjust(features: Features, stats: Optional[TrainingStats], auto_adjust: bool = True,
           pitch_shift: float = 0.0, loudness_shift: float = 0.0, quiet_db: float = QUIET_DB
           ) -> tuple[np.ndarray, np.ndarray, Adjustment]:
    """The controls the model renders: the input's f0 and loudness, adjusted.

    With ``auto_adjust`` and the training data's ``stats``: f0 shifts by :func:`octave_shift`
    (of the input's note frames, :func:`activity` >= 1); the loudness of every frame goes
    through :func:`quantile_map` from the input's voiced frames' percentiles to the training
    data's (or a mean/std match when the manifest has no percentiles); frames with activity
    below 1 lose up to ``quiet_db`` dB (all of it at activity 0). Then f0 is multiplied by
    2^(pitch_shift / 12) and ``loudness_shift`` dB are added. Loudness stays >= -80 dB.

    Returns:
        (f0_hz, loudness_db) float32 [n_frames], and the :class:`Adjustment`.
    """
    f0 = features.f0_hz.astype(np.float64)
    loud = features.loudness_db.astype(np.float64)
    conf = features.f0_confidence
    info = Adjustment(loudness_shift=float(loudness_shift))
    if auto_adjust:
        threshold = stats.voiced_threshold if stats else VOICED_CONFIDENCE
        voiced = conf >= threshold
        act = activity(loud, conf, features.frame_rate, threshold)
        notes = voiced & (act >= 1.0)
        if stats is None:
            info.notes.append('auto-adjust skipped: the model has no dataset statistics')
        elif not voiced.any():
            info.notes.append('auto-adjust skipped: no voiced frame in the input')
        else:
            if stats.f0_range_hz is not None:
                info.octaves = octave_shift(f0[notes] if notes.any() else f0[voiced],
                                            stats.f0_range_hz, stats.f0_mean_hz)
                f0 = f0 * 2.0 ** info.octaves
            if stats.loudness_percentiles is not None:
                source = np.percentile(loud[voiced], np.arange(101))
                loud = quantile_map(loud, source, np.asarray(stats.loudness_percentiles))
                info.loudness_mapping = 'quantiles'
            elif stats.loudness_mean is not None:
                mean, std = float(np.mean(loud[voiced])), float(np.std(loud[voiced]))
                scale = (stats.loudness_std / std) if (stats.loudness_std and std > 1e-6) \
                    else 1.0
                loud = stats.loudness_mean + (loud - mean) * scale
                info.loudness_mapping = 'mean_std'
            quiet = act < 1.0
            loud = loud - quiet_db * np.clip(1.0 - act, 0.0, 1.0) * quiet
            info.attenuated_fraction = float(np.mean(quiet & (act < 0.999)))
    info.pitch_shift = 12.0 * info.octaves + float(pitch_shift)
    f0 = f0 * 2.0 ** (float(pitch_shift) / 12.0)
    loud = np.maximum(loud + float(loudness_shift), DB_FLOOR)
    voiced = conf >= VOICED_CONFIDENCE
    sel = voiced if voiced.any() else np.ones_like(voiced)
    info.median_change_db = float(np.median(loud[sel] - features.loudness_db[sel]))
    return f0.astype(np.float32), loud.astype(np.float32), info


# ---- transfer ------------------------------------------------------------------------------------
@dataclasses.dataclass
class TransferResult:
    """What :func:`transfer` did: the output file, its length and rate, the input's features
    and the adjusted controls (``power_db`` only for decoders that take the frame power), the
    :class:`Adjustment`, the settings and timings (s)."""

    output: Path
    seconds: float
    sample_rate: int
    features: Features
    f0_hz: np.ndarray
    loudness_db: np.ndarray
    adjustment: Adjustment
    settings: dict
    timings: dict
    clipped: int = 0
    power_db: Optional[np.ndarray] = None

    def summary(self) -> dict:
        return {'output': str(self.output), 'seconds': self.seconds,
                'sample_rate': self.sample_rate, 'settings': self.settings,
                'adjustment': dataclasses.asdict(self.adjustment), 'timings': self.timings,
                'clipped_samples': self.clipped}


def check_output(path: str | os.PathLike, subtype: Optional[str] = None) -> str:
    """The ``soundfile`` format for an output path (from its extension), checked.

    Raises:
        TransferError: unknown extension, or a subtype the format cannot hold.
    """
    import soundfile as sf

    ext = Path(path).suffix.lstrip('.').upper()
    formats = sf.available_formats()
    aliases = {'OGA': 'OGG', 'AIF': 'AIFF'}
    fmt = aliases.get(ext, ext)
    if fmt not in formats:
        raise TransferError(f'--output {path}: unknown audio format {ext or "(no extension)"!r} '
                            f'(use one of .wav, .flac, .ogg, .aiff, ...)')
    if subtype is not None and not sf.check_format(fmt, subtype):
        raise TransferError(f'--subtype {subtype}: not a subtype of {fmt} (one of '
                            f'{", ".join(sf.available_subtypes(fmt))})')
    if subtype is None and sf.default_subtype(fmt) is None:
        raise TransferError(f'--output {path}: the {fmt} format has no default sample format; '
                            f'give --subtype (one of {", ".join(sf.available_subtypes(fmt))})')
    return fmt


def write_audio(blocks: Iterator[np.ndarray], path: str | os.PathLike, sample_rate: int,
                n_samples: int, output_sample_rate: Optional[int] = None,
                subtype: Optional[str] = None) -> int:
    """Write streamed mono blocks to an audio file as they come (format from the extension).

    Args:
        blocks: float32 audio blocks at ``sample_rate``.
        path: the output file (parent directories are created).
        sample_rate: the blocks' rate.
        n_samples: samples to write (the blocks are cut there).
        output_sample_rate: resample to this rate on the way (soxr, streaming).
        subtype: ``soundfile`` subtype (default: the format's).

    Returns:
        How many samples were clipped to [-1, 1] (integer formats only).
    """
    import soundfile as sf
    import soxr

    fmt = check_output(path, subtype)
    out_rate = int(output_sample_rate or sample_rate)
    resampler = None if out_rate == sample_rate else soxr.ResampleStream(
        sample_rate, out_rate, 1, dtype='float32', quality=RESAMPLE_QUALITY)
    is_float = (subtype or sf.default_subtype(fmt) or '').upper() in ('FLOAT', 'DOUBLE',
                                                                     'VORBIS', 'OPUS')
    # Written beside the output and renamed when complete: a failed or interrupted transfer
    # leaves an earlier output file as it was, and never a short one in its place.
    with runtime.atomic_output(path, 'w+b') as partial:
        return _write_blocks(blocks, partial, fmt, subtype, out_rate, resampler, is_float,
                             int(n_samples))


def _write_blocks(blocks, file, fmt, subtype, out_rate, resampler, is_float,
                  n_samples: int) -> int:
    import soundfile as sf

    remaining, clipped = n_samples, 0
    with sf.SoundFile(file, 'w', samplerate=out_rate, channels=1, format=fmt,
                      subtype=subtype) as out:
        def write(block):
            nonlocal clipped
            if not is_float:
                over = np.abs(block) > 1.0
                if over.any():
                    clipped += int(np.count_nonzero(over))
                    block = np.clip(block, -1.0, 1.0)
            out.write(block)

        for block in blocks:
            block = block[:remaining]
            remaining -= len(block)
            if resampler is not None:
                block = resampler.resample_chunk(block, last=False)
            write(block)
        if resampler is not None:
            write(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    return clipped


def _load_model(model, tracking_uri: Optional[str] = None):
    from trainer.serving.inference import TrainedModel

    if isinstance(model, TrainedModel):
        return model
    return TrainedModel.load(str(model), tracking_uri=tracking_uri)


def load_room(reverb_from, sample_rate: int, dry: bool = False,
              tracking_uri: Optional[str] = None):
    """``(the TrainedModel, its learned Reverb)`` of ``--reverb_from`` (a TrainedModel, a model
    directory or ``runs:/RUN_ID``), checked against a render at ``sample_rate``.

    Raises:
        TransferError: ``dry`` as well, a model without a learned reverb, another sample rate.
    """
    from trainer.serving.streaming import StreamingError, room_of

    if dry:
        raise TransferError('--reverb_from and --dry: a dry render has no room; use one')
    room_model = _load_model(reverb_from, tracking_uri)
    try:
        room = room_of(room_model.model)
    except StreamingError as e:
        raise TransferError(f'--reverb_from {reverb_from}: {e}') from None
    if room_model.sample_rate != sample_rate:
        raise TransferError(f'--reverb_from {reverb_from}: its room is at '
                            f'{room_model.sample_rate} Hz, the model renders at {sample_rate} '
                            'Hz (an impulse response is only valid at its own rate)')
    return room_model, room


def default_crepe_capacity(manifest: Optional[dict]) -> str:
    """The CREPE model the training data was prepared with ('full' if the manifest says not)."""
    options = (manifest or {}).get('options') or {}
    return str(options.get('crepe_capacity') or 'full')


def _manifest_option(manifest: Optional[dict], key: str, default):
    value = ((manifest or {}).get('options') or {}).get(key)
    return default if value is None else value


def transfer(model, input_path: str | os.PathLike, output_path: str | os.PathLike, *,
             auto_adjust: bool = True, pitch_shift: float = 0.0, loudness_shift: float = 0.0,
             quiet_db: float = QUIET_DB, dry: bool = False, crepe_capacity: Optional[str] = None,
             crepe_precision: str = 'auto', f0_hop_ms: Optional[float] = None,
             chunk_secs: float = SYNTH_CHUNK_SECS, seed: int = 0,
             output_sample_rate: Optional[int] = None, subtype: Optional[str] = None,
             progress: bool = False, tracking_uri: Optional[str] = None,
             reverb_from=None) -> TransferResult:
    """Render ``input_path`` with a trained model into ``output_path``.

    Args:
        model: a :class:`trainer.serving.inference.TrainedModel`, a model directory or
        ``runs:/RUN_ID``. input_path: any audio file ``soundfile`` reads (any rate, channels mixed
        down). output_path: written block by block; the format follows the extension.
        auto_adjust, pitch_shift, loudness_shift, quiet_db: see :func:`adjust`.
        dry: leave out the learned reverb.
        crepe_capacity: default: the dataset's (its manifest's options), else 'full'.
        crepe_precision: 'auto' (bfloat16 where the hardware has it), 'bfloat16' or 'float32'.
        f0_hop_ms: CREPE's analysis hop (see :func:`analyze`); default: the dataset's
            (``ddsp-prepare --f0_hop_ms``), else every frame.
        chunk_secs: synthesis chunk length (memory/speed; not the result).
        seed: the filtered noise's seed (with the model's ``train.seed``).
        output_sample_rate: resample the output (default: the model's rate).
        subtype: ``soundfile`` subtype of the output (default: the format's, e.g. PCM_16).
        progress: show progress bars.
        reverb_from: another trained model (as ``model``) whose learned room (reverb impulse
            response) replaces this model's: this model's dry synthesis in that room.

    Raises:
        TransferError: unreadable or silent input, a bad output path or option, a
            ``reverb_from`` model without a reverb or at another sample rate.
        trainer.serving.inference.ModelDirError: no model there.
        trainer.serving.streaming.StreamingError: a model this cannot render.
    """
    from tqdm.auto import tqdm

    from trainer.serving.streaming import StreamingSynth

    timings = {}
    t0 = time.perf_counter()
    check_output(output_path, subtype)
    info = audio_info(input_path)
    if chunk_secs <= 0:
        raise TransferError(f'--chunk_secs {chunk_secs:g}: must be positive')
    if output_sample_rate is not None and output_sample_rate <= 0:
        raise TransferError(f'--sample_rate {output_sample_rate}: must be positive')
    trained = _load_model(model, tracking_uri)
    sr, fr = trained.sample_rate, trained.frame_rate
    capacity = crepe_capacity or default_crepe_capacity(trained.manifest)
    viterbi = bool(_manifest_option(trained.manifest, 'viterbi', True))
    if f0_hop_ms is None:
        f0_hop_ms = _manifest_option(trained.manifest, 'f0_hop_ms', None)
    precision = resolve_crepe_precision(crepe_precision)
    room, room_model = None, None
    if reverb_from is not None:
        room_model, room = load_room(reverb_from, sr, dry, tracking_uri)
    synth = StreamingSynth(trained.model, chunk_frames=max(1, int(round(chunk_secs * fr))),
                           reverb=not dry, noise_seed=(trained.config.train.seed, int(seed)),
                           room=room)
    timings['load_s'] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bar = tqdm(total=round(info.seconds, 1), unit='s', desc='analysis', disable=not progress,
               dynamic_ncols=True, bar_format='{l_bar}{bar}| {n:.1f}/{total:.1f} s '
                                              '[{elapsed}<{remaining}]')
    try:
        features = analyze(input_path, sr, fr, crepe_capacity=capacity, viterbi=viterbi,
                           crepe_precision=precision, f0_hop_ms=f0_hop_ms,
                           power_frame_size=(trained.config.model.power_frame_size
                                             if synth.uses_power else None),
                           on_seconds=lambda s: bar.update(round(s, 3)))
    finally:
        bar.close()
    timings['analysis_s'] = time.perf_counter() - t0
    stats = TrainingStats.from_manifest(trained.manifest)
    f0, loud, adjustment = adjust(features, stats, auto_adjust, pitch_shift, loudness_shift,
                                  quiet_db)
    power = None
    if features.power_db is not None:
        # The power moves with the loudness: the training data's statistics are of loudness.
        power = np.maximum(features.power_db + (loud - features.loudness_db), DB_FLOOR)
        power = power.astype(np.float32)

    t0 = time.perf_counter()
    out_rate = int(output_sample_rate or sr)
    bar = tqdm(total=round(features.seconds, 1), unit='s', desc='synthesis',
               disable=not progress, dynamic_ncols=True,
               bar_format='{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]')
    try:
        blocks = synth.render(f0, loud, power,
                              on_frames=lambda n: bar.update(round(n / fr, 3)))
        clipped = write_audio(blocks, output_path, sr, features.n_samples, out_rate, subtype)
    finally:
        bar.close()
    timings['synthesis_s'] = time.perf_counter() - t0
    output = Path(output_path)
    if clipped:
        logger.warning('%s: %d samples exceeded [-1, 1] and were clipped (try a negative '
                       '--loudness_shift, or --subtype FLOAT)', output, clipped)
    settings = {'model': str(trained.model_dir), 'step': trained.step, 'input': str(input_path),
                'input_sample_rate': info.sample_rate, 'input_channels': info.channels,
                'auto_adjust': bool(auto_adjust), 'pitch_shift': float(pitch_shift),
                'loudness_shift': float(loudness_shift), 'quiet_db': float(quiet_db),
                'dry': bool(dry), 'crepe_capacity': capacity, 'viterbi': viterbi,
                'crepe_precision': precision, 'f0_hop_ms': f0_hop_ms,
                'chunk_secs': float(chunk_secs), 'seed': int(seed), 'sample_rate': out_rate,
                'reverb_from': (None if room_model is None else
                                {'model': str(room_model.model_dir), 'step': room_model.step})}
    return TransferResult(output, features.seconds, out_rate, features, f0, loud, adjustment,
                          settings, timings, clipped, power)


# ---- MLflow ------------------------------------------------------------------------------------
def _read_head(path: str | os.PathLike, sample_rate: int, seconds: float) -> np.ndarray:
    """The first ``seconds`` of a file, mono at ``sample_rate``."""
    parts, total, limit = [], 0, int(seconds * sample_rate)
    for (block,) in stream_audio(path, (sample_rate,)):
        parts.append(block)
        total += len(block)
        if total >= limit:
            break
    return np.concatenate(parts)[:limit] if parts else np.zeros(0, np.float32)


def log_to_mlflow(result: TransferResult, run_id: str, tracking_uri: Optional[str] = None,
                  artifact_path: Optional[str] = None) -> str:
    """Add a transfer to the model's MLflow run (its status is left as it is): the input file,
    the output file, ``spectrogram.png`` (input over output, the first 30 s) and
    ``transfer.json`` (settings, adjustment, timings) under ``transfer/<time>-<input name>/``.

    Returns:
        The artifact path used.
    """
    from trainer.tracking import artifacts
    from trainer.tracking.tracker import make_client, resolve_tracking_uri

    client = make_client(resolve_tracking_uri(tracking_uri))
    stem = Path(result.settings['input']).stem
    safe = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in stem)[:60] or 'input'
    artifact_path = artifact_path or f'transfer/{time.strftime("%Y%m%d-%H%M%S")}-{safe}'
    with tempfile.TemporaryDirectory(prefix='ddsp-transfer-') as tmp:
        folder = Path(tmp)
        source = Path(result.settings['input'])
        shutil.copyfile(source, folder / f'input{source.suffix or ".audio"}')
        shutil.copyfile(result.output, folder / f'output{result.output.suffix}')
        rate = result.sample_rate
        original = _read_head(source, rate, SPECTROGRAM_SECS)
        rendered = _read_head(result.output, rate, SPECTROGRAM_SECS)
        title = (f'ddsp-transfer: {result.adjustment.describe()}'
                 + (' (first 30 s)' if result.seconds > SPECTROGRAM_SECS else ''))
        artifacts.spectrogram_comparison_png(folder / 'spectrogram.png', original, rendered,
                                             rate, title=title[:300],
                                             labels=(f'input: {source.name}',
                                                     f'output: {result.output.name}'))
        (folder / 'transfer.json').write_text(json.dumps(result.summary(), indent=2,
                                                         default=float) + '\n')
        client.log_artifacts(run_id, str(folder), artifact_path)
    return artifact_path


# ---- CLI ----------------------------------------------------------------------------------------
def build_arg_parser() -> argparse.ArgumentParser:
    from ddsp_core import runtime

    p = argparse.ArgumentParser(
        prog='ddsp-transfer', allow_abbrev=False, formatter_class=runtime.HelpFormatter,
        description='Timbre transfer: render a recording (any length, sample rate, channels, '
                    'format) with a trained model. Its pitch and loudness are extracted as '
                    'ddsp-prepare does, adjusted to the training data, and synthesised in '
                    'chunks with the state carried across them.',
        epilog='Exit codes: 0 done, 1 failed, 2 bad usage (bad option, unreadable or silent '
               'input, a model directory without a checkpoint).')
    p.add_argument('--model', required=True,
                   help='a ddsp-train --model_dir, or runs:/RUN_ID (its checkpoints/ artifacts)')
    p.add_argument('--input', required=True, help='audio file to transfer')
    p.add_argument('--output', required=True,
                   help='audio file to write (format from the extension: .wav, .flac, ...)')
    p.add_argument('--auto_adjust', action=argparse.BooleanOptionalAction, default=True,
                   help="shift the pitch by octaves towards the training data's range, map the "
                        "loudness onto its distribution, attenuate unconfident quiet frames")
    p.add_argument('--pitch_shift', type=float, default=0.0,
                   help='semitones added to the pitch (after auto-adjust; any amount)')
    p.add_argument('--loudness_shift', type=float, default=0.0,
                   help='dB added to the loudness (after auto-adjust)')
    p.add_argument('--quiet_db', type=float, default=QUIET_DB,
                   help='auto-adjust: most dB taken off unconfident, quiet frames')
    p.add_argument('--dry', action='store_true',
                   help='render without the learned reverb (dereverberated)')
    p.add_argument('--reverb_from', default=None, metavar='MODEL_OR_RUN',
                   help="render in another model's learned room: this model's dry synthesis "
                        "through that model's reverb impulse response (a ddsp-train "
                        '--model_dir or runs:/RUN_ID at the same sample rate)')
    p.add_argument('--crepe_capacity', default=None,
                   choices=('tiny', 'small', 'medium', 'large', 'full'),
                   help="CREPE model for the input's pitch (default: the one the training data "
                        'was prepared with)')
    p.add_argument('--crepe_precision', default='auto', choices=CREPE_PRECISIONS,
                   help="CREPE's number format: auto is bfloat16 where the hardware has it (a CPU "
                        'with AVX-512 BF16/AMX under oneDNN, a GPU of compute capability >= 8.0), '
                        'else float32')
    p.add_argument('--f0_hop_ms', type=float, default=None, metavar='MS',
                   help='run CREPE every MS milliseconds (10: its native hop) and interpolate f0 '
                        'to the frame rate: faster, at a small accuracy cost (docs/transfer.md); '
                        'default: as the training data was prepared (every frame unless '
                        'ddsp-prepare had --f0_hop_ms)')
    p.add_argument('--chunk_secs', type=float, default=SYNTH_CHUNK_SECS,
                   help='seconds synthesised per step (memory; the audio does not depend on it)')
    p.add_argument('--sample_rate', type=int, default=None,
                   help="sample rate of the output (default: the model's)")
    p.add_argument('--subtype', default=None,
                   help='soundfile subtype of the output, e.g. PCM_24 or FLOAT (default: the '
                        "format's)")
    p.add_argument('--seed', type=int, default=0, help="seed of the model's filtered noise")
    p.add_argument('--log_to_mlflow', action='store_true',
                   help="add the input, output and a spectrogram comparison to the model's "
                        'MLflow run')
    p.add_argument('--tracking_uri', default=None,
                   help="MLflow tracking URI (default: a model directory's run's, from its "
                        "mlflow_run.json; for runs:/ MLFLOW_TRACKING_URI or MLflow's default)")
    p.add_argument('--no_progress', action='store_true', help='no progress bars')
    p.add_argument('--verbose', action='store_true', help="TensorFlow's own start-up logs")
    return p


def _error(message: str) -> int:
    print(f'ddsp-transfer: error: {message}', file=sys.stderr)
    return EXIT_USAGE


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``ddsp-transfer``."""
    from ddsp_core import runtime

    args = runtime.open_cli(build_arg_parser(), argv)
    if isinstance(args, int):
        return args
    # Cheap checks first, before TensorFlow starts.
    try:
        check_output(args.output, args.subtype)
        info = audio_info(args.input)
    except TransferError as e:
        return _error(str(e))
    if args.chunk_secs <= 0:
        return _error(f'--chunk_secs {args.chunk_secs:g}: must be positive')
    if args.sample_rate is not None and args.sample_rate <= 0:
        return _error(f'--sample_rate {args.sample_rate}: must be positive')
    if args.quiet_db < 0:
        return _error(f'--quiet_db {args.quiet_db:g}: must be >= 0')
    if args.f0_hop_ms is not None:
        try:
            analysis_rate(1, args.f0_hop_ms)
        except ValueError as e:
            return _error(f'--f0_hop_ms: {e}')
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        return _error(f'--output {args.output} is the input file')
    if args.reverb_from is not None and args.dry:
        return _error('--reverb_from and --dry: a dry render has no room; use one')
    runtime.import_tensorflow()
    from trainer.model.config import ConfigError
    from trainer.serving.inference import ModelDirError, TrainedModel
    from trainer.serving.streaming import StreamingError
    from trainer.tracking.tracker import quiet_mlflow_logging

    quiet_mlflow_logging(args.verbose)
    try:
        trained = TrainedModel.load(args.model, tracking_uri=args.tracking_uri)
    except (ModelDirError, ConfigError) as e:
        return _error(str(e))
    except Exception as e:  # noqa: BLE001 - e.g. a checkpoint that does not restore
        logger.debug('loading the model failed', exc_info=True)
        print(f'ddsp-transfer: failed: cannot load the model {args.model}: '
              f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}',
              file=sys.stderr)
        return EXIT_FAILED
    room_model = None
    if args.reverb_from is not None:
        try:
            room_model, _ = load_room(args.reverb_from, trained.sample_rate,
                                      tracking_uri=args.tracking_uri)
        except (ModelDirError, ConfigError) as e:
            return _error(f'--reverb_from {args.reverb_from}: {e}')
        except TransferError as e:
            return _error(str(e))
    capacity = args.crepe_capacity or default_crepe_capacity(trained.manifest)
    print(f'ddsp-transfer: {info.path} ({info.seconds:.1f} s, {info.sample_rate} Hz, '
          f'{info.channels} channel{"s" if info.channels != 1 else ""}) with the model at step '
          f'{trained.step} ({trained.sample_rate} Hz); CREPE {capacity} '
          f'{resolve_crepe_precision(args.crepe_precision)}; '
          f'{runtime.describe_devices()}', file=sys.stderr, flush=True)
    try:
        result = transfer(trained, args.input, args.output, auto_adjust=args.auto_adjust,
                          pitch_shift=args.pitch_shift, loudness_shift=args.loudness_shift,
                          quiet_db=args.quiet_db, dry=args.dry, crepe_capacity=capacity,
                          crepe_precision=args.crepe_precision, f0_hop_ms=args.f0_hop_ms,
                          chunk_secs=args.chunk_secs, seed=args.seed,
                          output_sample_rate=args.sample_rate, subtype=args.subtype,
                          progress=not args.no_progress, reverb_from=room_model)
    except (TransferError, StreamingError) as e:
        return _error(str(e))
    except Exception as e:  # noqa: BLE001 - report any failure with exit code 1
        logger.debug('transfer failed', exc_info=True)
        print(f'ddsp-transfer: failed: {type(e).__name__}: {e}', file=sys.stderr)
        return EXIT_FAILED
    synth_s = result.timings.get('synthesis_s') or float('nan')
    print(f'ddsp-transfer: wrote {result.output} ({result.seconds:.1f} s at {result.sample_rate} '
          f'Hz); {result.adjustment.describe()}; analysis {result.timings["analysis_s"]:.1f} s, '
          f'synthesis {synth_s:.1f} s ({result.seconds / synth_s:.0f}x realtime)',
          file=sys.stderr)
    if args.log_to_mlflow:
        run_id = trained.run_info.get('run_id')
        if str(args.model).startswith('runs:/'):
            run_id = str(args.model)[len('runs:/'):].strip('/').split('/')[0]
        if not run_id:
            print(f'ddsp-transfer: warning: {args.model} has no MLflow run '
                  '(no mlflow_run.json); nothing logged', file=sys.stderr)
            return EXIT_OK
        # a runs:/ model is logged to the store it was downloaded from (its mlflow_run.json
        # names the training machine's store); a model directory to its run's store
        tracking_uri = args.tracking_uri
        if tracking_uri is None:
            from trainer.tracking.tracker import resolve_tracking_uri

            tracking_uri = (resolve_tracking_uri(None) if str(args.model).startswith('runs:/')
                            else trained.run_info.get('tracking_uri'))
        try:
            where = log_to_mlflow(result, run_id, tracking_uri)
            print(f'ddsp-transfer: logged the input, output and spectrogram to MLflow run '
                  f'{run_id} under {where}/', file=sys.stderr)
            from trainer.tracking.tracker import print_run_link

            print_run_link('ddsp-transfer', tracking_uri, run_id, where)
        except Exception as e:  # noqa: BLE001 - the output is written; say why MLflow failed
            print(f'ddsp-transfer: warning: could not log to MLflow run {run_id}: {e}',
                  file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
