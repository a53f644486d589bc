"""A minimal Standard MIDI File writer for the benchmarks that render melodies with FluidSynth
(``bench_quality``, ``bench_crepe_precision``)."""

from __future__ import annotations

import struct
from typing import Iterable


def vlq(value: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def smf_bytes(events: Iterable[tuple[int, bytes]], ppq: int, tempo_usecs: int,
              end_after: int = 0) -> bytes:
    """A format-0 file: a tempo (microseconds per quarter note), then ``events`` (absolute tick,
    channel message) in the order given, then the end of the track ``end_after`` ticks after the
    last event."""
    track = bytearray(vlq(0) + b'\xff\x51\x03' + tempo_usecs.to_bytes(3, 'big'))
    now = 0
    for at, data in events:
        track += vlq(at - now) + data
        now = at
    track += vlq(end_after) + b'\xff\x2f\x00'
    header = b'MThd' + struct.pack('>IHHH', 6, 0, 1, ppq)
    return header + b'MTrk' + struct.pack('>I', len(track)) + bytes(track)
