"""Streaming synthesis: a trained autoencoder's audio for a long sequence of frame-rate
controls, rendered chunk by chunk with bounded memory and no seam at chunk boundaries.

The audio equals the model's own one-shot output for the whole sequence (the
``trainer.model.Autoencoder`` built for its length, same noise seed) up to float rounding: every
piece of state that crosses a chunk boundary is carried from one chunk to the next.

- **Decoder**: the input MLPs, the output MLP and the dense layer are per frame; the RNN's state
  (GRU ``h``, LSTM ``h, c``) after a chunk's last frame starts the next chunk
  (:func:`trainer.layers.rnn_with_state`). Each chunk also decodes one frame of *lookahead* (the
  next chunk's first frame, from the same state, so the same controls), because the audio of a
  frame's last sample interpolates towards the next frame.
- **Harmonic synthesizer**: f0 is interpolated linearly and the harmonic amplitudes are
  cross-faded with Hann windows between a frame and the next (as ``synths.Harmonic``); the
  fundamental's phase is accumulated in float64 and carried (float64) to the next chunk, where
  harmonic k uses k times it, exactly as in the one-shot synthesis.
- **Filtered noise**: the white noise is the same Philox stream ``SeededFilteredNoise`` draws
  for the whole sequence (``tf.random.stateless_uniform`` of the seed), each chunk reading its
  own stretch of it by offsetting the generator's counter; every frame's noise is convolved
  with that frame's FIR filter and overlap-added; the convolution tails that reach into the next
  chunk are carried and the filter's centring delay (``window // 2`` samples) is a fixed
  latency: a chunk emits the samples that no later frame can change.
- **Reverb**: the learned impulse response (first sample zeroed, dry path added, as
  ``effects.Reverb``) is applied by overlap-add FFT convolution of each emitted dry block; the
  ``reverb_length - 1`` samples of tail carry into the following blocks. The output has the
  input's length (as the one-shot model, whose reverb is cropped to it).

Memory: one chunk's controls and audio, the carried tails (a reverb's length) and one FFT buffer;
nothing grows with the sequence beyond its frame-rate controls.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Optional

import numpy as np

#: Default chunk length in frames (4 s at 250 frames/s).
DEFAULT_CHUNK_FRAMES = 1000
_PHILOX = 1  # tf.random.Algorithm.PHILOX, the generator SeededFilteredNoise names
_TWO_PI = 2.0 * math.pi
#: Attribute of a model holding its traced chunk functions by chunk length, shared by the
#: StreamingSynths of that model (they depend on nothing else: reverb and seed are per render).
#: Set with object.__setattr__, out of Keras' attribute tracking (and its checkpoints).
_STEPS_ATTR = '_ddsp_streaming_steps'


class StreamingError(ValueError):
    """A model this module cannot stream (the message says why)."""


def _processors(model):
    """(harmonic, noise, reverb or None) of the autoencoder's processor group, checked."""
    from ddsp_core import effects, processors, synths

    found = {}
    for proc in model.processor_group.processors:
        if isinstance(proc, synths.Harmonic):
            found['harmonic'] = proc
        elif isinstance(proc, synths.FilteredNoise):
            found['noise'] = proc
        elif isinstance(proc, effects.Reverb):
            found['reverb'] = proc
        elif not isinstance(proc, processors.Add):
            raise StreamingError(f'the model has a {type(proc).__name__} processor, which '
                                 'streaming synthesis does not know how to carry across chunks')
    if 'harmonic' not in found or 'noise' not in found:
        raise StreamingError('streaming synthesis needs a Harmonic + FilteredNoise model')
    reverb = found.get('reverb')
    if reverb is not None and (not reverb.trainable or not reverb.add_dry
                               or type(reverb) is not effects.Reverb):
        raise StreamingError('streaming synthesis supports the trainable Reverb with its dry '
                             'path only')
    method = found['harmonic'].amp_resample_method
    if method not in ('window', 'linear'):
        raise StreamingError(f"harmonic amplitudes resampled by {method!r}: streaming "
                             "synthesis supports 'window' and 'linear'")
    if model.encoder is not None:
        raise StreamingError('models with an encoder (model.use_encoder) are not supported: '
                             'their latent z needs the input audio at the model\'s rate')
    return found['harmonic'], found['noise'], reverb


