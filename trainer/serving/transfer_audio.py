"""ddsp-transfer's audio files: the input opened, checked and streamed (decoded, mixed down and
resampled by ``ddsp_core.audio_stream``, as ``ddsp-prepare`` reads its inputs), the output
checked and written block by block (resampled on the way), and :class:`TransferError`, the
error of a bad input, output or option (exit code 2).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ddsp_core import audio_stream, runtime


class TransferError(ValueError):
    """Bad input to a transfer (unreadable or silent audio, a bad option); the message names
    the file or option (exit code 2)."""


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
                 block: int = audio_stream.READ_BLOCK) -> Iterator[tuple[np.ndarray, ...]]:
    """Decode a file block by block, mixed down to mono, resampled to each rate
    (``ddsp_core.audio_stream.stream_file``, as ``ddsp-prepare`` reads its inputs).

    ``soxr``'s streaming resampler (quality 'HQ'), whose concatenated output equals
    resampling the whole file at once; memory is bounded by ``block``.

    Yields:
        Tuples with one float32 array per target rate (lengths vary; the resamplers' delay is
        flushed with the last block).

    Raises:
        TransferError: the file cannot be decoded, or holds NaN/Inf samples, or no samples.
    """
    import soundfile as sf

    path = str(path)
    received = 0

    def check(mono: np.ndarray, before: int) -> None:
        nonlocal received
        finite = np.isfinite(mono)
        if not finite.all():
            bad = before + int(np.argmin(finite))
            raise TransferError(f'{path}: contains NaN/Inf samples (first at '
                                f'{bad / rate:.3f} s)')
        received = before + len(mono)

    try:
        with sf.SoundFile(path) as snd:
            rate = int(snd.samplerate)
            for blocks in audio_stream.stream_file(snd, target_rates, block, check):
                if not received:
                    raise TransferError(f'{path}: no audio (0 samples)')
                yield blocks
    except (sf.SoundFileError, RuntimeError) as e:
        raise _sound_file_error(path, e) from e


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

    fmt = check_output(path, subtype)
    out_rate = int(output_sample_rate or sample_rate)
    resampler = (None if out_rate == sample_rate else
                 audio_stream.resampler(sample_rate, out_rate))
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


def read_head(path: str | os.PathLike, sample_rate: int, seconds: float) -> np.ndarray:
    """The first ``seconds`` of a file, mono at ``sample_rate``."""
    parts, total, limit = [], 0, int(seconds * sample_rate)
    for (block,) in stream_audio(path, (sample_rate,)):
        parts.append(block)
        total += len(block)
        if total >= limit:
            break
    return np.concatenate(parts)[:limit] if parts else np.zeros(0, np.float32)
