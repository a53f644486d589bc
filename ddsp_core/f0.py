"""CREPE pitch (f0) tracking: model loading, framing, batched inference and decoding.

CREPE (Kim et al. 2018) classifies each 1024-sample frame of 16 kHz audio into 360 pitch bins
(20 cents apart, from 31.7 Hz to 2005.5 Hz: `CREPE_MIN_HZ`, `CREPE_MAX_HZ`). This module wraps
the `crepe` package (0.0.16): its Keras model and its decoders (`to_local_average_cents`,
`to_viterbi_cents`), so the numbers are the ones `crepe.predict` gives, while the framing is
ours, so that frames line up with the other frame-rate features (loudness) of the same audio:

- `crepe_frames(audio, frame_rate, padding)` -> normalised frames [n_frames, 1024], with
  `n_frames == get_framed_lengths(len(audio), 1024, 16000 // frame_rate, padding)[0]`
  (`ddsp_core.dsp.framing`, also `spectral_ops.get_framed_lengths`).
- `load_crepe_model(model_capacity)` -> crepe's Keras model (cached per process).
- `load_crepe_forward(model_capacity, precision)` -> `CrepeForward`, the same network from those
  weights, ~2x faster on CPU (used for inference here; equal to the Keras model up to float
  round-off), in float32 or bfloat16 (`resolve_crepe_precision`: bfloat16 where the hardware
  computes it natively, i.e. a CPU with AVX-512 BF16 or AMX under oneDNN, or a GPU of compute
  capability >= 8.0).
- `activations_to_f0(activations, viterbi)` -> (f0_hz, confidence).
- `predict_f0(audio, frame_rate, ...)` -> (f0_hz, confidence), all of the above in batches;
  optionally analysed at another hop (`analysis_rate`, e.g. CREPE's native 10 ms) and
  interpolated to the frame rate (`interpolate_f0`).

With `padding='center'` and `frame_rate` dividing 1000, `predict_f0` equals
`crepe.predict(audio, 16000, step_size=1000 // frame_rate, center=True, viterbi=...)`.
"""

from __future__ import annotations

import os
import threading
from typing import Iterator

import numpy as np

from ddsp_core.dsp.framing import check_padding, frame_hop, get_framed_lengths

CREPE_SAMPLE_RATE = 16000
CREPE_FRAME_SIZE = 1024
CREPE_CAPACITIES = ('tiny', 'small', 'medium', 'large', 'full')
CREPE_N_BINS = 360
#: The pitch of CREPE's lowest and highest bins (its decoders' cents mapping: 20-cent steps from
#: 1997.38 cents above 10 Hz); no decoded f0 lies outside them, so a higher pitch reads low.
CREPE_MIN_HZ = float(10.0 * 2.0 ** (1997.3794084376191 / 1200.0))
CREPE_MAX_HZ = float(10.0 * 2.0 ** ((1997.3794084376191 + 20.0 * (CREPE_N_BINS - 1)) / 1200.0))
#: `precision` values: 'auto' picks bfloat16 where the hardware has it (`resolve_crepe_precision`).
CREPE_PRECISIONS = ('auto', 'bfloat16', 'float32')

_INSTALL_HINT = ('See README.md, "Installing crepe": install crepe==0.0.16 with its weights, or on '
                 'an air-gapped machine put the weight files in a directory and point '
                 'CREPE_WEIGHTS_DIR at it when installing.')

_model_lock = threading.Lock()

__all__ = [
    'CREPE_CAPACITIES', 'CREPE_FRAME_SIZE', 'CREPE_N_BINS', 'CREPE_PRECISIONS', 'CREPE_SAMPLE_RATE',
    'CrepeForward', 'activations_to_f0', 'analysis_offset', 'analysis_rate', 'bfloat16_hardware',
    'crepe_frames', 'crepe_weights_path', 'interpolate_f0', 'load_crepe_forward',
    'load_crepe_model', 'predict_activations', 'predict_f0', 'resolve_crepe_precision',
]


