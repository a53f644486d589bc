"""Audio decoding and resampling for the dataset pipelines (numpy only; no Beam transforms).

Files are read through ``soundfile`` (wav, flac, ogg, mp3 and the other libsndfile formats) from any
Beam FileSystems path (local, ``gs://``...), mixed down to mono and resampled with ``soxr``'s
streaming resampler, block by block, so that memory stays bounded for hour-long recordings. The
decoding, mix-down and resampling are ``ddsp_core.audio_stream``'s (which ``ddsp-transfer`` uses
too); this module adds the paths (Beam FileSystems) and the validation of dataset inputs.

Reading is two passes: :func:`scan_audio` validates the whole file first (decodable, non-empty, long
enough, finite, not all zero) and raises :class:`BadInputError` with a reason; only then does
:func:`stream_resampled` decode it again and yield resampled blocks. A file is therefore either
rejected as a whole or processed as a whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import struct
from typing import BinaryIO, Iterator, Optional

import numpy as np
import soundfile as sf

from ddsp_core import audio_stream


class BadInputError(ValueError):
    """A source file that cannot be used; the message names the file and the reason."""


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What :func:`scan_audio` learned about a valid file.

    Attributes:
        path: the file's path (as given).
        sample_rate: native sample rate (Hz).
        channels: number of channels in the file (mixed down to mono when read).
        n_samples: number of (multi-channel) frames decoded, at the native rate.
        peak: largest absolute sample of the mono mix-down.
        sha256: hex digest of the decoded mono float32 samples (a content hash independent of the
            container format's metadata).
    """

    path: str
    sample_rate: int
    channels: int
    n_samples: int
    peak: float
    sha256: str

    @property
    def seconds(self) -> float:
        return self.n_samples / float(self.sample_rate)


def _is_local(path: str) -> bool:
    return '://' not in path or path.startswith('file://')


def _local_path(path: str) -> str:
    return path[len('file://'):] if path.startswith('file://') else path


def check_local_file(path: str) -> int:
    """Why a local path cannot be read, as a :class:`BadInputError`, before decoding starts.

    Returns:
        The file's size in bytes.

    Raises:
        BadInputError: missing, a dangling symlink ("missing target"), a directory, unreadable
            ("permission denied") or empty ("empty file (0 bytes)").
    """
    local = _local_path(path)
    if not os.path.exists(local):
        if os.path.islink(local):
            raise BadInputError(f'{path}: missing target (dangling symlink to '
                                f'{os.readlink(local)})')
        raise BadInputError(f'{path}: file not found')
    if os.path.isdir(local):
        raise BadInputError(f'{path}: is a directory')
    try:
        with open(local, 'rb') as f:
            f.read(1)
    except PermissionError:
        raise BadInputError(f'{path}: permission denied') from None
    except OSError as e:
        raise BadInputError(f'{path}: unreadable ({e.strerror or e})') from None
    size = os.path.getsize(local)
    if size == 0:
        raise BadInputError(f'{path}: empty file (0 bytes)')
    return size


@contextlib.contextmanager
def open_sound_file(path: str):
    """``soundfile.SoundFile`` for a local path or any Beam FileSystems path, read-only."""
    if _is_local(path):
        check_local_file(path)
        with open(_local_path(path), 'rb') as fobj, sf.SoundFile(fobj) as snd:
            yield snd
        return
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, mime_type='application/octet-stream',
                          compression_type='uncompressed') as fobj:
        with sf.SoundFile(fobj) as snd:
            yield snd


