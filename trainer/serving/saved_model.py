"""A trained model as a TensorFlow SavedModel that plain TensorFlow reloads (``ddsp-export
--format saved_model``; the format is described in :mod:`trainer.serving.export`), built from the
trained model's own layers and processors and checked against the in-process model before
anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

#: Written next to the SavedModel: what it takes and returns, and where it came from.
EXPORT_INFO = 'ddsp_export.json'
SEED_NAME = 'seed'
#: The features the decoder's inputs are computed from (``model.decoder_inputs``).
FEATURE_OF_INPUT = {'ld_scaled': 'loudness_db', 'pw_scaled': 'power_db', 'f0_scaled': 'f0_hz'}

class ExportError(ValueError):
    """The model cannot be exported as asked (bad usage: exit code 2); the message says why."""


class ExportCheckError(RuntimeError):
    """An export does not reproduce the trained model (a bug: exit code 1)."""


def tensorflow():
    """TensorFlow, imported quietly the first time (also called while tracing functions)."""
    tf = sys.modules.get('tensorflow')
    if tf is not None:
        return tf
    from ddsp_core import runtime

    return runtime.import_tensorflow()


# ================================================================================================
# SavedModel
# ================================================================================================
def feature_names(config) -> tuple[str, ...]:
    """The SavedModel's frame-rate inputs: ``f0_hz`` then the decoder's other features."""
    names = ['f0_hz']
    for key in config.model.decoder_inputs:
        if FEATURE_OF_INPUT[key] not in names:
            names.append(FEATURE_OF_INPUT[key])
    return tuple(names)


def check_exportable(config) -> None:
    if config.model.use_encoder:
        raise ExportError('the model has an encoder (model.use_encoder), whose z is computed '
                          'from the audio; ddsp-export supports models without one')


def tf_variables(*layers) -> list:
    """The TensorFlow variables under the Keras layers' weights (a ``tf.Module`` tracks and
    saves these, not the Keras wrappers; None layers are skipped)."""
    tf = tensorflow()
    found = []
    for layer in layers:
        for weight in [] if layer is None else layer.weights:
            variable = getattr(weight, 'value', weight)
            if not isinstance(variable, tf.Variable):
                raise ExportError(f'{weight.path}: not backed by a TensorFlow variable')
            found.append(variable)
    return found


def build_synthesis_module(trained):
    """A ``tf.Module`` holding the trained model's decoder and reverb (their weights) whose
    ``serve`` and ``controls`` functions take [batch, n_frames] features of any n_frames (see
    the module docstring)."""
    from trainer.serving.streaming import StreamingError, synth_processors

    tf = tensorflow()
    config = trained.config
    check_exportable(config)
    net = trained.model
    try:
        harmonic, noise, reverb = synth_processors(net)
    except StreamingError as e:
        raise ExportError(str(e)) from None
    names = feature_names(config)
    hop = config.data.hop_samples
    n_bands = int(config.model.n_noise_bands)
    latency = noise.latency(n_bands)
    train_seed = int(config.train.seed)
    module = tf.Module(name='ddsp_synthesis')
    module.weights = tf_variables(net.decoder, reverb)  # saved with the module

    def run_controls(features):
        feats = net.preprocess({k: v[..., tf.newaxis] for k, v in features.items()})
        state = net.decoder.initial_state(tf.shape(features['f0_hz'])[0])
        raw, _ = net.decoder.call_with_state(feats, state)
        controls = harmonic.get_controls(raw['amps'], raw['harmonic_distribution'],
                                         feats['f0_hz'])
        controls['noise_magnitudes'] = noise.get_controls(raw['noise_magnitudes'])['magnitudes']
        return controls

    specs = [tf.TensorSpec([None, None], tf.float32, name=n) for n in names]

    @tf.function(input_signature=[*specs, tf.TensorSpec([], tf.int64, name=SEED_NAME)])
    def serve(*args):
        features = dict(zip(names, args[:-1], strict=True))
        controls = run_controls(features)
        batch, n_frames = tf.shape(args[0])[0], tf.shape(args[0])[1]

        def held(x):  # the frame after the last: the last again (one chunk: the whole signal)
            return tf.concat([x, x[:, -1:]], axis=1)

        audio, _ = harmonic.get_signal_chunk(
            *(held(controls[k]) for k in ('amplitudes', 'harmonic_distribution', 'f0_hz')), hop)
        noise_seed = tf.stack([tf.constant(train_seed, tf.int32), tf.cast(args[-1], tf.int32)])
        white = tf.random.stateless_uniform([batch, n_frames * hop], seed=noise_seed,
                                            minval=-1.0, maxval=1.0, alg='philox')
        filtered, state = noise.get_signal_chunk(controls['noise_magnitudes'], white, hop)
        filtered = tf.concat([filtered, state['tail'][:, :latency]], axis=1)[:, latency:]
        dry = filtered + audio
        if reverb is None:
            return {'audio': dry, 'audio_dry': dry}
        wet, _ = reverb.get_signal_chunk(dry, reverb.get_controls(dry)['ir'])
        return {'audio': wet, 'audio_dry': dry}

    @tf.function(input_signature=specs)
    def controls_fn(*args):
        return run_controls(dict(zip(names, args, strict=True)))

    module.serve = serve
    module.controls = controls_fn
    return module


def _probe_features(config, n_frames: int, batch: int = 2) -> dict[str, np.ndarray]:
    """Features for the self-checks: f0 glides over the model's range, levels rise and fall."""
    t = np.linspace(0.0, 1.0, n_frames, dtype=np.float32)[np.newaxis]
    scale = np.arange(1, batch + 1, dtype=np.float32)[:, np.newaxis]
    f0 = 110.0 * scale * 2.0 ** (3.0 * t)
    level = -70.0 + 60.0 * np.sin(np.pi * t) ** 2 / scale
    out = {'f0_hz': f0.astype(np.float32)}
    for name in feature_names(config)[1:]:
        out[name] = level.astype(np.float32)
    return out


