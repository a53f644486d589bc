"""Spectral analysis: STFT, magnitude/mel/MFCC spectrograms, loudness, power, RMS energy and f0.

Conventions: audio is float32 [batch, n_samples] (most functions also take [n_samples] and then
drop the batch axis of their result); spectrograms are [batch, n_frames, n_bins]; frame-rate
features are [batch, n_frames]. The TensorFlow functions are differentiable w.r.t. the audio.

Framing of frame-rate features (`get_framed_lengths`, `pad`) follows three modes, for a frame of
`frame_size` samples every `hop_size` samples:

- 'center': pad `frame_size // 2` on both sides; frame i is centred on sample `i * hop_size`;
  `n_frames = 1 + n_samples // hop_size` (64000 samples at hop 64 -> 1001 frames).
- 'same': pad at the end only; `n_frames = ceil(n_samples / hop_size)`; frame i starts at sample
  `i * hop_size`.
- 'valid': no padding; `n_frames = 1 + (n_samples - frame_size) // hop_size`.

The hop of a frame rate is `sample_rate // frame_rate` samples, rounded down when the rate does
not divide the sample rate (44.1 kHz at 250 frames/s: 176 samples), as in the reference.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ddsp_core import core, f0
from ddsp_core.dsp.framing import PADDING_MODES, check_padding, frame_hop, get_framed_lengths
from ddsp_core.f0 import CREPE_FRAME_SIZE, CREPE_SAMPLE_RATE

F0_RANGE = 127.0  # MIDI.
DB_RANGE = core.DB_RANGE  # dB (80.0).
# A-weighting is floored at this many dB (it is -inf at 0 Hz).
A_WEIGHTING_MIN_DB = -80.0

__all__ = [
    'CREPE_FRAME_SIZE', 'CREPE_SAMPLE_RATE', 'DB_RANGE', 'F0_RANGE', 'PADDING_MODES',
    'a_weighting', 'compute_f0', 'compute_logmag', 'compute_logmel', 'compute_loudness',
    'compute_mag', 'compute_mel', 'compute_mfcc', 'compute_power', 'compute_rms_energy',
    'fft_length', 'get_framed_lengths', 'pad', 'pad_or_trim_to_expected_length', 'safe_log',
    'stft', 'stft_np',
]

safe_log = core.safe_log


# ------------------------------------------------------------------------------------------------
# STFT and spectrograms.
# ------------------------------------------------------------------------------------------------
def _hop_from_overlap(frame_size, overlap, fn: str) -> int:
    if isinstance(frame_size, bool) or int(frame_size) != frame_size or frame_size < 1:
        raise ValueError(f'{fn}: frame size must be a positive integer, got {frame_size!r}.')
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f'{fn}: overlap must be in [0, 1), got {overlap!r}.')
    hop = int(round(frame_size * (1.0 - overlap)))
    if hop < 1:
        raise ValueError(f'{fn}: frame size {frame_size} with overlap {overlap} gives a hop of '
                         f'{frame_size * (1.0 - overlap):.3f} samples; lower the overlap.')
    return hop


def _check_audio_rank(audio, fn: str):
    if audio.shape.rank not in (1, 2):
        raise ValueError(f'{fn}: audio must be [batch, n_samples] or [n_samples], got shape '
                         f'{audio.shape}.')


def _drop_channel(audio, fn: str):
    """[batch, n_samples, 1] -> [batch, n_samples] (tensor or ndarray); others unchanged."""
    if len(audio.shape) == 3:
        if audio.shape[-1] != 1:
            raise ValueError(f'{fn}: 3-D audio must be [batch, n_samples, 1], got shape '
                             f'{audio.shape}.')
        return audio[..., 0]
    return audio


def fft_length(frame_size) -> int:
    """FFT length of an STFT frame: the smallest power of two >= frame_size (as
    `tf.signal.stft` with `fft_length=None`); frames are zero-padded to it."""
    return 1 << (int(frame_size) - 1).bit_length()


def stft(audio, frame_size=2048, overlap=0.75, pad_end=True):
    """Short-time Fourier transform with a periodic Hann window (`tf.signal.stft`).

    Args:
      audio: float [batch, n_samples], [batch, n_samples, 1] or [n_samples].
      frame_size: Window length in samples; each windowed frame is zero-padded to
        `fft_length(frame_size)` (the next power of two) for the FFT.
      overlap: Fraction of a frame shared with the next; hop = round(frame_size * (1 - overlap)).
      pad_end: Zero-pad the end so that every sample is in a frame
        (n_frames = ceil(n_samples / hop)); otherwise
        n_frames = 1 + (n_samples - frame_size) // hop.

    Returns:
      complex64 [batch, n_frames, fft_length(frame_size) // 2 + 1] (no batch axis for 1-D
      audio).
    """
    audio = _drop_channel(core.tf_float32(audio), 'stft')
    _check_audio_rank(audio, 'stft')
    hop = _hop_from_overlap(frame_size, overlap, 'stft')
    return tf.signal.stft(audio, frame_length=int(frame_size), frame_step=hop,
                          fft_length=fft_length(frame_size), pad_end=pad_end)


def stft_np(audio, frame_size=2048, overlap=0.75, pad_end=True):
    """Numpy version of `stft` (same framing, window, FFT length and output layout).

    Args:
      audio: float [batch, n_samples], [batch, n_samples, 1] or [n_samples].

    Returns:
      complex64 [batch, n_frames, fft_length(frame_size) // 2 + 1] (no batch axis for 1-D
      audio).
    """
    audio = _drop_channel(np.asarray(audio, dtype=np.float32), 'stft_np')
    if audio.ndim not in (1, 2):
        raise ValueError(f'stft_np: audio must be [batch, n_samples] or [n_samples], got shape '
                         f'{audio.shape}.')
    is_1d = audio.ndim == 1
    audio = audio[np.newaxis] if is_1d else audio
    hop = _hop_from_overlap(frame_size, overlap, 'stft_np')
    frame_size = int(frame_size)
    n_fft = fft_length(frame_size)
    n = audio.shape[-1]
    if pad_end:
        n_frames = -(-n // hop)
        padded = max(0, (n_frames - 1) * hop + frame_size)
        audio = np.pad(audio, [(0, 0), (0, max(0, padded - n))])
    else:
        n_frames = max(0, 1 + (n - frame_size) // hop)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(frame_size) / frame_size))
    if n_frames > 0:
        frames = np.lib.stride_tricks.sliding_window_view(audio, frame_size, axis=-1)[:, ::hop]
        frames = frames[:, :n_frames]
        s = np.fft.rfft(frames * window.astype(np.float32), n=n_fft,
                        axis=-1).astype(np.complex64)
    else:
        s = np.zeros((audio.shape[0], 0, n_fft // 2 + 1), np.complex64)
    return s[0] if is_1d else s


def compute_mag(audio, size=2048, overlap=0.75, pad_end=True):
    """Magnitude spectrogram |STFT|: float32 [batch, n_frames, fft_length(size) // 2 + 1]
    (see `stft`)."""
    return tf.abs(stft(audio, frame_size=size, overlap=overlap, pad_end=pad_end))


def compute_logmag(audio, size=2048, overlap=0.75, pad_end=True):
    """Natural log of the magnitude spectrogram (`safe_log`, floor 1e-5):
    float32 [batch, n_frames, fft_length(size) // 2 + 1]."""
    return safe_log(compute_mag(audio, size, overlap, pad_end))


def compute_mel(audio, lo_hz=0.0, hi_hz=8000.0, bins=64, fft_size=2048, overlap=0.75,
                pad_end=True, sample_rate=16000):
    """Mel-scaled magnitude spectrogram (triangular HTK mel filters on |STFT|).

    Args:
      audio: float [batch, n_samples] or [n_samples] at `sample_rate` Hz.
      lo_hz, hi_hz: Edges of the mel filterbank in Hz (hi_hz <= sample_rate / 2).
      bins: Number of mel bins.

    Returns:
      float32 [batch, n_frames, bins].
    """
    if not 0.0 <= lo_hz < hi_hz <= sample_rate / 2.0:
        raise ValueError(f'compute_mel: need 0 <= lo_hz < hi_hz <= sample_rate / 2, got '
                         f'lo_hz={lo_hz}, hi_hz={hi_hz}, sample_rate={sample_rate}.')
    mag = compute_mag(audio, fft_size, overlap, pad_end)
    weights = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=int(bins), num_spectrogram_bins=fft_length(fft_size) // 2 + 1,
        sample_rate=sample_rate, lower_edge_hertz=float(lo_hz), upper_edge_hertz=float(hi_hz))
    return tf.tensordot(mag, weights, 1)


def compute_logmel(audio, lo_hz=80.0, hi_hz=7600.0, bins=64, fft_size=2048, overlap=0.75,
                   pad_end=True, sample_rate=16000):
    """Natural log of `compute_mel` (`safe_log`): float32 [batch, n_frames, bins]."""
    mel = compute_mel(audio, lo_hz, hi_hz, bins, fft_size, overlap, pad_end, sample_rate)
    return safe_log(mel)


def compute_mfcc(audio, lo_hz=20.0, hi_hz=8000.0, fft_size=1024, mel_bins=128, mfcc_bins=13,
                 overlap=0.75, pad_end=True, sample_rate=16000):
    """Mel-frequency cepstral coefficients (DCT-II of the log mel spectrogram).

    Returns:
      float32 [batch, n_frames, mfcc_bins] (no batch axis for 1-D audio).
    """
    if not 1 <= mfcc_bins <= mel_bins:
        raise ValueError(f'compute_mfcc: need 1 <= mfcc_bins <= mel_bins, got '
                         f'mfcc_bins={mfcc_bins}, mel_bins={mel_bins}.')
    logmel = compute_logmel(audio, lo_hz=lo_hz, hi_hz=hi_hz, bins=mel_bins, fft_size=fft_size,
                            overlap=overlap, pad_end=pad_end, sample_rate=sample_rate)
    mfccs = tf.signal.mfccs_from_log_mel_spectrograms(logmel)
    return mfccs[..., :mfcc_bins]


# ------------------------------------------------------------------------------------------------
# Framing.
# ------------------------------------------------------------------------------------------------
def pad(x, frame_size, hop_size, padding='center', axis=1, mode='CONSTANT', constant_values=0):
    """Pads a signal for framing (see `get_framed_lengths`).

    Args:
      x: Tensor with time on `axis`, e.g. audio [batch, n_samples].
      frame_size: Samples per frame.
      hop_size: Samples between frames (<= frame_size).
      padding: 'center' (frame_size // 2 on both sides), 'same' (at the end, to
        `get_framed_lengths(...)[1]`) or 'valid' (unchanged).
      axis: Time axis (ignored for 1-D `x`, which is padded on axis 0).
      mode, constant_values: Passed to `tf.pad`.

    Returns:
      float32 tensor, `x` padded on `axis`.
    """
    check_padding(padding, 'pad')
    x = core.tf_float32(x)
    rank = x.shape.rank
    if rank <= 1:
        axis = 0  # a 1-D signal is padded on its only axis, whatever `axis` says.
    if not -rank <= axis < rank:
        raise ValueError(f'pad: axis {axis} is out of range for a tensor of shape {x.shape}.')
    if hop_size > frame_size:
        raise ValueError(f'pad: hop_size ({hop_size}) must not exceed frame_size ({frame_size}); '
                         f'samples between frames would be skipped.')
    if padding == 'valid':
        return x
    if padding == 'center':
        before = after = int(frame_size) // 2
    else:
        n_t = x.shape[axis]
        if n_t is None:
            raise ValueError("pad: padding='same' needs a known length on the time axis.")
        _, padded_length = get_framed_lengths(n_t, frame_size, hop_size, padding)
        before, after = 0, padded_length - n_t
    return core.pad_axis(x, (before, after), axis=axis, mode=mode,
                         constant_values=constant_values)


def _pad_np(x: np.ndarray, frame_size, hop_size, padding) -> np.ndarray:
    """Numpy version of `pad` on the last axis (zeros)."""
    check_padding(padding, 'pad')
    if padding == 'valid':
        return x
    if padding == 'center':
        before = after = int(frame_size) // 2
    else:
        _, padded_length = get_framed_lengths(x.shape[-1], frame_size, hop_size, padding)
        before, after = 0, padded_length - x.shape[-1]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(before, after)])


