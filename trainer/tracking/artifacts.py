"""Pure helpers that turn training/evaluation results into files worth keeping.

Used by :class:`trainer.tracking.tracker.Tracker` (audio and spectrogram artifacts, run tags).
Nothing here talks to MLflow or needs TensorFlow.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    'as_mono_audio',
    'device_description',
    'git_commit',
    'log_magnitude_spectrogram',
    'spectrogram_comparison_figure',
    'spectrogram_comparison_png',
    'write_wav',
]


def as_mono_audio(audio: object, name: str = 'audio') -> np.ndarray:
    """Validate one clip of audio and return it as a 1-D float32 array.

    Args:
        audio: Array-like of shape [n_samples] or [1, n_samples] (a batch of one), amplitude in
            [-1, 1]. Anything with ``.numpy()`` (a TF tensor) is accepted too.
        name: How to call the argument in error messages.

    Returns:
        float32 array of shape [n_samples].

    Raises:
        ValueError: empty audio, more than one clip, or non-finite samples.
    """
    if hasattr(audio, 'numpy'):
        audio = audio.numpy()
    array = np.asarray(audio)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f'{name}: expected real numeric samples, got dtype {array.dtype}')
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise ValueError(
            f'{name}: expected shape [n_samples] or [1, n_samples], got {tuple(array.shape)}'
        )
    if array.size == 0:
        raise ValueError(f'{name}: audio is empty (0 samples)')
    array = array.astype(np.float32, copy=False)
    n_bad = int(np.count_nonzero(~np.isfinite(array)))
    if n_bad:
        raise ValueError(f'{name}: {n_bad} of {array.size} samples are NaN or infinite')
    return array


def _check_sample_rate(sample_rate: object) -> int:
    valid = (
        isinstance(sample_rate, (int, float, np.integer, np.floating))
        and not isinstance(sample_rate, bool)
        and float(sample_rate).is_integer()
        and sample_rate > 0
    )
    if not valid:
        raise ValueError(f'sample_rate must be a positive integer (Hz), got {sample_rate!r}')
    return int(sample_rate)


def write_wav(path: str | os.PathLike, audio: object, sample_rate: int) -> Path:
    """Write one clip as a 16-bit PCM mono WAV file.

    Samples outside [-1, 1] are clipped (with a warning saying how many), since 16-bit PCM cannot
    hold them.

    Args:
        path: Destination file; parent directories are created.
        audio: float samples, shape [n_samples] or [1, n_samples], amplitude in [-1, 1].
        sample_rate: Sample rate in Hz.

    Returns:
        The path written.
    """
    import soundfile as sf

    samples = as_mono_audio(audio)
    sample_rate = _check_sample_rate(sample_rate)
    n_clipped = int(np.count_nonzero(np.abs(samples) > 1.0))
    if n_clipped:
        logger.warning(
            '%s: %d of %d samples exceed [-1, 1] (peak %.3f); clipping for 16-bit PCM',
            path, n_clipped, samples.size, float(np.max(np.abs(samples))),
        )
        samples = np.clip(samples, -1.0, 1.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, sample_rate, subtype='PCM_16', format='WAV')
    return path


def log_magnitude_spectrogram(
    audio: object, sample_rate: int, n_fft: int = 1024, hop: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-magnitude STFT of one clip (Hann window).

    Args:
        audio: float samples, shape [n_samples] or [1, n_samples].
        sample_rate: Sample rate in Hz.
        n_fft: FFT size in samples (reduced to the clip length for very short clips).
        hop: Hop size in samples.

    Returns:
        (times, freqs, db): frame centre times in seconds [n_frames], bin frequencies in Hz
        [n_fft // 2 + 1], and magnitude in dB re 1.0 with a -120 dB floor,
        shape [n_fft // 2 + 1, n_frames].
    """
    from scipy.signal import ShortTimeFFT
    from scipy.signal.windows import hann

    samples = as_mono_audio(audio).astype(np.float64)
    sample_rate = _check_sample_rate(sample_rate)
    n_fft = int(min(n_fft, max(16, 2 ** int(np.floor(np.log2(max(samples.size, 16)))))))
    hop = int(max(1, min(hop, n_fft // 2)))
    window = hann(n_fft, sym=False)
    stft = ShortTimeFFT(window, hop=hop, fs=sample_rate, mfft=n_fft, scale_to='magnitude')
    magnitude = np.abs(stft.stft(samples))
    db = 20.0 * np.log10(np.maximum(magnitude, 1e-6))
    times = stft.t(samples.size)
    freqs = stft.f
    return times, freqs, db


def spectrogram_comparison_figure(
    original: object,
    resynthesis: object,
    sample_rate: int,
    title: str | None = None,
    labels: tuple[str, str] = ('original', 'resynthesis'),
):
    """A matplotlib ``Figure`` with the original and resynthesised log-magnitude spectrograms
    stacked.

    Both panels share the colour scale (dB, 80 dB range below the louder clip's peak) and the
    time axis, so differences in level or timing are visible.

    Args:
        original: float samples, shape [n_samples] or [1, n_samples].
        resynthesis: float samples, shape [n_samples'] or [1, n_samples'] (lengths may differ).
        sample_rate: Sample rate in Hz of both clips.
        title: Figure title (default: none besides the panel titles), wrapped to the figure.
        labels: the two panels' titles (e.g. ``('input', 'output')`` for a transfer).
    """
    import textwrap

    # A bare Figure renders with the Agg canvas on savefig and touches no pyplot/global state.
    from matplotlib.figure import Figure

    sample_rate = _check_sample_rate(sample_rate)
    panels = []
    for label, audio in zip(labels, (original, resynthesis), strict=True):
        panels.append((label, *log_magnitude_spectrogram(as_mono_audio(audio, label), sample_rate)))
    vmax = max(float(np.max(db)) for *_, db in panels)
    vmin = vmax - 80.0
    duration = max(as_mono_audio(original).size, as_mono_audio(resynthesis).size) / sample_rate

    figure = Figure(figsize=(10, 7), dpi=100, layout='constrained')
    axes = figure.subplots(2, 1, sharex=True, sharey=True)
    image = None
    for ax, (label, times, freqs, db) in zip(axes, panels, strict=True):
        image = ax.pcolormesh(times, freqs, db, shading='auto', vmin=vmin, vmax=vmax,
                              cmap='magma', rasterized=True)
        ax.set_title(label[:1].upper() + label[1:])
        ax.set_ylabel('Frequency (Hz)')
        ax.set_xlim(0.0, duration)
        ax.set_ylim(0.0, sample_rate / 2)
    axes[-1].set_xlabel('Time (s)')
    figure.colorbar(image, ax=list(axes), label='Magnitude (dB)')
    if title:
        figure.suptitle(textwrap.fill(title, 110))
    return figure


def spectrogram_comparison_png(
    path: str | os.PathLike,
    original: object,
    resynthesis: object,
    sample_rate: int,
    title: str | None = None,
    labels: tuple[str, str] = ('original', 'resynthesis'),
) -> Path:
    """Save :func:`spectrogram_comparison_figure` as a PNG (parent directories are created) and
    return the path."""
    figure = spectrogram_comparison_figure(original, resynthesis, sample_rate, title, labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(str(path), format='png')
    return path


def git_commit(repo_dir: str | os.PathLike | None = None) -> str:
    """The commit hash checked out in the repository holding this code, or ``'unknown'``.

    Args:
        repo_dir: Directory inside the repository (default: this package's directory).
    """
    directory = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ['git', 'rev-parse', '--verify', '--quiet', 'HEAD'],
            cwd=directory, capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return 'unknown'
    sha = result.stdout.strip()
    if result.returncode != 0 or not sha:
        return 'unknown'
    return sha


def device_description() -> str:
    """Human-readable accelerator description for run tags.

    Only asks TensorFlow if it is already imported (importing it just for a tag would cost
    seconds); returns e.g. ``'GPU: NVIDIA H100 80GB HBM3'``, ``'CPU'``, or ``'unknown'``.
    """
    tf = sys.modules.get('tensorflow')
    if tf is None:
        return 'unknown'
    try:
        gpus = tf.config.list_physical_devices('GPU')
        if not gpus:
            return 'CPU'
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get('device_name', gpu.name))
        return 'GPU: ' + ', '.join(names)
    except Exception as error:  # a tag must never break training
        logger.debug('Could not describe TensorFlow devices: %s', error)
        return 'unknown'
