"""Framing arithmetic shared by the frame-rate features (loudness, power, RMS) and CREPE f0.

Pure Python (no TensorFlow), so `ddsp_core.f0` can use it without importing the spectral ops.
For a frame of `frame_size` samples every `hop_size` samples, three paddings:

- 'center': pad `frame_size // 2` on both sides; frame i is centred on sample `i * hop_size`;
  `n_frames = 1 + n_samples // hop_size` (64000 samples at hop 64 -> 1001 frames).
- 'same': pad at the end only; `n_frames = ceil(n_samples / hop_size)`; frame i starts at sample
  `i * hop_size`.
- 'valid': no padding; `n_frames = 1 + (n_samples - frame_size) // hop_size`.
"""

from __future__ import annotations

import math

PADDING_MODES = ('center', 'same', 'valid')

__all__ = ['PADDING_MODES', 'check_padding', 'frame_hop', 'get_framed_lengths']


def check_padding(padding, fn: str) -> None:
    """Raises ValueError naming `fn` unless `padding` is one of PADDING_MODES."""
    if padding not in PADDING_MODES:
        raise ValueError(f'{fn}: padding must be one of {PADDING_MODES}, got {padding!r}.')


def frame_hop(sample_rate, frame_rate, fn: str = 'frame_hop') -> int:
    """Samples between frames at `frame_rate` frames per second: `int(sample_rate // frame_rate)`.

    A frame rate that does not divide the sample rate (44.1 kHz at 250 frames/s) gets the hop
    rounded down, as in the reference: 176 samples, so the frames come 250.57 times a second and
    their count is `get_framed_lengths(n_samples, frame_size, 176, padding)[0]` (4 s, 'center':
    1003 frames, not 1001); `spectral_ops.pad_or_trim_to_expected_length` trims such a vector
    to a nominal count.

    Raises:
      ValueError: A rate is not positive, or the frame rate exceeds the sample rate.
    """
    for name, value in (('sample_rate', sample_rate), ('frame_rate', frame_rate)):
        try:
            positive = not isinstance(value, bool) and float(value) > 0
        except (TypeError, ValueError):
            positive = False
        if not positive:
            raise ValueError(f'{fn}: {name} must be a positive number, got {value!r}.')
    hop = int(float(sample_rate) // float(frame_rate))
    if hop < 1:
        raise ValueError(f'{fn}: frame_rate={frame_rate} is above sample_rate={sample_rate}; '
                         f'a frame needs at least one sample of hop.')
    return hop


def get_framed_lengths(input_length, frame_size, hop_size, padding='center'):
    """Number of frames, and the padded length, of framing a signal (see the module docstring).

    Args:
      input_length: Number of samples of the signal.
      frame_size: Samples per frame.
      hop_size: Samples between frame starts.
      padding: 'center' (padded_length = input_length + frame_size), 'same'
        (n_frames = ceil(input_length / hop_size), padded_length =
        (n_frames - 1) * hop_size + frame_size) or 'valid' (padded_length = input_length).

    Returns:
      (n_frames, padded_length), both ints.
    """
    check_padding(padding, 'get_framed_lengths')
    input_length, frame_size, hop_size = int(input_length), int(frame_size), int(hop_size)
    if frame_size < 1 or hop_size < 1:
        raise ValueError(f'get_framed_lengths: frame_size and hop_size must be positive, got '
                         f'frame_size={frame_size}, hop_size={hop_size}.')
    if input_length < 0:
        raise ValueError(f'get_framed_lengths: input_length must be >= 0, got {input_length}.')

    def n_frames_of(length):
        return (length - frame_size) // hop_size + 1

    if padding == 'valid':
        if input_length < frame_size:
            raise ValueError(f"get_framed_lengths: with padding='valid' the input "
                             f"({input_length} samples) must be at least one frame "
                             f"({frame_size} samples) long.")
        return n_frames_of(input_length), input_length
    if padding == 'center':
        padded_length = input_length + frame_size
        return n_frames_of(padded_length), padded_length
    n_frames = int(math.ceil(input_length / hop_size))
    return n_frames, (n_frames - 1) * hop_size + frame_size