# ------------------------------------------------------------------------------------------------
# Frame-rate features.
# ------------------------------------------------------------------------------------------------
def compute_rms_energy(audio, sample_rate=16000, frame_rate=250, frame_size=512,
                       padding='center'):
    """Root-mean-square amplitude of each frame.

    Args:
      audio: float [batch, n_samples] or [n_samples] at `sample_rate` Hz.
      sample_rate: Hz.
      frame_rate: Frames per second; hop = sample_rate // frame_rate samples (rounded down when
        it does not divide: 176 at 44.1 kHz and 250 frames/s).
      frame_size: Samples per frame.
      padding: 'center', 'same' or 'valid' (see `get_framed_lengths`).

    Returns:
      float32 [batch, n_frames] (no batch axis for 1-D audio); a full-scale sine gives 1/sqrt(2).
    """
    hop = frame_hop(sample_rate, frame_rate, 'compute_rms_energy')
    audio = core.tf_float32(audio)
    _check_audio_rank(audio, 'compute_rms_energy')
    is_1d = audio.shape.rank == 1
    audio = audio[tf.newaxis] if is_1d else audio
    audio = pad(audio, frame_size, hop, padding=padding)
    frames = tf.signal.frame(audio, int(frame_size), hop, pad_end=False)
    rms = tf.sqrt(tf.reduce_mean(frames**2, axis=-1))
    return rms[0] if is_1d else rms