def _check_capacity(model_capacity: str) -> None:
    if model_capacity not in CREPE_CAPACITIES:
        raise ValueError(f'model_capacity={model_capacity!r} is not a CREPE capacity; use one of '
                         f'{CREPE_CAPACITIES}.')


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def bfloat16_hardware() -> tuple[bool, str]:
    """Whether CREPE's convolutions run natively in bfloat16 here, and why (one phrase).

    Yes on a GPU of compute capability >= 8.0 (TensorFlow runs the model on the first GPU), and
    on a CPU with AVX-512 BF16 or AMX-BF16 while TensorFlow's oneDNN kernels are on (the default
    on x86; ``TF_ENABLE_ONEDNN_OPTS=0`` turns them off, and with them the fast bfloat16 path).
    """
    from ddsp_core import runtime

    tf = runtime.import_tensorflow()
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
        try:
            capability = tf.config.experimental.get_device_details(gpus[0]).get(
                'compute_capability')
        except Exception:  # noqa: BLE001 - no details: assume an old GPU
            capability = None
        if capability and tuple(capability) >= (8, 0):
            return True, f'GPU of compute capability {capability[0]}.{capability[1]}'
        return False, f'GPU of compute capability {capability or "unknown"} (< 8.0)'
    flags = _cpu_flags() & {'avx512_bf16', 'amx_bf16'}
    if not flags:
        return False, 'CPU without AVX-512 BF16/AMX-BF16'
    if os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1').strip().lower() in ('0', 'false'):
        return False, 'TF_ENABLE_ONEDNN_OPTS=0 (oneDNN off)'
    return True, f'CPU with {", ".join(sorted(flags))} (oneDNN)'


def resolve_crepe_precision(precision: str = 'auto') -> str:
    """'bfloat16' or 'float32': `precision` itself, or for 'auto' bfloat16 where
    `bfloat16_hardware()` says the hardware computes it natively, else float32.

    Raises:
      ValueError: not one of `CREPE_PRECISIONS` (the message names it).
    """
    if precision not in CREPE_PRECISIONS:
        raise ValueError(f'precision={precision!r} is not a CREPE precision; use one of '
                         f'{CREPE_PRECISIONS}.')
    if precision != 'auto':
        return precision
    return 'bfloat16' if bfloat16_hardware()[0] else 'float32'


def _import_crepe_core():
    try:
        import crepe.core as crepe_core
    except ImportError as error:
        raise RuntimeError(f'The CREPE pitch tracker (package `crepe`) is not installed '
                           f'({error}). {_INSTALL_HINT}') from error
    return crepe_core


def crepe_weights_path(model_capacity: str = 'full') -> str:
    """Path of the installed weight file `model-<capacity>.h5` of the crepe package.

    Raises:
      ValueError: unknown capacity.
      RuntimeError: crepe is not installed, or the weight file is missing or empty.
    """
    _check_capacity(model_capacity)
    crepe_core = _import_crepe_core()
    path = os.path.join(os.path.dirname(os.path.realpath(crepe_core.__file__)),
                        f'model-{model_capacity}.h5')
    if not os.path.isfile(path):
        raise RuntimeError(f'CREPE weights for model_capacity={model_capacity!r} are missing: '
                           f'{path} does not exist. {_INSTALL_HINT}')
    if os.path.getsize(path) == 0:
        raise RuntimeError(f'CREPE weights for model_capacity={model_capacity!r} are not '
                           f'installed: {path} is an empty file (crepe installs capacities whose '
                           f'weights it could not get as empty files). Use a capacity whose '
                           f'weights are installed (the tests use "tiny"). {_INSTALL_HINT}')
    return path


def load_crepe_model(model_capacity: str = 'full'):
    """CREPE's own Keras model (`crepe.core.build_and_load_model`) with its weights.

    The model maps normalised frames float32 [n, 1024] to sigmoid activations float32 [n, 360].
    It is built once per process and capacity (crepe caches it) and shared afterwards.

    Args:
      model_capacity: 'tiny', 'small', 'medium', 'large' or 'full'.

    Raises:
      ValueError: unknown capacity (the message names it).
      RuntimeError: crepe is not installed, or the capacity's weight file is missing or empty.
    """
    crepe_weights_path(model_capacity)
    crepe_core = _import_crepe_core()
    with _model_lock:
        try:
            return crepe_core.build_and_load_model(model_capacity)
        except (OSError, ValueError) as error:
            raise RuntimeError(f'Could not load the CREPE {model_capacity!r} weights '
                               f'({error}). {_INSTALL_HINT}') from error