def in_process_model(trained, n_frames: int):
    """The trained autoencoder rebuilt for ``n_frames`` frames, float32 (weights copied)."""
    from trainer.model.autoencoder import Autoencoder

    config = trained.config
    secs = n_frames / config.data.frame_rate
    data = dataclasses.replace(config.data, example_secs=None, record_secs=None)
    data = dataclasses.replace(data, record_secs=secs, example_secs=secs)
    net = Autoencoder(config.model, data, compute_dtype='float32')
    net(net.dummy_features(1))
    values = {v.path: v for v in trained.model.weights}
    for variable in net.weights:
        variable.assign(values[variable.path])
    return net


def reference_outputs(trained, features: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """What the in-process model computes from the features (as :meth:`TrainedModel.__call__`
    with this seed): 'audio', 'audio_dry', the scaled controls."""
    from trainer.model.autoencoder import NOISE_SEED_KEY

    tf = tensorflow()
    n_frames = int(np.shape(features['f0_hz'])[1])
    net = in_process_model(trained, n_frames)
    batch = {k: tf.convert_to_tensor(v, tf.float32) for k, v in features.items()}
    batch['audio'] = tf.zeros([batch['f0_hz'].shape[0], net.data_config.n_samples])
    batch[NOISE_SEED_KEY] = tf.constant([trained.config.train.seed, seed], tf.int32)
    with tf.device('/CPU:0'):  # no TF32 matmuls on a GPU
        outputs = net.preprocess(batch)
        outputs.update(net.decoder(outputs))
        group = net.processor_group(outputs, return_outputs_dict=True)
    nodes = group['controls']
    out = {'audio': np.asarray(group['signal']), 'audio_dry': np.asarray(nodes['add']['signal'])}
    for name, key in (('amplitudes', 'harmonic'), ('harmonic_distribution', 'harmonic')):
        out[name] = np.asarray(nodes[key]['controls'][name])
    out['noise_magnitudes'] = np.asarray(nodes['filtered_noise']['controls']['magnitudes'])
    return out


def assert_close(got, want, what: str, atol: float, rtol: float = 1e-4) -> float:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise ExportCheckError(f'{what}: shape {got.shape}, the trained model gives {want.shape}')
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    if not np.allclose(got, want, atol=atol, rtol=rtol):
        raise ExportCheckError(f'{what} differs from the trained model by up to {err:.3g}')
    return err


def check_saved_model(path: str | os.PathLike, trained, n_frames: Optional[int] = None,
                      seed: int = 3) -> dict[str, float]:
    """Reload a SavedModel export with plain TensorFlow and compare it with the in-process
    model on probe features (noise included: same seed). Returns the max abs differences.

    Raises:
        ExportCheckError: a difference beyond float tolerance.
    """
    tf = tensorflow()
    loaded = tf.saved_model.load(str(path))
    n_frames = n_frames or max(2, trained.config.data.frame_rate // 2)
    features = _probe_features(trained.config, n_frames)
    want = reference_outputs(trained, features, seed)
    with tf.device('/CPU:0'):  # as the reference: no TF32 matmuls on a GPU
        feeds = {k: tf.constant(v) for k, v in features.items()}
        got = loaded.signatures['serving_default'](**feeds, seed=tf.constant(seed, tf.int64))
        controls = loaded.signatures['controls'](**feeds)
    errors = {}
    for name in ('amplitudes', 'harmonic_distribution', 'noise_magnitudes'):
        errors[name] = assert_close(controls[name], want[name], f'SavedModel {name}', 1e-5)
    for name in ('audio_dry', 'audio'):
        errors[name] = assert_close(got[name], want[name], f'SavedModel {name}', 1e-4)
    return errors


def export_saved_model(trained, out: str | os.PathLike, check: bool = True) -> dict:
    """Write the SavedModel (and ``ddsp_export.json`` beside it) to ``out``; returns that
    info dict (features, outputs, rates, step, check errors). The directory is built and checked
    under a temporary name and moved into place whole
    (:func:`ddsp_core.runtime.atomic_directory`), replacing an earlier export only when the new
    one passed its check."""
    from ddsp_core import runtime

    with runtime.atomic_directory(out) as partial:
        return _write_saved_model(trained, partial, check)


def _write_saved_model(trained, out: Path, check: bool) -> dict:
    tf = tensorflow()
    module = build_synthesis_module(trained)
    tf.saved_model.save(module, str(out), signatures={
        'serving_default': module.serve.get_concrete_function(),
        'controls': module.controls.get_concrete_function()})
    config = trained.config
    info = {
        'format': 'saved_model',
        'features': list(feature_names(config)),
        'seed': 'int64 scalar: seeds the filtered noise as noise_seed [train.seed, seed]',
        'outputs': {'audio': 'with the reverb', 'audio_dry': 'without the reverb'},
        'sample_rate': config.data.sample_rate,
        'frame_rate': config.data.frame_rate,
        'hop': config.data.hop_samples,
        'power_frame_size': (config.model.power_frame_size
                             if 'power_db' in feature_names(config) else None),
        'step': trained.step,
        'model_dir': str(trained.model_dir),
        'run_id': trained.run_info.get('run_id'),
        'config': config.to_dict(),
    }
    if check:
        info['check_max_abs_error'] = check_saved_model(out, trained)
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + '\n')
    return info