def compute_power(audio, sample_rate=16000, frame_rate=250, frame_size=512, ref_db=0.0,
                  range_db=DB_RANGE, padding='center'):
    """Mean power of each frame in dB: 10 log10(rms^2) - ref_db, floored at -range_db.

    Args: as `compute_rms_energy`, plus ref_db (dB that maps to 0) and range_db (floor).

    Returns:
      float32 [batch, n_frames] in dB (no batch axis for 1-D audio); a full-scale sine gives
      -3.01 dB.
    """
    rms = compute_rms_energy(audio, sample_rate, frame_rate, frame_size, padding=padding)
    return core.power_to_db(rms**2, ref_db=ref_db, range_db=range_db, use_tf=True)


def a_weighting(frequencies, min_db=A_WEIGHTING_MIN_DB):
    """IEC 61672 A-weighting in dB (0 dB at 1 kHz) of frequencies in Hz, floored at `min_db`.

    Args:
      frequencies: float64-convertible array of frequencies in Hz, any shape.

    Returns:
      float64 numpy array of the same shape, in dB.
    """
    f2 = np.asarray(frequencies, dtype=np.float64) ** 2
    c = np.array([20.598997, 107.65265, 737.86223, 12194.217]) ** 2
    with np.errstate(divide='ignore'):
        db = 2.0 + 20.0 * (np.log10(c[3]) + 2.0 * np.log10(f2)
                           - np.log10(f2 + c[0]) - np.log10(f2 + c[3])
                           - 0.5 * np.log10(f2 + c[1]) - 0.5 * np.log10(f2 + c[2]))
    return np.maximum(db, min_db)