def philox_key_counter(seed) -> tuple[np.ndarray, np.ndarray]:
    """The Philox key [1] and counter [2] (uint64) that ``tf.random.stateless_uniform(...,
    seed=seed, alg='philox')`` starts from."""
    import tensorflow as tf

    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(
        seed=tf.constant(np.asarray(seed, np.int32)))
    return key.numpy(), counter.numpy()


def _offset_counter(counter: np.ndarray, blocks: int) -> np.ndarray:
    """``counter`` (a 128-bit little-endian [low, high] pair of uint64) plus ``blocks``."""
    low = int(counter[0]) + int(blocks)
    high = (int(counter[1]) + (low >> 64)) % (1 << 64)
    return np.array([low % (1 << 64), high], np.uint64)


class ReverbStream:
    """Convolution with a fixed impulse response, block by block (overlap-add FFT convolution).

    ``process(block)`` returns ``len(block)`` samples of ``block * ir`` (plus ``block`` with
    ``add_dry``): the full convolution's samples at the block's positions, the earlier blocks'
    tails included. Computed in float64.
    """

    def __init__(self, ir: np.ndarray, add_dry: bool = True):
        self.ir = np.asarray(ir, np.float64)
        self.add_dry = add_dry
        self.tail = np.zeros(max(len(self.ir) - 1, 0))
        self._spectra: dict[int, np.ndarray] = {}

    def _ir_spectrum(self, n_fft: int) -> np.ndarray:
        if n_fft not in self._spectra:
            if len(self._spectra) > 4:
                self._spectra.clear()
            import scipy.fft

            self._spectra[n_fft] = scipy.fft.rfft(self.ir, n_fft)
        return self._spectra[n_fft]

    def process(self, block: np.ndarray) -> np.ndarray:
        import scipy.fft

        block = np.asarray(block, np.float64)
        n = len(block)
        if n == 0:
            return np.zeros(0, np.float32)
        n_fft = scipy.fft.next_fast_len(n + len(self.ir) - 1, real=True)
        full = scipy.fft.irfft(scipy.fft.rfft(block, n_fft) * self._ir_spectrum(n_fft), n_fft)
        full = full[:n + len(self.tail)]
        full[:len(self.tail)] += self.tail
        out, self.tail = full[:n], full[n:].copy()
        if len(self.tail) < len(self.ir) - 1:  # a block shorter than the tail: keep all of it
            self.tail = np.concatenate([self.tail, np.zeros(len(self.ir) - 1 - len(self.tail))])
        if self.add_dry:
            out = out + block
        return out.astype(np.float32)