def wav_declared_frames(fobj: BinaryIO) -> Optional[int]:
    """Frames a RIFF/WAVE header promises (data chunk size / block align), or None if the file
    is not a plain RIFF WAVE or the header does not say (streamed files, RF64).

    libsndfile quietly clamps a truncated WAV's length to the bytes present, so the header is
    read here to tell a truncated file from a short one.
    """
    fobj.seek(0)
    head = fobj.read(12)
    if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE':
        return None
    block_align = None
    while True:
        chunk = fobj.read(8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack('<I', chunk[4:])[0]
        if cid == b'fmt ':
            fmt = fobj.read(size)
            if len(fmt) < 16:
                return None
            block_align = struct.unpack('<H', fmt[12:14])[0]
            if size % 2:
                fobj.read(1)
        elif cid == b'data':
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        else:
            fobj.seek(size + (size % 2), os.SEEK_CUR)


def declared_frames(path: str, snd: sf.SoundFile) -> Optional[int]:
    """How many frames the file's header says it holds (WAV: its data chunk; other formats:
    libsndfile's count from the header), or None when unknown."""
    if _is_local(path) and snd.format in ('WAV', 'WAVEX'):
        with open(_local_path(path), 'rb') as fobj:
            try:
                return wav_declared_frames(fobj)
            except (OSError, struct.error):
                return None
    frames = int(snd.frames)
    return frames if 0 < frames < (1 << 62) else None


def scan_audio(path: str, min_secs: float = 0.0) -> AudioInfo:
    """Decode a whole file once and check that it is usable.

    Args:
        path: local or Beam FileSystems path of an audio file.
        min_secs: shortest acceptable duration in seconds.

    Returns:
        An :class:`AudioInfo`.

    Raises:
        BadInputError: the file cannot be used; the message names the file and the reason:
            missing ("file not found", or "missing target" for a dangling symlink), "permission
            denied", "empty file (0 bytes)", unsupported or corrupt, "truncated" (the header
            promises more audio than the file holds), no samples, shorter than ``min_secs``,
            NaN/Inf samples, or all zeros.
    """
    digest = hashlib.sha256()
    n = 0
    peak = 0.0
    declared = None
    sample_rate = channels = 0
    try:
        with open_sound_file(path) as snd:
            sample_rate, channels = int(snd.samplerate), int(snd.channels)
            declared = declared_frames(path, snd)
            for mono in audio_stream.mono_blocks(snd):
                finite = np.isfinite(mono)
                if not finite.all():
                    bad = n + int(np.argmin(finite))
                    raise BadInputError(
                        f'{path}: contains NaN/Inf samples (first at sample {bad}, '
                        f'{bad / sample_rate:.3f} s)')
                peak = max(peak, float(np.abs(mono).max()))
                digest.update(np.ascontiguousarray(mono, dtype='<f4').tobytes())
                n += mono.shape[0]
    except BadInputError:
        raise
    except FileNotFoundError as e:
        raise BadInputError(f'{path}: file not found ({e})') from e
    except PermissionError:
        if not _is_local(path):
            raise  # remote: may be transient (credentials being refreshed); the runner retries
        raise BadInputError(f'{path}: permission denied') from None
    except sf.SoundFileError as e:  # libsndfile could not open or decode it
        if declared and sample_rate and n:  # it failed part-way: the rest of the file is missing
            raise BadInputError(
                f'{path}: truncated or corrupt: header {declared / sample_rate:.1f} s, decoded '
                f'{n / sample_rate:.1f} s before the error ({e})') from e
        raise BadInputError(f'{path}: unreadable or corrupt audio ({type(e).__name__}: {e})') from e
    except OSError as e:
        if not _is_local(path):
            raise  # a remote read error may be transient: let the runner retry the file
        raise BadInputError(f'{path}: unreadable ({type(e).__name__}: {e})') from e
    if sample_rate <= 0:
        raise BadInputError(f'{path}: invalid sample rate {sample_rate}')
    if declared is not None and n < declared:
        raise BadInputError(f'{path}: truncated: header {declared / sample_rate:.1f} s, decoded '
                            f'{n / sample_rate:.1f} s')
    if n == 0:
        raise BadInputError(f'{path}: no audio (0 samples)')
    if n / sample_rate < min_secs:
        raise BadInputError(
            f'{path}: too short ({n / sample_rate:.3f} s < --min_secs {min_secs:g} s)')
    if peak == 0.0:
        raise BadInputError(f'{path}: silent (all {n} samples are zero)')
    return AudioInfo(path, sample_rate, channels, n, peak, digest.hexdigest())


def resampled_length(n_samples: int, source_rate: int, target_rate: int) -> int:
    """Number of samples ``n_samples`` at ``source_rate`` have at ``target_rate`` (rounded)."""
    if source_rate == target_rate:
        return int(n_samples)
    return int(round(n_samples * target_rate / source_rate))


def stream_resampled(path: str, target_rates: tuple[int, ...],
                     block: int = audio_stream.READ_BLOCK) -> Iterator[tuple[np.ndarray, ...]]:
    """Decode a file block by block, mono, resampled to each of ``target_rates``
    (``ddsp_core.audio_stream.stream_file``).

    Uses ``soxr.ResampleStream`` (quality ``'HQ'``), whose concatenated output equals
    ``soxr.resample`` of the whole file; memory is bounded by ``block``.

    Args:
        path: local or Beam FileSystems path.
        target_rates: output sample rates in Hz.
        block: source frames decoded per step.

    Yields:
        Tuples with one float32 array [n_i] per target rate (lengths differ between rates and
        blocks; the resampler's delay is flushed at the end).
    """
    with open_sound_file(path) as snd:
        yield from audio_stream.stream_file(snd, target_rates, block)


def load_audio(path: str, sample_rate: int) -> np.ndarray:
    """A whole file, mono, resampled to ``sample_rate`` (float32 [n]). For tests and small files;
    the pipeline streams with :func:`stream_resampled` instead."""
    parts = [blocks[0] for blocks in stream_resampled(path, (sample_rate,))]
    return np.concatenate(parts).astype(np.float32, copy=False)