def compute_loudness(audio, sample_rate=16000, frame_rate=250, n_fft=512, range_db=DB_RANGE,
                     ref_db=0.0, use_tf=True, padding='center'):
    """Perceptual loudness in dB: A-weighted power spectrum averaged over frequency.

    For each frame (a Hann window of `n_fft` samples every sample_rate // frame_rate samples),
    the power spectrum |STFT|^2 is weighted by the A-weighting curve of each bin, averaged over
    bins, converted to dB relative to `ref_db` and floored at `-range_db`.

    Args:
      audio: float [batch, n_samples] or [n_samples] at `sample_rate` Hz.
      sample_rate: Hz.
      frame_rate: Frames per second; hop = sample_rate // frame_rate samples (rounded down when
        it does not divide: 176 at 44.1 kHz and 250 frames/s).
      n_fft: Window size in samples (>= the hop); the FFT is `fft_length(n_fft)`.
      range_db: Dynamic range; values are floored at -range_db.
      ref_db: dB that maps to 0 dB.
      use_tf: TensorFlow ops (differentiable; returns a tensor) or numpy (returns an ndarray);
        both give the same numbers.
      padding: 'center', 'same' or 'valid': the frame count is
        `get_framed_lengths(n_samples, n_fft, hop, padding)[0]`
        (1001 for 64000 samples at 250 frames/s with 'center').

    Returns:
      float32 [batch, n_frames] in dB (no batch axis for 1-D audio).
    """
    hop = frame_hop(sample_rate, frame_rate, 'compute_loudness')
    if hop > n_fft:
        raise ValueError(f'compute_loudness: n_fft={n_fft} must be at least the hop of {hop} '
                         f'samples (sample_rate / frame_rate).')
    overlap = 1.0 - hop / n_fft
    weighting = 10.0 ** (a_weighting(np.fft.rfftfreq(fft_length(n_fft), 1.0 / sample_rate))
                         / 10.0)
    weighting = weighting.astype(np.float32)
    if use_tf:
        audio = core.tf_float32(audio)
        _check_audio_rank(audio, 'compute_loudness')
        is_1d = audio.shape.rank == 1
        audio = audio[tf.newaxis] if is_1d else audio
        audio = pad(audio, n_fft, hop, padding=padding)
        s = stft(audio, frame_size=n_fft, overlap=overlap, pad_end=False)
        power = tf.math.real(s) ** 2 + tf.math.imag(s) ** 2
        power = tf.reduce_mean(power * weighting, axis=-1)
    else:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim not in (1, 2):
            raise ValueError(f'compute_loudness: audio must be [batch, n_samples] or '
                             f'[n_samples], got shape {audio.shape}.')
        is_1d = audio.ndim == 1
        audio = audio[np.newaxis] if is_1d else audio
        audio = _pad_np(audio, n_fft, hop, padding)
        s = stft_np(audio, frame_size=n_fft, overlap=overlap, pad_end=False)
        power = s.real.astype(np.float32) ** 2 + s.imag.astype(np.float32) ** 2
        power = np.mean(power * weighting, axis=-1)
    loudness = core.power_to_db(power, ref_db=ref_db, range_db=range_db, use_tf=use_tf)
    return loudness[0] if is_1d else loudness


