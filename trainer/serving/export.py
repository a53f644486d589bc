"""``ddsp-export``: a trained model as a TensorFlow SavedModel (and an MLflow Model), or as the
``.tflite`` the DDSP-VST plugin loads.

``--format saved_model`` (default) writes a SavedModel that plain TensorFlow reloads
(``tf.saved_model.load``, nothing of this project imported). Its ``serving_default`` signature
takes the model's frame-rate features, float32 [batch, n_frames] of any length, and an int64
``seed`` (of the filtered noise), and returns ``audio`` (with the reverb) and ``audio_dry``
(without), float32 [batch, n_frames * hop]; its ``controls`` signature returns the synthesizer
controls. The features are ``f0_hz`` (Hz) and ``loudness_db`` (dB), or ``f0_hz`` and
``power_db`` (:func:`trainer.model.autoencoder.frame_power_db`) for a model whose decoder takes
power (the ``vst`` preset). The same numbers as the in-process model
(:class:`trainer.serving.inference. TrainedModel` with the same seed), computed in float32, checked
before anything is written. The export is logged into the model's MLflow run as an MLflow Model
named ``model`` (a pyfunc around the SavedModel:
``mlflow.pyfunc.load_model('runs:/RUN_ID/model').predict({'f0_hz': ..., 'loudness_db': ...},
params={'seed': 0})``), optionally registered (``--register NAME``).

``--format vst`` writes the per-frame decoder that DDSP-VST runs (``docs/vst.md``): inputs
``call_f0_scaled:0`` [1], ``call_pw_scaled:0`` [1], ``call_state:0`` [512]; outputs
``StatefulPartitionedCall:0..3``: amplitude [1], harmonic distribution [60], noise magnitudes
[65], new GRU state [512], float32, TFLite builtin ops only, with ``metadata.json`` (the
training data's note ranges) appended as a zip. Only a model of the plugin's shape (the ``vst``
preset) can be exported so; the error names what differs.

Both are computed by the trained model's own Keras layers and processors, with their weights:
the decoder's inference paths (:meth:`trainer.model.autoencoder.RnnFcDecoder.call_with_state` for a
whole sequence, :meth:`~trainer.model.autoencoder.RnnFcDecoder.step` for the plugin's single frame,
loop-free so that TFLite's converter turns it into builtin ops), and the synthesizers' any-length
rendering (``get_signal_chunk`` of ``ddsp_core``'s ``Harmonic``, ``FilteredNoise`` and ``Reverb``,
one chunk the whole sequence). The exports are traced graphs: running them needs TensorFlow only,
neither Keras nor this project.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

FORMATS = ('saved_model', 'vst')
#: Name of the MLflow Model in the model's run (``runs:/RUN_ID/model``).
MLFLOW_MODEL_NAME = 'model'
#: Written next to the SavedModel: what it takes and returns, and where it came from.
EXPORT_INFO = 'ddsp_export.json'
SEED_NAME = 'seed'
#: The features the decoder's inputs are computed from (``model.decoder_inputs``).
FEATURE_OF_INPUT = {'ld_scaled': 'loudness_db', 'pw_scaled': 'power_db', 'f0_scaled': 'f0_hz'}

# ---- what the DDSP-VST plugin expects (docs/vst.md sections 1.1, 1.2, 4) ------------------------
VST_SAMPLE_RATE = 16000
VST_FRAME_RATE = 50
VST_FRAME_SIZE = 1024
VST_N_HARMONICS = 60
VST_N_NOISE = 65
VST_STATE = 512
VST_SIGNATURE = 'call'
#: Input tensor name -> element count, as the plugin looks them up.
VST_INPUTS = {'call_f0_scaled:0': 1, 'call_pw_scaled:0': 1, 'call_state:0': VST_STATE}
#: Output tensor name -> element count (amplitude, harmonics, noise, state).
VST_OUTPUTS = {'StatefulPartitionedCall:0': 1, 'StatefulPartitionedCall:1': VST_N_HARMONICS,
               'StatefulPartitionedCall:2': VST_N_NOISE, 'StatefulPartitionedCall:3': VST_STATE}
#: Ops that would mean weights were not frozen or a loop survived (the plugin's interpreter has
#: the builtin resolver only and no resource variables).
VST_FORBIDDEN_OPS = ('VAR_HANDLE', 'READ_VARIABLE', 'ASSIGN_VARIABLE', 'WHILE', 'CALL_ONCE',
                     'CUSTOM', 'DELEGATE')
#: Frames dropped at the end of every example before the metadata statistics (the reference's
#: ``compute_dataset_statistics``: ``trim_end = 20``).
STATS_TRIM_END = 20
METADATA_FILE = 'metadata.json'


class ExportError(ValueError):
    """The model cannot be exported as asked (bad usage: exit code 2); the message says why."""


class ExportCheckError(RuntimeError):
    """An export does not reproduce the trained model (a bug: exit code 1)."""


def _tf():
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


def _check_exportable(config) -> None:
    if config.model.use_encoder:
        raise ExportError('the model has an encoder (model.use_encoder), whose z is computed '
                          'from the audio; ddsp-export supports models without one')


def _tf_variables(*layers) -> list:
    """The TensorFlow variables under the Keras layers' weights (a ``tf.Module`` tracks and
    saves these, not the Keras wrappers; None layers are skipped)."""
    tf = _tf()
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

    tf = _tf()
    config = trained.config
    _check_exportable(config)
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
    module.weights = _tf_variables(net.decoder, reverb)  # saved with the module

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

    tf = _tf()
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


def _assert_close(got, want, what: str, atol: float, rtol: float = 1e-4) -> float:
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
    tf = _tf()
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
        errors[name] = _assert_close(controls[name], want[name], f'SavedModel {name}', 1e-5)
    for name in ('audio_dry', 'audio'):
        errors[name] = _assert_close(got[name], want[name], f'SavedModel {name}', 1e-4)
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
    tf = _tf()
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


# ================================================================================================
# MLflow Model
# ================================================================================================
#: The pyfunc's code, logged with the model ("models from code"), so that loading it needs
#: MLflow, NumPy and TensorFlow but nothing of this project.
PYFUNC_SOURCE = '''\
"""MLflow pyfunc around a ddsp-export SavedModel: frame-rate features -> audio."""

import mlflow
import numpy as np


class DDSPSynthesizer(mlflow.pyfunc.PythonModel):
    """predict({'f0_hz': [batch, n_frames], 'loudness_db' (or 'power_db'): [batch, n_frames]},
    params={'seed': 0}) -> {'audio': [batch, n_frames * hop], 'audio_dry': same} (float32; audio
    with the reverb, audio_dry without). A 1-D feature is one example; a DataFrame has one row
    per example with a list per feature."""

    # The inputs are checked against the logged signature (named float32 tensors), not against
    # type hints (MLflow's type hints cannot say "a dict of named arrays").
    _skip_type_hint_validation = True

    def load_context(self, context):
        import tensorflow as tf

        self._tf = tf
        self._model = tf.saved_model.load(context.artifacts['saved_model'])
        self._serve = self._model.signatures['serving_default']
        self._names = sorted(k for k in self._serve.structured_input_signature[1] if k != 'seed')

    def predict(self, context, model_input, params=None):
        tf = self._tf
        if hasattr(model_input, 'columns'):
            model_input = {k: np.stack([np.asarray(v, np.float32) for v in model_input[k]])
                           for k in model_input.columns}
        missing = [k for k in self._names if k not in model_input]
        if missing:
            raise ValueError(f'missing feature(s) {missing}; the model takes {self._names}')
        feeds = {}
        for name in self._names:
            x = np.asarray(model_input[name], np.float32)
            feeds[name] = tf.constant(x[np.newaxis] if x.ndim == 1 else x)
        seed = int((params or {}).get('seed', 0))
        out = self._serve(**feeds, seed=tf.constant(seed, tf.int64))
        return {k: v.numpy() for k, v in out.items()}


mlflow.models.set_model(DDSPSynthesizer())
'''


def _restore_run_status(client, run_id: str, status: str, end_time) -> None:
    if status == 'RUNNING':
        client.update_run(run_id, status='RUNNING')
    else:
        client.set_terminated(run_id, status=status, end_time=end_time)


def log_mlflow_model(saved_model: str | os.PathLike, info: dict, run_id: str,
                     tracking_uri: Optional[str], register: Optional[str] = None):
    """Log the SavedModel as an MLflow Model named ``model`` in the run (its status and end
    time are kept), optionally registered as ``register``. Returns MLflow's ``ModelInfo``."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    from trainer.tracking.tracker import make_client, resolve_tracking_uri

    tf = _tf()
    uri = resolve_tracking_uri(tracking_uri)
    client = make_client(uri)
    run = client.get_run(run_id)
    f32 = np.dtype('float32')
    signature = ModelSignature(
        inputs=Schema([TensorSpec(f32, (-1, -1), name) for name in info['features']]),
        outputs=Schema([TensorSpec(f32, (-1, -1), 'audio'), TensorSpec(f32, (-1, -1),
                                                                       'audio_dry')]),
        params=ParamSchema([ParamSpec(SEED_NAME, 'long', 0)]))
    n_frames = max(2, int(info['frame_rate']) // 10)
    example = {name: np.full((1, n_frames), 220.0 if name == 'f0_hz' else -30.0, np.float32)
               for name in info['features']}
    requirements = [f'tensorflow=={tf.__version__}', f'numpy=={np.__version__}',
                    f'mlflow=={mlflow.__version__}']
    # mlflow.pyfunc.log_model logs to the process-wide tracking URI: set it for this call and
    # put back exactly what was there (set_tracking_uri also exports MLFLOW_TRACKING_URI).
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous_global = tracking_utils._tracking_uri
    previous_env = os.environ.get('MLFLOW_TRACKING_URI')
    mlflow.set_tracking_uri(uri)
    try:
        with tempfile.TemporaryDirectory(prefix='ddsp-pyfunc-') as tmp:
            code = Path(tmp) / 'ddsp_synthesizer.py'
            code.write_text(PYFUNC_SOURCE)
            try:
                with mlflow.start_run(run_id=run_id):
                    model_info = mlflow.pyfunc.log_model(
                        name=MLFLOW_MODEL_NAME, python_model=str(code),
                        artifacts={'saved_model': str(saved_model)}, signature=signature,
                        input_example=(example, {SEED_NAME: 0}), pip_requirements=requirements,
                        registered_model_name=register, step=int(info['step']),
                        tags={'ddsp.format': 'saved_model', 'ddsp.step': str(info['step']),
                              'ddsp.features': ','.join(info['features'])})
            finally:
                _restore_run_status(client, run_id, run.info.status, run.info.end_time)
    finally:
        mlflow.set_tracking_uri(previous_global)
        if previous_env is None:
            os.environ.pop('MLFLOW_TRACKING_URI', None)
        else:
            os.environ['MLFLOW_TRACKING_URI'] = previous_env
    return model_info


# ================================================================================================
# DDSP-VST
# ================================================================================================
def vst_differences(config) -> list[str]:
    """What keeps a model from running in the DDSP-VST plugin (empty: nothing)."""
    d, m = config.data, config.model
    out = []

    def need(key, value, wanted, why=''):
        out.append(f'{key} = {value!r} (the plugin needs {wanted}{why})')

    if d.sample_rate != VST_SAMPLE_RATE:
        need('data.sample_rate', d.sample_rate, VST_SAMPLE_RATE)
    if d.frame_rate != VST_FRAME_RATE:
        need('data.frame_rate', d.frame_rate, VST_FRAME_RATE, ': a 320-sample hop')
    if set(m.decoder_inputs) != {'pw_scaled', 'f0_scaled'}:
        need('model.decoder_inputs', list(m.decoder_inputs), "['pw_scaled', 'f0_scaled']")
    if 'pw_scaled' in m.decoder_inputs and m.power_frame_size != VST_FRAME_SIZE:
        need('model.power_frame_size', m.power_frame_size, VST_FRAME_SIZE,
             ': its power meter reads 1024-sample frames')
    if m.use_encoder:
        need('model.use_encoder', True, False)
    if m.rnn_type not in ('gru', 'keras_gru'):
        need('model.rnn_type', m.rnn_type, "a GRU ('gru' or 'keras_gru')")
    if m.rnn_channels != VST_STATE:
        need('model.rnn_channels', m.rnn_channels, VST_STATE, ': its state size')
    if m.n_harmonics != VST_N_HARMONICS:
        need('model.n_harmonics', m.n_harmonics, VST_N_HARMONICS)
    if m.n_noise_bands != VST_N_NOISE:
        need('model.n_noise_bands', m.n_noise_bands, VST_N_NOISE)
    return out


def vst_warnings(config) -> list[str]:
    """Settings the plugin runs but synthesises differently from training."""
    m = config.model
    out = []
    ir_size = 2 * (VST_N_NOISE - 1)
    if 0 < m.noise_window_size < ir_size:
        out.append(f'model.noise_window_size = {m.noise_window_size}: the plugin filters the '
                   f'noise with the whole {ir_size}-tap window (0 in the vst preset)')
    if m.amp_resample_method != 'linear':
        out.append(f'model.amp_resample_method = {m.amp_resample_method!r}: the plugin '
                   "interpolates amplitudes linearly ('linear' in the vst preset)")
    return out


def build_vst_module(trained):
    """A ``tf.Module`` whose ``call(f0_scaled [1], pw_scaled [1], state [512])`` runs one frame
    of the trained decoder (:meth:`trainer.model.autoencoder.RnnFcDecoder.step`) and its
    synthesizers' ``get_controls``, returning (amplitude [1], harmonic distribution [60], noise
    magnitudes [65], state [512]) (see docs/vst.md section 5.2)."""
    from ddsp_core import core, spectral_ops
    from trainer.serving.streaming import synth_processors

    tf = _tf()
    net = trained.model
    harmonic, noise, _ = synth_processors(net)
    module = tf.Module(name='ddsp_vst')
    module.weights = _tf_variables(net.decoder)  # saved with the module, frozen by TFLite

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32),
                                  tf.TensorSpec([1], tf.float32),
                                  tf.TensorSpec([VST_STATE], tf.float32)])
    def call(f0_scaled, pw_scaled, state):
        inputs = {'f0_scaled': tf.reshape(f0_scaled, [1, 1]),
                  'pw_scaled': tf.reshape(pw_scaled, [1, 1])}
        raw, new_state = net.decoder.step({k: inputs[k] for k in net.decoder.input_keys},
                                          [tf.reshape(state, [1, VST_STATE])])
        # One frame, as the processors take frames: [1, 1, n] (reshapes: RESHAPE in TFLite).
        raw = {k: tf.reshape(v, [1, 1, -1]) for k, v in raw.items()}
        f0_hz = tf.reshape(core.midi_to_hz(inputs['f0_scaled'] * spectral_ops.F0_RANGE),
                           [1, 1, 1])
        controls = harmonic.get_controls(raw['amps'], raw['harmonic_distribution'], f0_hz)
        magnitudes = noise.get_controls(raw['noise_magnitudes'])['magnitudes']
        return (tf.reshape(controls['amplitudes'], [1]),
                tf.reshape(controls['harmonic_distribution'], [VST_N_HARMONICS]),
                tf.reshape(magnitudes, [VST_N_NOISE]),
                tf.reshape(new_state[0], [VST_STATE]))

    module.call = call
    return module