class CrepeForward:
    """CREPE's forward pass from its Keras model's weights, computed faster on CPU.

    Same network and weights as `load_crepe_model(...)` (conv → ReLU → batch norm → max-pool, six
    times, then a sigmoid classifier; dropout is off at inference), so the activations equal the
    Keras model's up to float round-off. Two changes make it ~2x faster on CPU: the first
    convolution (kernel 512, stride 4, one input channel), which TensorFlow's convolution runs at a
    fraction of the machine's speed, is one matmul over strided windows of the frame; the others
    run as 1-D convolutions. Frames are processed `max_batch` at a time (or `batch_size`, per
    call) to bound memory.

    With `precision='bfloat16'` the convolutions and the first layer's matmul take bfloat16
    inputs and weights (oneDNN's AVX-512 BF16 kernels on CPU, tensor cores on GPU: about twice
    float32's speed); bias, ReLU, batch norm, pooling and the classifier stay in float32, so
    only the products are rounded (activations within ~3e-3 of float32's; the pitch they decode
    to is held to float32's: tests/ddsp_core/test_f0_precision.py,
    benchmarks/bench_crepe_precision.py).

    Call with normalised frames float32 [n, 1024] (from `crepe_frames`) -> activations float32
    [n, 360].
    """

    def __init__(self, model, max_batch: int = 128, precision: str = 'float32'):
        import tensorflow as tf

        if precision not in ('float32', 'bfloat16'):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
        self.precision = precision
        self._dtype = tf.bfloat16 if precision == 'bfloat16' else tf.float32

        convs, norms, dense = [], [], None
        for layer in model.layers:
            kind = type(layer).__name__
            if kind == 'Conv2D':
                kernel, bias = layer.get_weights()
                stride = layer.strides[0]
                convs.append((kernel[:, 0], bias, stride))  # [width, in, out]
            elif kind == 'BatchNormalization':
                gamma, beta, mean, var = layer.get_weights()
                scale = gamma / np.sqrt(var + layer.epsilon)
                norms.append((scale, beta - mean * scale))
            elif kind == 'Dense':
                dense = layer.get_weights()
        if len(convs) != 6 or len(norms) != 6 or dense is None or convs[0][0].shape[1] != 1:
            raise ValueError('not a CREPE model: expected 6 Conv2D + BatchNormalization blocks '
                             'and a Dense classifier')
        const = lambda a: tf.constant(np.asarray(a, np.float32))  # noqa: E731
        low = lambda a: tf.cast(const(a), self._dtype)  # noqa: E731 - the products' inputs
        self._convs = [(low(k), const(b), int(st)) for k, b, st in convs]
        self._norms = [(const(sc), const(sh)) for sc, sh in norms]
        self._pool_first = [bool(np.all(sc > 0)) for sc, _ in norms]
        self._dense = [const(w) for w in dense]
        self.max_batch = int(max_batch)
        self._fn = tf.function(self._forward,
                               input_signature=[tf.TensorSpec([None, CREPE_FRAME_SIZE],
                                                              tf.float32)])

    def _forward(self, frames):
        import tensorflow as tf

        k1, _, stride = self._convs[0]
        width = int(k1.shape[0])
        n_out = -(-CREPE_FRAME_SIZE // stride)
        pad = max((n_out - 1) * stride + width - CREPE_FRAME_SIZE, 0)
        low = self._dtype  # float32: the casts below are no-ops
        x = tf.pad(tf.cast(frames, low), [[0, 0], [pad // 2, pad - pad // 2]])
        windows = tf.signal.frame(x, width, stride)  # [n, n_out, width]
        for i, (kernel, bias, _) in enumerate(self._convs):
            if i == 0:
                y = tf.matmul(windows, kernel[:, 0, :])  # [n, n_out, filters]
            else:
                y = tf.nn.conv1d(tf.cast(y, low), kernel, stride=1, padding='SAME')
            scale, shift = self._norms[i]
            if self._pool_first[i]:
                # Bias, ReLU and a positive scale are monotone, also as rounded: pooling first
                # gives the same bits with half the values in memory after the product.
                y = tf.nn.max_pool1d(y, 2, 2, 'VALID')
                y = tf.nn.relu(tf.cast(y, tf.float32) + bias) * scale + shift
            else:
                y = tf.nn.relu(tf.cast(y, tf.float32) + bias) * scale + shift
                y = tf.nn.max_pool1d(y, 2, 2, 'VALID')
        y = tf.reshape(y, [tf.shape(y)[0], -1])  # time-major then channels, as crepe flattens
        return tf.sigmoid(tf.matmul(y, self._dense[0]) + self._dense[1])

    def __call__(self, frames, batch_size: int | None = None) -> np.ndarray:
        """Activations of frames [n, 1024], computed `batch_size` (default `max_batch`) frames
        per model call."""
        frames = np.asarray(frames, np.float32)
        if frames.ndim != 2 or frames.shape[1] != CREPE_FRAME_SIZE:
            raise ValueError(f'frames must be [n, {CREPE_FRAME_SIZE}], got {frames.shape}')
        step = int(batch_size or self.max_batch)
        if step < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        out = [self._fn(frames[i:i + step]).numpy() for i in range(0, frames.shape[0], step)]
        if not out:
            return np.zeros((0, CREPE_N_BINS), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


_forward_cache: dict[tuple[str, str], CrepeForward] = {}


def load_crepe_forward(model_capacity: str = 'full', precision: str = 'float32') -> CrepeForward:
    """A `CrepeForward` for the capacity's weights in `precision` ('float32', 'bfloat16' or
    'auto': `resolve_crepe_precision`), cached per process."""
    precision = resolve_crepe_precision(precision)
    model = load_crepe_model(model_capacity)
    with _model_lock:
        key = (model_capacity, precision)
        if key not in _forward_cache:
            _forward_cache[key] = CrepeForward(model, precision=precision)
        return _forward_cache[key]


def _hop_size(frame_rate) -> int:
    """CREPE's hop at `frame_rate`: 16000 // frame_rate samples (rounded down, as loudness)."""
    return frame_hop(CREPE_SAMPLE_RATE, frame_rate, 'crepe_frames')


def _as_mono(audio, name: str = 'audio') -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 1:
        raise ValueError(f'{name} must be 1-D 16 kHz audio [n_samples] (or [1, n_samples]), got '
                         f'shape {audio.shape}.')
    return audio


def _padded_audio(audio: np.ndarray, hop: int, padding: str) -> tuple[np.ndarray, int]:
    """Pads 1-D float32 audio for framing; returns (padded audio, n_frames)."""
    check_padding(padding, 'crepe_frames')
    n_frames, padded_length = get_framed_lengths(len(audio), CREPE_FRAME_SIZE, hop, padding)
    if padding == 'center':
        before = CREPE_FRAME_SIZE // 2
    else:
        before = 0
    after = padded_length - len(audio) - before
    return np.pad(audio, (before, after)), int(n_frames)


def _normalised_frames(padded: np.ndarray, hop: int, start: int, stop: int) -> np.ndarray:
    """Frames start..stop-1 of padded audio, each mean-removed and std-normalised (as crepe)."""
    first = start * hop
    last = (stop - 1) * hop + CREPE_FRAME_SIZE
    windows = np.lib.stride_tricks.sliding_window_view(padded[first:last], CREPE_FRAME_SIZE)
    frames = windows[::hop].copy()  # float32 [stop - start, 1024]
    # Same float32 arithmetic as crepe.core.get_activation.
    frames -= np.mean(frames, axis=1)[:, np.newaxis]
    frames /= np.clip(np.std(frames, axis=1)[:, np.newaxis], 1e-8, None)
    return frames


def _iter_frames(audio, frame_rate, padding: str, batch_size: int) -> Iterator[np.ndarray]:
    audio = _as_mono(audio)
    hop = _hop_size(frame_rate)
    padded, n_frames = _padded_audio(audio, hop, padding)
    for start in range(0, n_frames, batch_size):
        yield _normalised_frames(padded, hop, start, min(start + batch_size, n_frames))


def crepe_frames(audio: np.ndarray, frame_rate: int, padding: str = 'center') -> np.ndarray:
    """Normalised CREPE input frames of 16 kHz audio.

    Frame i covers the 1024 samples centred on sample `i * hop` for `padding='center'` (the audio
    is zero-padded by 512 samples on each side, as `crepe.predict(..., center=True)` does), or
    starting at sample `i * hop` for 'same' (zero-padded at the end) and 'valid' (no padding).
    Each frame has its mean removed and is divided by its standard deviation (floored at 1e-8),
    exactly as `crepe.core.get_activation` does.

    Args:
      audio: float 16 kHz audio [n_samples] (or [1, n_samples]).
      frame_rate: Frames per second; hop = 16000 // frame_rate samples (rounded down when it
        does not divide 16000, as `spectral_ops.compute_loudness` does at its sample rate).
      padding: 'center', 'same' or 'valid' (see `spectral_ops.get_framed_lengths`).

    Returns:
      float32 [n_frames, 1024], n_frames = get_framed_lengths(n_samples, 1024, hop, padding)[0].
    """
    frames = list(_iter_frames(audio, frame_rate, padding, batch_size=1 << 30))
    if not frames:
        return np.zeros((0, CREPE_FRAME_SIZE), np.float32)
    return frames[0]


def activations_to_f0(activations: np.ndarray,
                      viterbi: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decodes CREPE activations to f0 and confidence, as `crepe.predict` does.

    Args:
      activations: CREPE's sigmoid outputs, float [n_frames, 360].
      viterbi: Decode with crepe's Viterbi smoothing (`to_viterbi_cents`, pitch continuity
        prior) rather than the local weighted average around each frame's argmax.

    Returns:
      (f0_hz, confidence): float32 [n_frames] each. f0_hz = 10 * 2 ** (cents / 1200) (NaN -> 0);
      confidence = the frame's largest activation, in [0, 1].
    """
    activations = np.asarray(activations, dtype=np.float32)
    if activations.ndim != 2 or activations.shape[1] != CREPE_N_BINS:
        raise ValueError(f'activations must be CREPE outputs of shape [n_frames, {CREPE_N_BINS}], '
                         f'got shape {activations.shape}.')
    if activations.shape[0] == 0:
        return np.zeros([0], np.float32), np.zeros([0], np.float32)
    crepe_core = _import_crepe_core()
    confidence = activations.max(axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):  # all-zero frames -> NaN -> 0 Hz.
        if viterbi:
            cents = crepe_core.to_viterbi_cents(activations)
        else:
            cents = crepe_core.to_local_average_cents(activations)
    f0_hz = 10.0 * 2.0 ** (np.asarray(cents, np.float64) / 1200.0)
    f0_hz = np.nan_to_num(f0_hz, nan=0.0)
    confidence = np.nan_to_num(confidence, nan=0.0)
    return f0_hz.astype(np.float32), confidence.astype(np.float32)


def analysis_rate(frame_rate, hop_ms=None) -> int:
    """Frames per second at which CREPE analyses audio for features at `frame_rate`: the frame
    rate itself (`hop_ms` None, the reference's way), else 1000 / hop_ms (CREPE's native hop is
    10 ms: 100 frames/s), whose f0 `interpolate_f0` brings to the frame rate.

    Raises:
      ValueError: hop_ms is not positive, or 1000 / hop_ms is not a whole number of frames per
        second that divides 16000 (whole samples per hop).
    """
    if hop_ms is None:
        return int(frame_rate)
    hop_ms = float(hop_ms)
    rate = 1000.0 / hop_ms if hop_ms > 0 else 0.0
    if hop_ms <= 0 or abs(rate - round(rate)) > 1e-9 or CREPE_SAMPLE_RATE % round(rate):
        raise ValueError(f'f0 hop of {hop_ms:g} ms: must be positive with 1000 / hop a whole '
                         f'number of frames per second dividing 16000 (e.g. 4, 5, 8, 10, 20)')
    return int(round(rate))


def analysis_offset(first_frame: int, frame_rate, crepe_rate) -> int:
    """Samples (16 kHz) from the analysis frame at or before frame `first_frame` (at
    `frame_rate`) to that frame, when CREPE runs at `crepe_rate` on the grid of the whole
    file (analysis frame j at sample j * 16000 // crepe_rate). A piece of audio that starts
    at that frame is analysed on the whole file's grid when this many samples are put before
    it; `interpolate_f0(..., offset=)` then reads its frames off that grid."""
    return int(first_frame) * _hop_size(frame_rate) % _hop_size(crepe_rate)


def interpolate_f0(f0_hz, confidence, from_rate, to_rate, n_frames: int, offset: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """f0 and confidence of frames at `from_rate` brought to `n_frames` frames at `to_rate`.

    Frame i of a rate r is at sample i * (16000 // r) of the 16 kHz audio (as `crepe_frames`
    places it, for every padding), the output frames shifted by `offset` samples
    (`analysis_offset`). f0 is interpolated linearly in log frequency (cents) between
    the two nearest analysis frames, confidence linearly; a frame next to an f0 of 0 Hz (no
    pitch) takes its nearest neighbour's values; frames past the last analysis frame hold it.

    Returns:
      (f0_hz, confidence): float32 [n_frames] each.
    """
    f0_hz = np.asarray(f0_hz, np.float64).reshape(-1)
    confidence = np.asarray(confidence, np.float64).reshape(-1)
    if f0_hz.shape != confidence.shape:
        raise ValueError(f'f0_hz and confidence differ in length: {f0_hz.shape} vs '
                         f'{confidence.shape}')
    if n_frames == 0 or f0_hz.size == 0:
        return np.zeros([n_frames], np.float32), np.zeros([n_frames], np.float32)
    # Position of each output frame on the analysis grid, in analysis frames.
    pos = (offset + np.arange(n_frames) * _hop_size(to_rate)) / _hop_size(from_rate)
    pos = np.clip(pos, 0.0, f0_hz.size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, f0_hz.size - 1)
    w = pos - lo
    conf = (1.0 - w) * confidence[lo] + w * confidence[hi]
    voiced = (f0_hz[lo] > 0) & (f0_hz[hi] > 0)
    with np.errstate(divide='ignore'):
        cents = np.log2(np.where(f0_hz > 0, f0_hz, 1.0))
    f0 = np.where(voiced, 2.0 ** ((1.0 - w) * cents[lo] + w * cents[hi]),
                  np.where(w < 0.5, f0_hz[lo], f0_hz[hi]))
    conf = np.where(voiced, conf, np.where(w < 0.5, confidence[lo], confidence[hi]))
    return f0.astype(np.float32), conf.astype(np.float32)


def predict_activations(audio, frame_rate, padding: str = 'center', model_capacity: str = 'full',
                        batch_size: int = 512, precision: str = 'float32') -> np.ndarray:
    """CREPE activations of 16 kHz audio, float32 [n_frames, 360] (framing as `crepe_frames`).

    Frames are made and run through the model `batch_size` at a time, so memory stays bounded
    for long audio. `precision`: 'float32', 'bfloat16' or 'auto' (see `load_crepe_forward`).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f'batch_size must be a positive integer, got {batch_size!r}.')
    forward = load_crepe_forward(model_capacity, precision)
    out = [forward(frames) for frames in _iter_frames(audio, frame_rate, padding, int(batch_size))]
    if not out:
        return np.zeros((0, CREPE_N_BINS), np.float32)
    return np.concatenate(out, axis=0)


def predict_f0(audio, frame_rate, viterbi=True, padding='center', model_capacity='full',
               batch_size=512, precision='float32', hop_ms=None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Pitch of 16 kHz audio with CREPE.

    Args:
      audio: float 16 kHz audio [n_samples] (or [1, n_samples]).
      frame_rate: Frames per second (hop = 16000 // frame_rate samples).
      viterbi: Viterbi-smoothed decoding (see `activations_to_f0`).
      padding: 'center', 'same' or 'valid' (see `crepe_frames`).
      model_capacity: CREPE size, 'tiny' ... 'full' (weights must be installed).
      batch_size: Frames per model call.
      precision: 'float32' (the reference's), 'bfloat16' or 'auto' (bfloat16 where the hardware
        has it: `resolve_crepe_precision`).
      hop_ms: None analyses every frame (the reference's way); else CREPE runs every `hop_ms`
        ms (`analysis_rate`; 10 is CREPE's native hop) and its decoded f0 and confidence are
        interpolated to the frame rate (`interpolate_f0`): fewer frames to compute, at a small
        accuracy cost (docs/prepare.md).

    Returns:
      (f0_hz, confidence): float32 [n_frames] each; f0 in Hz, confidence in [0, 1], n_frames as
      `crepe_frames(audio, frame_rate, padding)` gives.
    """
    _check_capacity(model_capacity)
    rate = analysis_rate(frame_rate, hop_ms)
    activations = predict_activations(audio, rate, padding=padding, model_capacity=model_capacity,
                                      batch_size=batch_size, precision=precision)
    f0_hz, confidence = activations_to_f0(activations, viterbi=viterbi)
    if rate == frame_rate:
        return f0_hz, confidence
    n_frames = get_framed_lengths(_as_mono(audio).shape[0], CREPE_FRAME_SIZE,
                                  _hop_size(frame_rate), padding)[0]
    return interpolate_f0(f0_hz, confidence, rate, frame_rate, int(n_frames))