def compute_f0(audio, frame_rate, viterbi=True, padding='center', model_capacity='full'):
    """Fundamental frequency and confidence with CREPE (`ddsp_core.f0.predict_f0`).

    Args:
      audio: float 16 kHz audio [n_samples] or [batch, n_samples] (numpy or tensor).
      frame_rate: Frames per second; hop = 16000 // frame_rate samples (rounded down).
      viterbi: Viterbi-smoothed decoding.
      padding: 'center', 'same' or 'valid' (frame count as `compute_loudness` with the same
        padding: 1001 frames for 64000 samples at 250 frames/s with 'center').
      model_capacity: CREPE size: 'tiny', 'small', 'medium', 'large' or 'full'.

    Returns:
      (f0_hz, f0_confidence): float32 numpy [n_frames] each ([batch, n_frames] for 2-D audio).
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return f0.predict_f0(audio, frame_rate, viterbi=viterbi, padding=padding,
                             model_capacity=model_capacity)
    if audio.ndim != 2:
        raise ValueError(f'compute_f0: audio must be [n_samples] or [batch, n_samples], got '
                         f'shape {audio.shape}.')
    results = [f0.predict_f0(a, frame_rate, viterbi=viterbi, padding=padding,
                             model_capacity=model_capacity) for a in audio]
    n_frames = get_framed_lengths(audio.shape[1], CREPE_FRAME_SIZE,
                                  frame_hop(CREPE_SAMPLE_RATE, frame_rate, 'compute_f0'),
                                  padding)[0]
    if not results:
        empty = np.zeros((0, n_frames), np.float32)
        return empty, empty.copy()
    return np.stack([r[0] for r in results]), np.stack([r[1] for r in results])


def pad_or_trim_to_expected_length(vector, expected_len, pad_value=0, len_tolerance=20,
                                   use_tf=False):
    """Pads (with `pad_value`) or trims the last axis of a vector to `expected_len`.

    Args:
      vector: [n] or [batch, n] (numpy, or a tensor with use_tf=True).
      expected_len: Wanted length of the last axis.
      pad_value: Value appended when too short.
      len_tolerance: Largest allowed |n - expected_len|; a bigger mismatch is an error, since it
        means the features were computed with different settings.
      use_tf: Use TensorFlow ops (returns a tensor) rather than numpy.

    Returns:
      Same rank as `vector`, last axis of length `expected_len`.
    """
    expected_len = int(expected_len)
    vector = core.tf_float32(vector) if use_tf else np.asarray(vector)
    if len(vector.shape) not in (1, 2):
        raise ValueError(f'pad_or_trim_to_expected_length: vector must be [n] or [batch, n], '
                         f'got shape {tuple(vector.shape)}.')
    vector_len = int(vector.shape[-1])
    if abs(vector_len - expected_len) > len_tolerance:
        raise ValueError(f'pad_or_trim_to_expected_length: vector length {vector_len} differs '
                         f'from the expected length {expected_len} by more than len_tolerance='
                         f'{len_tolerance}; check the sample rate, frame rate and padding.')
    if vector_len < expected_len:
        n_pad = expected_len - vector_len
        if use_tf:
            return core.pad_axis(vector, (0, n_pad), axis=-1, constant_values=pad_value)
        widths = [(0, 0)] * (vector.ndim - 1) + [(0, n_pad)]
        return np.pad(vector, widths, constant_values=pad_value)
    return vector[..., :expected_len]
