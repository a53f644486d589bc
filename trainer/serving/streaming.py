"""Streaming synthesis: a trained autoencoder's audio for a long sequence of frame-rate
controls, rendered chunk by chunk with bounded memory and no seam at chunk boundaries.

The audio equals the model's own one-shot output for the whole sequence (the
``trainer.model.autoencoder.Autoencoder`` built for its length, same noise seed) up to float
rounding: every piece of state that crosses a chunk boundary is carried from one chunk to the next,
by the model's own layers and processors (nothing of the model is written again here):

- **Decoder**: :meth:`trainer.model.autoencoder.RnnFcDecoder.call_with_state` carries the RNN's
  state (GRU ``h``, LSTM ``h, c``) from a chunk's last frame to the next chunk. Each chunk also
  decodes one frame of *lookahead* (the next chunk's first frame, from the same state, so the same
  controls), because the audio of a frame's last sample interpolates towards the next frame.
- **Harmonic synthesizer**: ``Harmonic.get_signal_chunk`` carries the fundamental's phase
  (float64).
- **Filtered noise**: the white noise is the same Philox stream ``SeededFilteredNoise`` draws
  for the whole sequence, each chunk reading its own stretch of it
  (``ddsp_core.synths.NoiseStream``); ``FilteredNoise.get_signal_chunk`` carries the
  convolution tails into the next chunk. Its output lags by the filters' centring delay
  (``window // 2`` samples), so the harmonic audio is held back as long: a chunk emits the
  samples that no later frame can change.
- **Reverb**: ``Reverb.get_signal_chunk`` convolves each emitted dry block with the learned
  impulse response and carries the tail (``reverb_length - 1`` samples, float64) into the
  following blocks. The output has the input's length (as the one-shot model, whose reverb is
  cropped to it).

Memory: one chunk's controls and audio, the carried tails (a reverb's length) and one FFT buffer;
nothing grows with the sequence beyond its frame-rate controls.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import numpy as np

#: Default chunk length in frames (4 s at 250 frames/s).
DEFAULT_CHUNK_FRAMES = 1000
#: Attribute of a model holding its traced chunk functions by chunk length, shared by the
#: StreamingSynths of that model (they depend on nothing else: reverb and seed are per render).
#: Set with object.__setattr__, out of Keras' attribute tracking (and its checkpoints).
_STEPS_ATTR = '_ddsp_streaming_steps'


class StreamingError(ValueError):
    """A model this module cannot stream (the message says why)."""


def synth_processors(model):
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
    if reverb is not None:
        _check_streamable(reverb)
    method = found['harmonic'].amp_resample_method
    if method not in ('window', 'linear'):
        raise StreamingError(f"harmonic amplitudes resampled by {method!r}: streaming "
                             "synthesis supports 'window' and 'linear'")
    if model.encoder is not None:
        raise StreamingError('models with an encoder (model.use_encoder) are not supported: '
                             'their latent z needs the input audio at the model\'s rate')
    return found['harmonic'], found['noise'], reverb


def room_of(model):
    """The trainable ``Reverb`` of an autoencoder (its learned room), for
    :class:`StreamingSynth`'s ``room``.

    Raises:
        StreamingError: the model has no reverb, or one streaming cannot apply.
    """
    from ddsp_core import effects

    rooms = [p for p in model.processor_group.processors if isinstance(p, effects.Reverb)]
    if not rooms:
        raise StreamingError('the model has no learned reverb (it was trained with '
                             'model.use_reverb=false)')
    return _check_streamable(rooms[0])


def _check_streamable(reverb):
    """The reverb, if its impulse response is the same on every call (the learned one of the
    trainable ``Reverb`` or of ``model.reverb_type='exp_decay'``) and it adds the dry path."""
    from ddsp_core import effects
    from trainer.model.autoencoder import LearnedExpDecayReverb

    if (not reverb.trainable or not reverb.add_dry
            or type(reverb) not in (effects.Reverb, LearnedExpDecayReverb)):
        raise StreamingError('streaming synthesis supports the trainable Reverb (a learned '
                             'impulse response or exponential decay) with its dry path only')
    return reverb


def learned_ir(reverb):
    """A learned room's impulse response as float64 [reverb_length], its first sample zeroed
    as the reverb applies it (the dry path is added separately)."""
    import tensorflow as tf

    ir = np.array(reverb.get_controls(tf.zeros([1, 1]))['ir'][0], np.float64)  # [1, length]
    ir[0] = 0.0
    return ir


class StreamingSynth:
    """Renders a trained :class:`trainer.model.autoencoder.Autoencoder` from frame-rate controls,
    chunk by chunk (see the module docstring for the state carried between chunks).

    Args:
        model: the autoencoder (any window length; its weights are used, not its length).
        chunk_frames: frames decoded and synthesised per step (memory and speed; the output does
            not depend on it beyond float rounding).
        reverb: apply the learned reverb (False: the dry harmonic + noise signal).
        noise_seed: the [2] int32 seed of the filtered noise (the model's ``noise_seed``;
            :class:`trainer.serving.inference.TrainedModel` uses ``[train.seed, seed]``).
        room: another model's trainable ``Reverb`` (:func:`room_of`) to apply instead of this
            model's own (``ddsp-transfer --reverb_from``); needs ``reverb``.
    """

    def __init__(self, model, chunk_frames: int = DEFAULT_CHUNK_FRAMES, reverb: bool = True,
                 noise_seed=(0, 0), room=None):
        import tensorflow as tf

        self.model = model
        self.harmonic, self.noise, reverb_proc = synth_processors(model)
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
        from ddsp_core.synths import NoiseStream

        if room is not None and not reverb:
            raise ValueError('a room reverb needs reverb=True')
        self.reverb = (reverb_proc if room is None else room) if reverb else None
        self.noise_stream = NoiseStream(noise_seed)
        self.n_noise_bands = int(model.model_config.n_noise_bands)
        self.latency = self.noise.latency(self.n_noise_bands)
        steps = getattr(model, _STEPS_ATTR, None)
        if steps is None:
            steps = {}
            object.__setattr__(model, _STEPS_ATTR, steps)
        if self.chunk_frames not in steps:
            steps[self.chunk_frames] = tf.function(self._chunk, reduce_retracing=True)
        self._step = steps[self.chunk_frames]
        # another model's room is traced for this synth only (the cache holds the model's own)
        reverb_steps = steps if room is None else {}
        if self.reverb is not None and 'reverb' not in reverb_steps:
            ir_size = int(self.reverb.reverb_length)
            reverb_steps['reverb'] = tf.function(
                self._reverb, input_signature=[tf.TensorSpec([1, None], tf.float32),
                                               tf.TensorSpec([1, ir_size - 1], tf.float64)])
        self._reverb_step = reverb_steps['reverb'] if self.reverb is not None else None

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
    def _chunk(self, f0_hz, loudness_db, power_db, state, n_valid, n_real, harmonic_state,
               noise_state, key, counter, skip):
        """Frames [1, C + 1] (C kept, one of lookahead; rows from ``n_valid`` on repeat row
        ``n_valid - 1``, the held last frame; frames from ``n_real`` on are past the end) ->
        (harmonic audio [C * hop], noise audio [C * hop] lagging by the latency, and the
        decoder's, the harmonic's and the noise's states after the chunk)."""
        import tensorflow as tf

        c = self.chunk_frames
        inputs = {'f0_hz': f0_hz}
        if self.uses_loudness:
            inputs['loudness_db'] = loudness_db
        if self.uses_power:
            inputs['power_db'] = power_db
        feats = self.model.preprocess(inputs)
        raw, state = self.model.decoder.call_with_state(feats, state, keep=c)
        harm = self.harmonic.get_controls(raw['amps'], raw['harmonic_distribution'],
                                          feats['f0_hz'])
        rows = tf.minimum(tf.range(c + 1), n_valid - 1)
        harmonic, harmonic_state = self.harmonic.get_signal_chunk(
            *(tf.gather(harm[k], rows, axis=1)
              for k in ('amplitudes', 'harmonic_distribution', 'f0_hz')),
            self.hop, harmonic_state)
        mags = tf.gather(self.noise.get_controls(raw['noise_magnitudes'])['magnitudes'], rows,
                         axis=1)[:, :c]
        mags = tf.where((tf.range(c) < n_real)[tf.newaxis, :, tf.newaxis], mags, 0.0)
        white = self.noise_stream.read(key, counter, skip, c * self.hop)
        noise, noise_state = self.noise.get_signal_chunk(mags, white, self.hop, noise_state)
        return harmonic[0], noise[0], state, harmonic_state, noise_state

    def _reverb(self, dry, tail):
        ir = self.reverb.get_controls(dry)['ir']
        return self.reverb.get_signal_chunk(dry, ir, {'tail': tail})

    # ---- the stream --------------------------------------------------------------------------
    def render(self, f0_hz, loudness_db=None, power_db=None,
               on_frames: Optional[Callable[[int], None]] = None) -> Iterator[np.ndarray]:
        """The audio of the controls, as consecutive float32 blocks.

        Args:
            f0_hz: [n_frames] Hz.
            loudness_db: [n_frames] dB, for a decoder that takes the loudness (``ld_scaled``).
            power_db: [n_frames] dB, for one that takes the frame power (``pw_scaled``,
                ``trainer.model.autoencoder.frame_power_db``).
            on_frames: called with the number of frames done after each chunk (progress).

        Yields:
            float32 blocks of audio at ``sample_rate``, ``n_frames * hop`` samples in all.
        """
        import tensorflow as tf

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
        state = self.model.decoder.initial_state()
        harmonic_state = self.harmonic.initial_state()
        noise_state = self.noise.initial_state(self.n_noise_bands, hop)
        reverb_tail = (None if self.reverb is None else
                       self.reverb.initial_state(self.reverb.reverb_length)['tail'])
        key = tf.constant(self.noise_stream.key)
        harm_buf = np.zeros(0, np.float32)  # harmonic samples not yet emitted
        noise_buf = np.zeros(0, np.float32)  # noise samples not yet emitted (same positions)
        to_drop = self.latency  # the noise's first samples precede the signal
        for start in range(0, total, c):
            end = min(start + c, total)
            n_valid = min(end + 1, total) - start
            idx = np.minimum(np.arange(start, start + c + 1), total - 1)
            counter, skip = self.noise_stream.position(start * hop)
            harmonic, noise, state, harmonic_state, noise_state = self._step(
                tf.constant(f0_hz[idx][np.newaxis]), tf.constant(loudness_db[idx][np.newaxis]),
                tf.constant(power_db[idx][np.newaxis]), state, tf.constant(n_valid, tf.int32),
                tf.constant(end - start, tf.int32), harmonic_state,
                noise_state,
                key, tf.constant(counter), tf.constant(skip, tf.int32))
            n_new = (end - start) * hop
            final = end == total
            noise = noise.numpy()
            if final:  # the last frames' filter tails complete the signal
                noise = np.concatenate([noise, noise_state['tail'].numpy()[0]])
            noise = noise[:n_new + (self.latency if final else 0)]
            dropped = min(to_drop, len(noise))
            noise, to_drop = noise[dropped:], to_drop - dropped
            harm_buf = np.concatenate([harm_buf, harmonic.numpy()[:n_new]])
            noise_buf = np.concatenate([noise_buf, noise])
            count = min(len(harm_buf), len(noise_buf))
            dry = harm_buf[:count] + noise_buf[:count]
            harm_buf, noise_buf = harm_buf[count:], noise_buf[count:]
            block = dry.astype(np.float32)
            if self._reverb_step is not None and count:
                wet, reverb_state = self._reverb_step(tf.constant(block[np.newaxis]),
                                                      reverb_tail)
                block, reverb_tail = wet.numpy()[0], reverb_state['tail']
            if on_frames is not None:
                on_frames(end - start)
            yield block

    def synthesize(self, f0_hz, loudness_db=None, power_db=None) -> np.ndarray:
        """:meth:`render` concatenated: float32 [n_frames * hop]."""
        blocks = list(self.render(f0_hz, loudness_db, power_db))
        return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
