"""The DDSP-VST export (``ddsp-export --format vst``, ``docs/vst.md``): the per-frame decoder as a
TFLite model of builtin ops, its interface checks against what the plugin looks up, and the
training data's note statistics appended as ``metadata.json``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from trainer.serving.saved_model import (
    ExportCheckError,
    ExportError,
    assert_close,
    tensorflow,
    tf_variables,
)

logger = logging.getLogger(__name__)

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

    tf = tensorflow()
    net = trained.model
    harmonic, noise, _ = synth_processors(net)
    module = tf.Module(name='ddsp_vst')
    module.weights = tf_variables(net.decoder)  # saved with the module, frozen by TFLite

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
    tf = tensorflow()
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

    tf = tensorflow()
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

    tf = tensorflow()
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
    errors = {k: assert_close(got[k], want[k], f'.tflite {k}', 1e-5) for k in want}
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


def manifest_note_statistics(manifest) -> Optional[dict]:
    """The note statistics a :class:`ddsp_core.records.Manifest` holds, or None."""
    node = manifest.statistic(*MANIFEST_NOTE_STATISTICS) if manifest else None
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
