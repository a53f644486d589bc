"""Audio streaming: decode, mix down, resample and buffer, block by block (numpy, soundfile, soxr).

The one place where an audio file becomes mono float32 blocks at the rates the features need;
``ddsp-prepare`` (``pipelines.audio_io``, which opens local and Beam FileSystems paths and
validates files) and ``ddsp-transfer`` (``trainer`` side: its input and its output) both go
through it, so that they decode and resample a file to the same samples.

- :func:`mono_blocks`: an open ``soundfile.SoundFile`` read ``block`` frames at a time, mixed
  down to mono (the mean of the channels, in float32).
- :func:`resample_blocks`: mono blocks resampled to several rates at once by ``soxr``'s streaming
  resampler (quality :data:`RESAMPLE_QUALITY`), whose concatenated output equals
  ``soxr.resample`` of the whole signal; :func:`resampler` is one such stream (e.g. for writing).
- :func:`stream_file`: both, for an open file.
- :class:`SignalBuffer`: a streamed 1-D signal of which only a window is kept, read at absolute
  positions (zeros before the start and after the end), so that memory stays bounded in the
  file's length.

Imports neither Beam nor MLflow (the layering rule of ``ddsp_core``).
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

#: Source frames decoded per read.
READ_BLOCK = 1 << 16
#: soxr's quality for every resampling of audio (input and output).
RESAMPLE_QUALITY = 'HQ'

__all__ = ['READ_BLOCK', 'RESAMPLE_QUALITY', 'SignalBuffer', 'mono_blocks', 'resample_blocks',
           'resampler', 'stream_file']


def mono_blocks(snd, block: int = READ_BLOCK) -> Iterator[np.ndarray]:
    """Blocks of an open ``soundfile.SoundFile``, mono float32 [<= block] (channels averaged),
    until the end of the file."""
    while True:
        data = snd.read(frames=block, dtype='float32', always_2d=True)
        if data.shape[0] == 0:
            return
        yield data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def resampler(source_rate: int, target_rate: int):
    """A ``soxr.ResampleStream`` from ``source_rate`` to ``target_rate`` (mono float32, quality
    :data:`RESAMPLE_QUALITY`); ``resample_chunk(x, last=True)`` flushes its delay."""
    import soxr

    return soxr.ResampleStream(int(source_rate), int(target_rate), 1, dtype='float32',
                               quality=RESAMPLE_QUALITY)


def resample_blocks(blocks: Iterable[np.ndarray], source_rate: int,
                    target_rates: Sequence[int]) -> Iterator[tuple[np.ndarray, ...]]:
    """Mono blocks at ``source_rate`` resampled to each of ``target_rates``.

    A target equal to the source passes the blocks through. The resamplers' delay is flushed with
    the last block (which is held back one step for that), so the concatenated output per rate
    equals resampling the whole signal at once.

    Yields:
        Tuples with one float32 array per target rate (lengths differ between rates and blocks);
        always at least one tuple (empty arrays for an empty input).
    """
    streams = [None if int(r) == int(source_rate) else resampler(source_rate, r)
               for r in target_rates]
    pending = None
    for mono in blocks:
        if pending is not None:
            yield tuple(pending if s is None else s.resample_chunk(pending, last=False)
                        for s in streams)
        pending = np.ascontiguousarray(mono, dtype=np.float32)
    if pending is None:
        pending = np.zeros(0, np.float32)
    yield tuple(pending if s is None else s.resample_chunk(pending, last=True) for s in streams)


def stream_file(snd, target_rates: Sequence[int], block: int = READ_BLOCK,
                check=None) -> Iterator[tuple[np.ndarray, ...]]:
    """An open ``soundfile.SoundFile`` decoded ``block`` frames at a time, mixed down to mono and
    resampled to each of ``target_rates`` (:func:`mono_blocks`, :func:`resample_blocks`).

    Args:
        snd: the open file.
        target_rates: output sample rates (Hz).
        block: source frames per read (memory).
        check: optional ``check(mono_block, samples_before)`` called on each mono block at the
            source rate before it is resampled (e.g. to refuse NaN/Inf with the position).
    """
    def checked() -> Iterator[np.ndarray]:
        done = 0
        for mono in mono_blocks(snd, block):
            if check is not None:
                check(mono, done)
            done += len(mono)
            yield mono

    yield from resample_blocks(checked(), int(snd.samplerate), target_rates)


class SignalBuffer:
    """A streamed 1-D float32 signal of which only a window is kept, read at absolute positions.

    Samples are appended as they are decoded; :meth:`get` returns any span, zeros before the
    start, past what was received and past ``length`` (when the signal's logical length is
    known ahead, e.g. from a validated file's header); :meth:`drop_before` forgets what is no
    longer needed.
    """

    def __init__(self, length: Optional[int] = None):
        self.data = np.zeros(0, np.float32)
        self.offset = 0  # absolute position of data[0]
        self.length = None if length is None else int(length)

    @property
    def received(self) -> int:
        """Samples appended so far (absolute position of the end)."""
        return self.offset + len(self.data)

    def append(self, x: np.ndarray) -> None:
        self.data = np.concatenate([self.data, np.asarray(x, np.float32)])

    def ready(self, end: int, finished: bool = False) -> bool:
        """Whether samples up to ``end`` (or the logical length) are in, or the stream ended."""
        limit = end if self.length is None else min(end, self.length)
        return finished or self.received >= limit

    def get(self, start: int, end: int) -> np.ndarray:
        """Samples ``[start, end)``, float32 [end - start]."""
        out = np.zeros(end - start, np.float32)
        hi = self.received if self.length is None else min(self.received, self.length)
        lo, hi = max(start, self.offset), min(end, hi)
        if hi > lo:
            out[lo - start:hi - start] = self.data[lo - self.offset:hi - self.offset]
        return out

    def drop_before(self, position: int) -> None:
        """Forget the samples before ``position``."""
        cut = max(0, min(position - self.offset, len(self.data)))
        if cut:
            self.data = self.data[cut:]
            self.offset += cut