def convert_vst(trained, workdir: str | os.PathLike) -> bytes:
    """The plugin's model as a TFLite flatbuffer (builtin ops only), via a SavedModel with the
    signature ``call`` (what gives the tensors the names the plugin looks up)."""
    tf = _tf()
    module = build_vst_module(trained)
    saved = Path(workdir) / 'vst_saved_model'
    tf.saved_model.save(module, str(saved),
                        signatures={VST_SIGNATURE: module.call.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved),
                                                         signature_keys=[VST_SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    from ddsp_core import runtime

    # The converter's native log lines (MLIR passes, "NodeDef mentions attribute Truncate")
    # are shown only with --verbose, or if it fails.
    with runtime.captured_native_stderr(not runtime.verbose_requested()):
        return converter.convert()


def load_interpreter(model: bytes):
    """A ``tf.lite.Interpreter`` over the flatbuffer with the builtin op resolver and no default
    delegate (the ops listed are the file's, not XNNPACK's ``DELEGATE``), tensors allocated."""
    import warnings

    tf = _tf()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "tf.lite.Interpreter is deprecated" (LiteRT)
        interpreter = tf.lite.Interpreter(
            model_content=model, experimental_op_resolver_type=(
                tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interpreter.allocate_tensors()
    return interpreter


def tflite_ops(interpreter) -> list[str]:
    """The op names of a loaded ``tf.lite.Interpreter``'s graph."""
    return sorted({op['op_name'] for op in interpreter._get_ops_details()})  # noqa: SLF001


def tflite_versions(model: bytes) -> tuple[Optional[str], int]:
    """(the ``min_runtime_version`` the converter wrote into the flatbuffer's metadata, the
    highest op version in its operator codes)."""
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAs(bytearray(model), 0)
    runtime_version = None
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() == b'min_runtime_version':
            data = root.Buffers(entry.Buffer()).DataAsNumpy()
            runtime_version = bytes(data).split(b'\0')[0].decode()
    op_version = max((root.OperatorCodes(i).Version()
                      for i in range(root.OperatorCodesLength())), default=0)
    return runtime_version, int(op_version)


def vst_interface(interpreter) -> dict:
    """{'inputs': {name: (shape, dtype name)}, 'outputs': {...}} of a loaded interpreter."""
    def describe(details):
        return {d['name']: (tuple(int(n) for n in d['shape']), np.dtype(d['dtype']).name)
                for d in details}

    return {'inputs': describe(interpreter.get_input_details()),
            'outputs': describe(interpreter.get_output_details())}


def check_vst_interface(interpreter) -> None:
    """The plugin's checks (docs/vst.md section 4), plus rank-1 float32 tensors and no op it
    cannot run. Raises ExportCheckError."""
    found = vst_interface(interpreter)
    for side, wanted in (('inputs', VST_INPUTS), ('outputs', VST_OUTPUTS)):
        want = {name: ((n,), 'float32') for name, n in wanted.items()}
        if found[side] != want:
            raise ExportCheckError(f'the .tflite {side} are {found[side]}, the plugin needs '
                                   f'{want}')
    bad = [op for op in tflite_ops(interpreter)
           if op in VST_FORBIDDEN_OPS or op.startswith('Flex')]
    if bad:
        raise ExportCheckError(f'the .tflite holds ops the plugin cannot run: {bad}')


def run_vst_frames(interpreter, f0_scaled, pw_scaled, state=None):
    """Feed frames one at a time as the plugin does (tensors found by name, the state output
    copied into the next call's state input). Returns {'amplitudes' [n, 1],
    'harmonic_distribution' [n, 60], 'noise_magnitudes' [n, 65], 'state' [n, 512]}."""
    inputs = {d['name']: d['index'] for d in interpreter.get_input_details()}
    outputs = {d['name']: d['index'] for d in interpreter.get_output_details()}
    names = dict(zip(('amplitudes', 'harmonic_distribution', 'noise_magnitudes', 'state'),
                     VST_OUTPUTS, strict=True))
    state = np.zeros(VST_STATE, np.float32) if state is None else np.asarray(state, np.float32)
    rows = {name: [] for name in names}
    for f0, pw in zip(np.asarray(f0_scaled, np.float32), np.asarray(pw_scaled, np.float32),
                      strict=True):
        interpreter.set_tensor(inputs['call_f0_scaled:0'], np.array([f0], np.float32))
        interpreter.set_tensor(inputs['call_pw_scaled:0'], np.array([pw], np.float32))
        interpreter.set_tensor(inputs['call_state:0'], state)
        interpreter.invoke()
        for name, tensor in names.items():
            rows[name].append(np.array(interpreter.get_tensor(outputs[tensor])))
        state = rows['state'][-1]
    return {name: np.stack(values) for name, values in rows.items()}


def keras_vst_reference(trained, f0_scaled, pw_scaled) -> dict[str, np.ndarray]:
    """The trained Keras decoder on the whole sequence: its scaled controls and the GRU's
    hidden state after every frame ([n, ...] each), computed on the CPU."""
    from ddsp_core import core, spectral_ops

    tf = _tf()
    net = trained.model
    decoder = net.decoder
    f0 = tf.constant(np.asarray(f0_scaled, np.float32)[np.newaxis, :, np.newaxis])
    pw = tf.constant(np.asarray(pw_scaled, np.float32)[np.newaxis, :, np.newaxis])
    processors = {p.name: p for p in net.processor_group.processors}
    with tf.device('/CPU:0'):
        inputs = {'f0_scaled': f0, 'pw_scaled': pw}
        raw = decoder(inputs)
        f0_hz = core.midi_to_hz(f0 * spectral_ops.F0_RANGE)
        harmonic = processors['harmonic'].get_controls(raw['amps'], raw['harmonic_distribution'],
                                                       f0_hz)
        noise = processors['filtered_noise'].get_controls(raw['noise_magnitudes'])
        stacks = [stack(inputs[k]) for k, stack in zip(decoder.input_keys,
                                                       decoder.input_stacks, strict=True)]
        states = decoder.rnn(tf.concat(stacks, axis=-1))
    return {'amplitudes': np.asarray(harmonic['amplitudes'])[0],
            'harmonic_distribution': np.asarray(harmonic['harmonic_distribution'])[0],
            'noise_magnitudes': np.asarray(noise['magnitudes'])[0],
            'state': np.asarray(states)[0]}


def vst_probe(n_frames: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(f0_scaled, pw_scaled) [n_frames]: a glide over four octaves from 55 Hz (the highest
    harmonics cross 8 kHz) while the power rises from -70 dB to -10 dB and falls again."""
    from ddsp_core.dsp.units import hz_to_midi

    t = np.linspace(0.0, 1.0, n_frames)
    f0_hz = 55.0 * 2.0 ** (4.0 * t)
    pw_db = -70.0 + 60.0 * np.sin(np.pi * t)
    return ((np.asarray(hz_to_midi(f0_hz)) / 127.0).astype(np.float32),
            (pw_db / 80.0 + 1.0).astype(np.float32))


def check_vst_model(path: str | os.PathLike, trained) -> dict:
    """Load the written ``.tflite`` as the plugin would and compare it, frame by frame, with the
    Keras decoder. Returns {'ops', 'size_bytes', 'min_runtime_version', 'max_op_version',
    'max_abs_error'}."""
    data = Path(path).read_bytes()
    interpreter = load_interpreter(data)
    check_vst_interface(interpreter)
    f0, pw = vst_probe()
    got = run_vst_frames(interpreter, f0, pw)
    want = keras_vst_reference(trained, f0, pw)
    errors = {k: _assert_close(got[k], want[k], f'.tflite {k}', 1e-5) for k in want}
    runtime_version, op_version = tflite_versions(data)
    return {'ops': tflite_ops(interpreter), 'size_bytes': len(data),
            'min_runtime_version': runtime_version, 'max_op_version': op_version,
            'max_abs_error': errors}


# ---- metadata.json ---------------------------------------------------------------------------
def smooth(x: np.ndarray, size: int) -> np.ndarray:
    """Box filter of ``size`` frames along the last axis, zero padded as TensorFlow's
    ``conv1d(padding='SAME')`` (the reference's ``postprocessing.smooth``): output i averages
    x[i - (size - 1) // 2 ... i + size // 2]."""
    x = np.asarray(x, np.float64)
    kernel = np.ones(size) / size
    full = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode='full'), -1, x)
    start = size // 2
    return full[..., start:start + x.shape[-1]]


def detect_notes(loudness_db: np.ndarray, f0_confidence: np.ndarray, smoothing: int = 40,
                 confidence_threshold: float = 0.7, exponent: float = 2.0,
                 min_db: float = -80.0) -> np.ndarray:
    """The reference's note-on mask (``postprocessing.detect_notes``): smoothed confidence^2
    times (loudness + 80) at least (mean loudness over all the frames given + 80) * 0.7^2.

    Args:
        loudness_db, f0_confidence: [n_examples, n_frames].

    Returns:
        bool [n_examples, n_frames].
    """
    loudness_db = np.asarray(loudness_db, np.float64)
    level = smooth(np.asarray(f0_confidence, np.float64) ** exponent, smoothing) * (
        loudness_db - min_db)
    threshold = (np.mean(loudness_db) - min_db) * confidence_threshold ** exponent
    return level >= threshold


def note_statistics(f0_hz, f0_confidence, loudness_db, power_db,
                    trim_end: int = STATS_TRIM_END) -> dict[str, float]:
    """The statistics of the plugin's metadata (the reference's ``compute_dataset_statistics``):
    the last ``trim_end`` frames of each example dropped; note-on frames by
    :func:`detect_notes` (an example without any uses all its frames); per example the lowest
    and highest pitch (MIDI; 0 Hz is note 0) and power (dB) over its note-on frames, averaged
    over the examples.

    Args:
        f0_hz, f0_confidence, loudness_db, power_db: [n_examples, n_frames], frame-aligned.
    """
    from ddsp_core.dsp.units import hz_to_midi

    arrays = [np.asarray(a, np.float64) for a in (f0_hz, f0_confidence, loudness_db, power_db)]
    if trim_end:
        arrays = [a[:, :-trim_end] for a in arrays]
    f0, confidence, loudness, power = arrays
    if f0.size == 0:
        raise ExportError(f'the examples are too short for the statistics (at most {trim_end} '
                          'frames each)')
    pitch = np.asarray(hz_to_midi(f0), np.float64)
    on = detect_notes(loudness, confidence)
    on |= ~np.any(on, axis=1, keepdims=True)
    out = {}
    for name, x in (('pitch', pitch), ('power', power)):
        out[f'mean_min_{name}_note'] = float(np.mean(np.where(on, x, np.inf).min(axis=1)))
        out[f'mean_max_{name}_note'] = float(np.mean(np.where(on, x, -np.inf).max(axis=1)))
    return out


#: Where a dataset manifest would hold these statistics (``ddsp-prepare`` does not write them
#: yet; see docs/vst.md): ``splits.train.note_statistics``.
MANIFEST_NOTE_STATISTICS = ('splits', 'train', 'note_statistics')
NOTE_STATISTICS = ('mean_min_pitch_note', 'mean_max_pitch_note', 'mean_min_power_note',
                   'mean_max_power_note')


def manifest_note_statistics(manifest: Optional[dict]) -> Optional[dict]:
    node = manifest or {}
    for key in MANIFEST_NOTE_STATISTICS:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and all(isinstance(node.get(k), (int, float))
                                      for k in NOTE_STATISTICS):
        return {k: float(node[k]) for k in NOTE_STATISTICS}
    return None


def dataset_note_statistics(source, frame_size: int = VST_FRAME_SIZE, batch_size: int = 32,
                            progress: bool = False) -> tuple[dict, int]:
    """:func:`note_statistics` over every record of a data source (the training split), the
    power computed from the audio as in training (:func:`trainer.model.autoencoder.frame_power_db`).
    Returns (statistics, number of examples)."""
    from trainer.evaluation.evaluate import batches, iter_records
    from trainer.model.autoencoder import frame_power_db

    layout = source.layout
    columns = {k: [] for k in ('f0_hz', 'f0_confidence', 'loudness_db', 'power_db')}
    bar = None
    if progress:
        from tqdm import tqdm

        total = source.manifest.split_examples(source.split or 'train') if source.manifest \
            else None
        bar = tqdm(total=total, desc='ddsp-export: training data statistics', unit='ex',
                   file=sys.stderr)
    for _, batch in batches(iter_records(source.files, layout), batch_size):
        power = frame_power_db(batch['audio'], layout.sample_rate, layout.frame_rate,
                               frame_size, n_frames=layout.n_frames)
        columns['power_db'].append(np.asarray(power))
        for key in ('f0_hz', 'f0_confidence', 'loudness_db'):
            columns[key].append(batch[key])
        if bar is not None:
            bar.update(len(batch['audio']))
    if bar is not None:
        bar.close()
    if not columns['f0_hz']:
        raise ExportError(f'{source.where}: no training example to compute the metadata from')
    stacked = {k: np.concatenate(v) for k, v in columns.items()}
    return note_statistics(**stacked), len(stacked['f0_hz'])


def package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version('ddsp-platform')
    except metadata.PackageNotFoundError:
        return '0'


def vst_metadata(statistics: dict, config, export_time: Optional[str] = None) -> dict:
    """``metadata.json`` as the reference writes it (docs/vst.md section 2.2)."""
    from ddsp_core.dsp.units import midi_to_hz

    return {
        'mean_min_pitch_note': statistics['mean_min_pitch_note'],
        'mean_max_pitch_note': statistics['mean_max_pitch_note'],
        'mean_min_pitch_note_hz': float(midi_to_hz(statistics['mean_min_pitch_note'])),
        'mean_max_pitch_note_hz': float(midi_to_hz(statistics['mean_max_pitch_note'])),
        'mean_min_power_note': statistics['mean_min_power_note'],
        'mean_max_power_note': statistics['mean_max_power_note'],
        'version': package_version(),
        'export_time': export_time or datetime.datetime.now().isoformat(),
        'num_harmonics': int(config.model.n_harmonics),
        'num_noise_amps': int(config.model.n_noise_bands),
        'frame_rate': int(config.data.frame_rate),
        'frame_size': int(config.model.power_frame_size),
        'sample_rate': int(config.data.sample_rate),
    }


def append_metadata(path: str | os.PathLike, metadata: dict) -> None:
    """Append ``metadata.json`` to the file as the single entry of a zip (stored), which is
    what the plugin's ``juce::ZipFile`` reads."""
    with zipfile.ZipFile(path, 'a', compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(METADATA_FILE, json.dumps(metadata, indent=2))


def read_metadata(path: str | os.PathLike) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(METADATA_FILE))


def export_vst(trained, out: str | os.PathLike, statistics: dict) -> dict:
    """Write the plugin's ``.tflite`` (metadata appended) to ``out`` and check it. Returns
    {'path', 'metadata', 'check'}."""
    differences = vst_differences(trained.config)
    if differences:
        raise ExportError('--format vst: the model is not what the DDSP-VST plugin runs: '
                          + '; '.join(differences) + ' (train it with --preset vst)')
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix='ddsp-vst-') as tmp:
        flatbuffer = convert_vst(trained, tmp)
    tmp_path = out.with_name(out.name + '.tmp')
    metadata = vst_metadata(statistics, trained.config)
    try:  # a failed write (a full disk) or check leaves no partial file
        tmp_path.write_bytes(flatbuffer)
        append_metadata(tmp_path, metadata)
        check = check_vst_model(tmp_path, trained)
        if read_metadata(tmp_path) != metadata:
            raise ExportCheckError(f'{METADATA_FILE} does not read back from {tmp_path}')
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    os.replace(tmp_path, out)
    return {'path': str(out), 'metadata': metadata, 'check': check}


# ================================================================================================
# CLI
# ================================================================================================
def build_arg_parser() -> argparse.ArgumentParser:
    from ddsp_core import runtime

    p = argparse.ArgumentParser(
        prog='ddsp-export', allow_abbrev=False, formatter_class=runtime.HelpFormatter,
        description='Export a trained model: a TensorFlow SavedModel (features of any length '
                    '-> audio, with and without the reverb) logged to the model\'s MLflow run as '
                    'an MLflow Model, or the .tflite the DDSP-VST plugin loads (with its '
                    'metadata.json).',
        epilog='Exit codes: 0 done, 1 failed, 2 bad usage (no checkpoint, a model that is not '
               'vst-shaped for --format vst, an existing --out, ...). See docs/training.md, '
               '"Export", and docs/vst.md.')
    p.add_argument('--model', required=True,
                   help='a ddsp-train --model_dir, or runs:/RUN_ID (its checkpoints/ artifacts)')
    p.add_argument('--format', default='saved_model', choices=FORMATS, help='what to write')
    p.add_argument('--out', required=True,
                   help='saved_model: the SavedModel directory to create; vst: the .tflite '
                        'file, or a directory to write <model name>.tflite into')
    p.add_argument('--data', default=None,
                   help="vst: the model's training data, for metadata.json's statistics "
                        "(default: the dataset path the model's MLflow run records)")
    p.add_argument('--log_to_mlflow', action=argparse.BooleanOptionalAction, default=None,
                   help="log the export to the model's MLflow run (saved_model: as the MLflow "
                        "Model 'model'; vst: the .tflite under vst/) (default: on when the "
                        'model has a run)')
    p.add_argument('--register', default=None, metavar='NAME',
                   help='also register the MLflow Model under this name (saved_model)')
    p.add_argument('--tracking_uri', default=None,
                   help="MLflow tracking URI (default: the model's run's, from mlflow_run.json)")
    p.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    p.add_argument('--verbose', action='store_true', help="TensorFlow's and MLflow's own logs")
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f'ddsp-export: {"error" if code == 2 else "failed"}: {message}', file=sys.stderr)
    return code


def _vst_out_path(out: str, trained) -> Path:
    path = Path(out)
    if path.suffix == '.tflite':
        return path
    name = trained.model_dir.name if trained.model_dir.name not in ('', 'checkpoints') else \
        f'ddsp-{trained.run_info.get("run_id", "model")[:8]}'
    return path / f'{name}.tflite'


def _training_statistics(args, trained, run_id, tracking_uri) -> tuple[dict, str]:
    """(note statistics, where they came from) for the metadata."""
    from trainer.training.data import DataError, open_source

    found = manifest_note_statistics(trained.manifest)
    if found is not None and args.data is None:
        return found, "the model's dataset manifest"
    data, from_run = args.data, False
    if data is None and run_id:
        try:
            from trainer.tracking.tracker import make_client, resolve_tracking_uri

            run = make_client(resolve_tracking_uri(tracking_uri)).get_run(run_id)
            data = run.data.tags.get('ddsp.dataset_path')
            from_run = bool(data)
        except Exception as e:  # noqa: BLE001 - MLflow raises several kinds
            logger.warning('could not read the dataset path from the MLflow run: %s', e)
    if not data:
        raise ExportError('--format vst needs the training data for metadata.json (the '
                          "manifest has no note statistics and the model's run names no "
                          'dataset): pass --data DIR, the dataset the model was trained on')
    try:
        source = open_source(str(data), split='train')
    except DataError as e:
        if not from_run:
            raise
        raise DataError(f"the model's training data, {data} (its MLflow run's "
                        f'ddsp.dataset_path), cannot be read ({e}); pass --data DIR') from None
    layout = source.layout
    if (layout.sample_rate, layout.frame_rate) != (trained.config.data.sample_rate,
                                                   trained.config.data.frame_rate):
        raise ExportError(f'--data {data}: {layout.describe()}; the model was trained at '
                          f'{trained.config.data.sample_rate} Hz, '
                          f'{trained.config.data.frame_rate} frames/s')
    trained_on = (trained.manifest or {}).get('fingerprint')
    if trained_on and source.fingerprint != trained_on:
        print(f'ddsp-export: warning: --data {data} has fingerprint {source.fingerprint}, the '
              f'model was trained on {trained_on}; metadata.json describes --data',
              file=sys.stderr)
    statistics, n = dataset_note_statistics(source, trained.config.model.power_frame_size,
                                            progress=sys.stderr.isatty())
    return statistics, f'{n} training examples of {source.where}'


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``ddsp-export``."""
    from ddsp_core import runtime

    args = runtime.open_cli(build_arg_parser(), argv)
    if isinstance(args, int):
        return args
    if not args.verbose:
        os.environ.setdefault('MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR', 'false')
    runtime.import_tensorflow()
    from trainer.model.config import ConfigError
    from trainer.serving.inference import RUNS_PREFIX, ModelDirError, TrainedModel
    from trainer.tracking.tracker import print_run_link, quiet_mlflow_logging
    from trainer.training.data import DataError

    quiet_mlflow_logging(args.verbose)
    if args.register and args.format != 'saved_model':
        return _fail('--register registers the MLflow Model of --format saved_model')
    if args.register and args.log_to_mlflow is False:
        return _fail('--register needs --log_to_mlflow')
    try:
        trained = TrainedModel.load(args.model, tracking_uri=args.tracking_uri)
    except (ModelDirError, ConfigError) as e:
        return _fail(str(e))
    run_id = trained.run_info.get('run_id')
    if str(args.model).startswith(RUNS_PREFIX):
        run_id = str(args.model)[len(RUNS_PREFIX):].strip('/').split('/')[0]
    tracking_uri = args.tracking_uri or trained.run_info.get('tracking_uri')
    log_to_mlflow = bool(run_id) if args.log_to_mlflow is None else args.log_to_mlflow
    if log_to_mlflow and not run_id:
        return _fail(f'--log_to_mlflow: {args.model} has no MLflow run (no mlflow_run.json)')
    out = _vst_out_path(args.out, trained) if args.format == 'vst' else Path(args.out)
    if out.exists() and (out.is_file() or any(out.iterdir())):
        if not args.overwrite:
            return _fail(f'--out {out} exists; choose another path or pass --overwrite')
    try:
        if args.format == 'vst':
            differences = vst_differences(trained.config)
            if differences:
                raise ExportError('--format vst: the model is not what the DDSP-VST plugin '
                                  'runs: ' + '; '.join(differences)
                                  + ' (train it with --preset vst)')
            for warning in vst_warnings(trained.config):
                print(f'ddsp-export: warning: {warning}', file=sys.stderr)
            statistics, where = _training_statistics(args, trained, run_id, tracking_uri)
        else:
            _check_exportable(trained.config)
    except (ExportError, DataError, ConfigError) as e:
        return _fail(str(e))
    print(f'ddsp-export: {args.format} of {args.model} at step {trained.step}', file=sys.stderr,
          flush=True)
    try:
        if args.format == 'vst':
            out.parent.mkdir(parents=True, exist_ok=True)
            result = export_vst(trained, out, statistics)
            meta, check = result['metadata'], result['check']
            print(f'ddsp-export: wrote {out} ({check["size_bytes"]} bytes, builtin ops: '
                  f'{", ".join(check["ops"])}; op versions <= {check["max_op_version"]}, '
                  f'min runtime {check["min_runtime_version"]}); '
                  f'metadata from {where}: pitch {meta["mean_min_pitch_note_hz"]:.1f}-'
                  f'{meta["mean_max_pitch_note_hz"]:.1f} Hz, power '
                  f'{meta["mean_min_power_note"]:.1f} to {meta["mean_max_power_note"]:.1f} dB',
                  file=sys.stderr)
            if log_to_mlflow:
                from trainer.tracking.tracker import make_client, resolve_tracking_uri

                make_client(resolve_tracking_uri(tracking_uri)).log_artifact(
                    run_id, str(out), 'vst')
                print(f'ddsp-export: logged {out.name} to MLflow run {run_id} under vst/',
                      file=sys.stderr)
                print_run_link('ddsp-export', tracking_uri, run_id, f'vst/{out.name}')
            return 0
        info = export_saved_model(trained, out)  # replaces an existing --out when done
        worst = max(info['check_max_abs_error'].values())
        print(f'ddsp-export: wrote the SavedModel {out} (features '
              f'{", ".join(info["features"])} -> audio, audio_dry; matches the trained model to '
              f'{worst:.2g})', file=sys.stderr)
        if log_to_mlflow:
            model_info = log_mlflow_model(out, info, run_id, tracking_uri, args.register)
            registered = (f', registered as {args.register} version '
                          f'{model_info.registered_model_version}' if args.register else '')
            print(f'ddsp-export: logged the MLflow Model runs:/{run_id}/{MLFLOW_MODEL_NAME} '
                  f'({model_info.model_uri}){registered}', file=sys.stderr)
            print_run_link('ddsp-export', tracking_uri, run_id, MLFLOW_MODEL_NAME)
    except ExportError as e:
        return _fail(str(e))
    except Exception as e:  # noqa: BLE001 - report any failure with exit code 1
        logger.debug('export failed', exc_info=True)
        full = runtime.disk_full_message(e)
        if full:
            return _fail(f'{full}; free some space and run again', code=1)
        return _fail(f'{type(e).__name__}: {e}', code=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