class StreamingSynth:
    """Renders a trained :class:`trainer.model.Autoencoder` from frame-rate controls, chunk by
    chunk (see the module docstring for the state carried between chunks).

    Args:
        model: the autoencoder (any window length; its weights are used, not its length).
        chunk_frames: frames decoded and synthesised per step (memory and speed; the output does
            not depend on it beyond float rounding).
        reverb: apply the learned reverb (False: the dry harmonic + noise signal).
        noise_seed: the [2] int32 seed of the filtered noise (the model's ``noise_seed``;
            :class:`trainer.inference.TrainedModel` uses ``[train.seed, seed]``).
    """

    def __init__(self, model, chunk_frames: int = DEFAULT_CHUNK_FRAMES, reverb: bool = True,
                 noise_seed=(0, 0)):
        import tensorflow as tf

        self.model = model
        self.harmonic, self.noise, reverb_proc = _processors(model)
        self.sample_rate = int(self.harmonic.sample_rate)
        data = model.data_config
        self.frame_rate = int(data.frame_rate)
        self.hop = data.n_samples // data.n_frames
        if self.hop * self.frame_rate != self.sample_rate:
            raise StreamingError(f'{self.sample_rate} Hz is not a whole number of samples per '
                                 f'frame at {self.frame_rate} frames/s')
        self.chunk_frames = int(chunk_frames)
        if self.chunk_frames < 1:
            raise ValueError(f'chunk_frames must be >= 1, got {chunk_frames}')
        self.reverb_ir = None
        if reverb and reverb_proc is not None:
            ir = np.asarray(reverb_proc.get_controls(tf.zeros([1, 2]))['ir'], np.float32)[0]
            ir = ir.copy()
            ir[0] = 0.0  # the dry path is added separately (as Reverb._mask_dry_ir)
            self.reverb_ir = ir
        self.key, self.counter = philox_key_counter(noise_seed)
        # The noise filters' length: frequency_impulse_response's window for these bands.
        n_bands = int(model.model_config.n_noise_bands)
        ir_size = 2 * (n_bands - 1)
        window = int(self.noise.window_size)
        self.noise_ir_size = ir_size if window <= 0 or window >= ir_size else (
            window - 1 if window % 2 == 0 else window)
        self.noise_delay = self.noise_ir_size // 2
        # A chunk must reach past the noise filters' centring delay to complete any output
        # sample: smaller chunks are raised to that (the output does not depend on it).
        self.chunk_frames = max(self.chunk_frames, -(-self.noise_delay // self.hop))
        from ddsp_core import core

        self.noise_fft_size = core.get_fft_size(self.hop, self.noise_ir_size, power_of_2=True)
        steps = getattr(model, _STEPS_ATTR, None)
        if steps is None:
            steps = {}
            object.__setattr__(model, _STEPS_ATTR, steps)
        if self.chunk_frames not in steps:
            steps[self.chunk_frames] = tf.function(self._chunk, reduce_retracing=True)
        self._step = steps[self.chunk_frames]

    @property
    def uses_loudness(self) -> bool:
        """Whether the decoder takes the loudness (``ld_scaled``)."""
        return 'ld_scaled' in self.model.decoder.input_keys

    @property
    def uses_power(self) -> bool:
        """Whether the decoder takes the frame power (``pw_scaled``) instead of loudness."""
        return 'pw_scaled' in self.model.decoder.input_keys

    @property
    def harmonic_count(self) -> int:
        return int(self.model.model_config.n_harmonics)

    # ---- one chunk, in TensorFlow ------------------------------------------------------------
    def _decode(self, f0_hz, loudness_db, power_db, state, n_valid):
        """Controls of frames [1, C + 1] from the RNN state; rows from ``n_valid`` on repeat row
        ``n_valid - 1`` (the held last frame). Returns (f0 [C+1, 1], harmonic amplitudes
        [C+1, K], noise magnitudes [C+1, B], state after frame C)."""
        import tensorflow as tf

        from trainer.layers import rnn_with_state

        model, dec = self.model, self.model.decoder
        inputs = {'f0_hz': f0_hz}
        if self.uses_loudness:
            inputs['loudness_db'] = loudness_db
        if self.uses_power:
            inputs['power_db'] = power_db
        feats = model.preprocess(inputs)
        stacked = [stack(feats[k]) for k, stack in zip(dec.input_keys, dec.input_stacks,
                                                       strict=True)]
        dtype = dec.rnn.compute_dtype
        stacked = [tf.cast(part, dtype) for part in stacked]
        x = tf.concat(stacked, axis=-1) if len(stacked) > 1 else stacked[0]
        rnn_out, state = rnn_with_state(dec.rnn, x, state, keep=self.chunk_frames)
        x = tf.concat([*stacked, tf.cast(rnn_out, dtype)], axis=-1)
        x = dec.dense_out(tf.cast(dec.out_stack(x), tf.float32))
        parts = dict(zip([n for n, _ in dec.output_splits],
                         tf.split(x, [n for _, n in dec.output_splits], axis=-1), strict=True))
        harm = self.harmonic.get_controls(parts['amps'], parts['harmonic_distribution'],
                                          feats['f0_hz'])
        amps = harm['amplitudes'] * harm['harmonic_distribution']
        mags = self.noise.get_controls(parts['noise_magnitudes'])['magnitudes']
        rows = tf.minimum(tf.range(self.chunk_frames + 1), n_valid - 1)
        pick = lambda t: tf.gather(t[0], rows)  # noqa: E731
        return pick(harm['f0_hz']), pick(amps), pick(mags), state

    def _harmonic_audio(self, f0, amps, phase0):
        """C intervals of harmonic audio [C * hop] from C + 1 control rows, starting at phase
        ``phase0`` (float64); returns (audio, phase after the last sample, float64)."""
        import tensorflow as tf

        from ddsp_core.dsp import resampling

        hop, n = self.hop, self.chunk_frames
        frac = tf.range(hop, dtype=tf.float32) / float(hop)
        f0_audio = f0[:-1] + frac[tf.newaxis, :] * (f0[1:] - f0[:-1])  # [C, hop]
        f0_audio = tf.reshape(f0_audio, [n * hop, 1])
        omega = tf.cast(f0_audio, tf.float64) * (_TWO_PI / float(self.sample_rate))
        phase = tf.cumsum(omega, axis=0) + phase0
        phase = phase - _TWO_PI * tf.floor(phase / _TWO_PI)
        k_all = tf.range(1, self.harmonic_count + 1, dtype=tf.float32)
        nyquist = self.sample_rate / 2.0
        n_audible = tf.reduce_max(tf.reduce_sum(tf.cast(f0 * k_all < nyquist, tf.int32), -1))
        k = k_all[:tf.maximum(n_audible, 1)]
        sines = tf.where(f0_audio * k < nyquist, tf.sin(tf.cast(phase, tf.float32) * k), 0.0)
        sines = tf.reshape(sines, [n, hop, -1])
        n_k = tf.shape(k)[0]
        bounds = tf.stack([amps[:-1, :n_k], amps[1:, :n_k]], axis=-1)  # [C, k, 2]
        partial = tf.matmul(sines, bounds)  # [C, hop, 2]
        if self.harmonic.amp_resample_method == 'window':
            w_start, w_end = resampling.window_weights(hop)
        else:  # linear
            w_end = frac
            w_start = 1.0 - w_end
        audio = partial[..., 0] * w_start + partial[..., 1] * w_end
        return tf.reshape(audio, [-1]), phase[-1, 0]

    def _noise_audio(self, mags, key, counter, skip, n_real):
        """The filtered noise of C frames before cropping: [(C - 1) * hop + fft_size] samples
        from the chunk's first sample on (the frames' convolution tails included)."""
        import tensorflow as tf

        from ddsp_core import core

        n, hop = self.chunk_frames, self.hop
        uniform = tf.raw_ops.StatelessRandomUniformV2(
            shape=[1, n * hop + 3], key=key, counter=counter, alg=_PHILOX)
        white = uniform[0, skip:skip + n * hop] * 2.0 - 1.0
        real = tf.range(n) < n_real  # frames past the end contribute nothing
        mags = tf.where(real[:, tf.newaxis], mags[:n], 0.0)
        ir = core.frequency_impulse_response(mags[tf.newaxis], self.noise.window_size)
        frames = tf.reshape(white, [1, n, hop])
        size = self.noise_fft_size
        conv = tf.signal.irfft(tf.signal.rfft(frames, [size]) * tf.signal.rfft(ir, [size]),
                               [size])
        return tf.signal.overlap_and_add(conv, hop)[0]

    def _chunk(self, f0_hz, loudness_db, power_db, state, n_valid, n_real, phase0, key, counter,
               skip):
        f0, amps, mags, state = self._decode(f0_hz, loudness_db, power_db, state, n_valid)
        harmonic, phase = self._harmonic_audio(f0, amps, phase0)
        noise = self._noise_audio(mags, key, counter, skip, n_real)
        return harmonic, phase, noise, state

    # ---- the stream --------------------------------------------------------------------------
    def render(self, f0_hz, loudness_db=None, power_db=None,
               on_frames: Optional[Callable[[int], None]] = None) -> Iterator[np.ndarray]:
        """The audio of the controls, as consecutive float32 blocks.

        Args:
            f0_hz: [n_frames] Hz.
            loudness_db: [n_frames] dB, for a decoder that takes the loudness (``ld_scaled``).
            power_db: [n_frames] dB, for one that takes the frame power (``pw_scaled``,
                ``trainer.model.frame_power_db``).
            on_frames: called with the number of frames done after each chunk (progress).

        Yields:
            float32 blocks of audio at ``sample_rate``, ``n_frames * hop`` samples in all.
        """
        import tensorflow as tf

        from trainer.layers import rnn_initial_state

        f0_hz = np.asarray(f0_hz, np.float32).reshape(-1)
        controls = {}
        for name, values, needed in (('loudness_db', loudness_db, self.uses_loudness),
                                     ('power_db', power_db, self.uses_power)):
            if values is None:
                if needed:
                    raise ValueError(f'the model\'s decoder takes {name}; pass it')
                values = np.zeros_like(f0_hz)
            values = np.asarray(values, np.float32).reshape(-1)
            if values.shape != f0_hz.shape:
                raise ValueError(f'f0_hz {f0_hz.shape} and {name} {values.shape} differ in '
                                 'length')
            controls[name] = values
        loudness_db, power_db = controls['loudness_db'], controls['power_db']
        total = len(f0_hz)
        if total == 0:
            return
        c, hop = self.chunk_frames, self.hop
        state = rnn_initial_state(self.model.decoder.rnn)
        phase = tf.constant(0.0, tf.float64)
        key = tf.constant(self.key)
        reverb = ReverbStream(self.reverb_ir) if self.reverb_ir is not None else None
        n_samples = total * hop
        harm_buf = np.zeros(0, np.float32)  # harmonic samples from `emitted` on
        noise_buf = np.zeros(0, np.float32)  # uncropped noise from `emitted + delay` on
        emitted = 0
        for start in range(0, total, c):
            end = min(start + c, total)
            n_valid = min(end + 1, total) - start
            idx = np.minimum(np.arange(start, start + c + 1), total - 1)
            first = start * hop
            counter = _offset_counter(self.counter, first // 4)
            harmonic, phase, noise, state = self._step(
                tf.constant(f0_hz[idx][np.newaxis]), tf.constant(loudness_db[idx][np.newaxis]),
                tf.constant(power_db[idx][np.newaxis]), state, tf.constant(n_valid, tf.int32),
                tf.constant(end - start, tf.int32), phase, key, tf.constant(counter),
                tf.constant(first % 4, tf.int32))
            n_new = (end - start) * hop
            harm_buf = np.concatenate([harm_buf, harmonic.numpy()[:n_new]])
            # Uncropped noise: noise_buf starts at absolute position emitted + delay; this
            # chunk's convolution starts at `first`.
            noise = noise.numpy()
            offset = first - (emitted + self.noise_delay)
            if offset < 0:  # the first chunk: the filters' centring delay is cropped
                noise, offset = noise[-offset:], 0
            grown = max(len(noise_buf), offset + len(noise))
            buf = np.zeros(grown, np.float32)
            buf[:len(noise_buf)] = noise_buf
            buf[offset:offset + len(noise)] += noise
            noise_buf = buf
            final = end == total
            # Output sample t needs uncropped noise up to t + delay, complete below end * hop.
            ready = n_samples if final else end * hop - self.noise_delay
            count = ready - emitted
            dry = harm_buf[:count] + noise_buf[:count]
            harm_buf, noise_buf = harm_buf[count:], noise_buf[count:]
            emitted = ready
            block = reverb.process(dry) if reverb is not None else dry.astype(np.float32)
            if on_frames is not None:
                on_frames(end - start)
            yield block

    def synthesize(self, f0_hz, loudness_db=None, power_db=None) -> np.ndarray:
        """:meth:`render` concatenated: float32 [n_frames * hop]."""
        blocks = list(self.render(f0_hz, loudness_db, power_db))
        return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
