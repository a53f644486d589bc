"""ddsp-export: the SavedModel (plain TensorFlow, any length), the MLflow Model (pyfunc, registry)
and the DDSP-VST .tflite (tensors, builtin ops, frame-by-frame equality, metadata.json), on tiny
models trained here; the vst preset's power feature; the CLI's errors."""

from __future__ import annotations

import datetime
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ddsp_core import records
from tests.markers import gives
from trainer import testing
from trainer.model.config import load_preset, resolve_data
from trainer.serving import export, saved_model, vst
from trainer.serving.inference import TrainedModel
from trainer.training.train import train

ROOT = Path(__file__).resolve().parents[3]
#: The plugin's 16 kHz / 50 frames/s layout, 1 s records.
VST_LAYOUT = records.Layout(16000, 50, 1.0)
PLUGIN_INPUTS = {'call_f0_scaled:0': [1], 'call_pw_scaled:0': [1], 'call_state:0': [512]}
PLUGIN_OUTPUTS = {'StatefulPartitionedCall:0': [1], 'StatefulPartitionedCall:1': [60],
                  'StatefulPartitionedCall:2': [65], 'StatefulPartitionedCall:3': [512]}


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp('export')
    data = root / 'data'
    testing.write_dataset(data, VST_LAYOUT, n_examples=4, n_shards=1, seed=0,
                          f0_range=(150.0, 600.0))
    return root, data, f'sqlite:///{root / "mlflow.db"}'


@pytest.fixture(scope='module')
@gives('trains')
def ld_model(workspace):
    """The tiny preset (loudness + f0, GRU 32) trained 2 steps, tracked in the sqlite store."""
    root, data, uri = workspace
    config = load_preset('tiny').with_overrides(['train.summary_every=0', 'train.batch_size=2',
                                                 'train.checkpoint_every=0'])
    result = train(config, str(data), root / 'tiny', 2, tracking_uri=uri, experiment='export',
                   progress=False)
    return root / 'tiny', result['run_id']


@pytest.fixture(scope='module')
@gives('trains')
def exp_room_model(workspace):
    """The tiny preset with the two-number room (model.reverb_type=exp_decay), 2 steps."""
    root, data, uri = workspace
    config = load_preset('tiny').with_overrides(['train.summary_every=0', 'train.batch_size=2',
                                                 'train.checkpoint_every=0',
                                                 'model.reverb_type=exp_decay'])
    result = train(config, str(data), root / 'exp_room', 2, tracking_uri=uri,
                   experiment='export', progress=False)
    return root / 'exp_room', result['run_id']


@pytest.fixture(scope='module')
@gives('trains')
def vst_model(workspace):
    """The vst preset (power + f0, GRU 512, 60 harmonics, 65 bands) with small MLPs, trained 2
    steps, tracked (its run records the dataset path the metadata is computed from)."""
    root, data, uri = workspace
    config = load_preset('vst').with_overrides([
        'train.batch_size=2', 'model.mlp_units=16', 'model.reverb_length=800',
        'model.fft_sizes=[256, 64]', 'train.summary_every=0', 'train.checkpoint_every=0'])
    result = train(config, str(data), root / 'vst', 2, tracking_uri=uri, experiment='export',
                   progress=False)
    return root / 'vst', result['run_id']


def _features(names, n_frames, batch=2):
    t = np.linspace(0.0, 1.0, n_frames, dtype=np.float32)
    f0 = np.stack([180.0 * (1 + b) * 2.0 ** t for b in range(batch)]).astype(np.float32)
    level = np.stack([-60.0 + 45.0 * np.sin(np.pi * t) - 5 * b for b in range(batch)])
    return {n: (f0 if n == 'f0_hz' else level.astype(np.float32)) for n in names}


def _in_process(model_dir, features, seed):
    """TrainedModel's wet and dry audio for the features (built for their length)."""
    n_frames = features['f0_hz'].shape[1]
    model = TrainedModel.load(model_dir, example_secs=n_frames / model_dir_frame_rate(model_dir))
    out = model(features, seed=seed)
    dry = model.model.processor_group(out, return_outputs_dict=True)['controls']['add']['signal']
    return np.asarray(out['audio_synth']), np.asarray(dry)


def model_dir_frame_rate(model_dir):
    return json.loads((Path(model_dir) / 'config.json').read_text())['data']['frame_rate']


# ---- SavedModel ------------------------------------------------------------------------------
PLAIN_TF_LOADER = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    serve = model.signatures['serving_default']
    inputs = np.load(sys.argv[2])
    out = {}
    for n in (37, 80):
        feeds = {k: tf.constant(inputs[k][:, :n]) for k in inputs.files}
        for seed in (0, 5):
            got = serve(**feeds, seed=tf.constant(seed, tf.int64))
            out[f'audio_{n}_{seed}'] = got['audio'].numpy()
            out[f'dry_{n}_{seed}'] = got['audio_dry'].numpy()
    names = sorted(serve.structured_input_signature[1])
    project = sorted(m for m in sys.modules if m.split('.')[0] in ('trainer', 'ddsp_core',
                                                                    'pipelines'))
    np.savez(sys.argv[3], names=np.array(names), project=np.array(project, dtype=str), **out)
''')


@pytest.mark.converts
@pytest.mark.trains  # through the fixture it asks for by name
@pytest.mark.parametrize('room', ['ir', 'exp_decay'])
def test_saved_model_runs_any_length_in_plain_tensorflow_like_the_trained_model(room, request,
                                                                                 tmp_path):
    model_dir, _ = request.getfixturevalue('ld_model' if room == 'ir' else 'exp_room_model')
    trained = TrainedModel.load(model_dir)
    info = saved_model.export_saved_model(trained, tmp_path / 'sm', check=False)  # checked here
    assert info['features'] == ['f0_hz', 'loudness_db'] and info['hop'] == 320
    features = _features(info['features'], 80)
    np.savez(tmp_path / 'in.npz', **features)
    (tmp_path / 'load.py').write_text(PLAIN_TF_LOADER)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    done = subprocess.run([sys.executable, '-I', str(tmp_path / 'load.py'), str(tmp_path / 'sm'),
                           str(tmp_path / 'in.npz'), str(tmp_path / 'out.npz')],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / 'out.npz')
    assert list(got['names']) == ['f0_hz', 'loudness_db', 'seed']
    assert list(got['project']) == []  # nothing of this project was imported to run it
    for n in (37, 80):
        part = {k: v[:, :n] for k, v in features.items()}
        for seed in (0, 5):
            wet, dry = _in_process(model_dir, part, seed)
            assert got[f'audio_{n}_{seed}'].shape == (2, n * 320)
            np.testing.assert_allclose(got[f'audio_{n}_{seed}'], wet, atol=2e-5, rtol=1e-4)
            np.testing.assert_allclose(got[f'dry_{n}_{seed}'], dry, atol=2e-5, rtol=1e-4)
        # the reverb is in 'audio' only; the seed changes the noise
        assert np.abs(got[f'audio_{n}_0'] - got[f'dry_{n}_0']).max() > 1e-4
        assert np.abs(got[f'audio_{n}_0'] - got[f'audio_{n}_5']).max() > 1e-5


# ---- MLflow Model ----------------------------------------------------------------------------
PLAIN_MLFLOW_LOADER = textwrap.dedent('''
    import sys
    import mlflow
    import numpy as np
    model = mlflow.pyfunc.load_model(sys.argv[1])
    inputs = np.load(sys.argv[2])
    out = model.predict({k: inputs[k] for k in inputs.files}, params={'seed': 7})
    project = sorted(m for m in sys.modules if m.split('.')[0] in ('trainer', 'ddsp_core',
                                                                    'pipelines'))
    np.savez(sys.argv[3], project=np.array(project, dtype=str), audio=out['audio'])
''')


@pytest.fixture
def mlflow_uri(workspace):
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = tracking_utils._tracking_uri
    previous_env = os.environ.get('MLFLOW_TRACKING_URI')
    mlflow.set_tracking_uri(workspace[2])
    yield workspace[2]
    mlflow.set_tracking_uri(previous)  # None: unset again (the URI and the variable)
    if previous_env is not None:
        os.environ['MLFLOW_TRACKING_URI'] = previous_env


@pytest.mark.converts
def test_mlflow_model_in_the_run_and_registry_reproduces_the_model(ld_model, tmp_path,
                                                                    mlflow_uri):
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    model_dir, run_id = ld_model
    client = mlflow.MlflowClient(mlflow_uri)
    before = client.get_run(run_id).info
    mlflow.set_tracking_uri(None)  # as in a fresh process: the run's store comes from the model
    code = export.main(['--model', str(model_dir), '--out', str(tmp_path / 'sm'),
                        '--register', 'ddsp-tiny'])
    assert code == 0
    # the process-wide tracking URI is left as export found it (unset, no exported variable)
    assert tracking_utils._tracking_uri is None and 'MLFLOW_TRACKING_URI' not in os.environ
    mlflow.set_tracking_uri(mlflow_uri)
    after = client.get_run(run_id).info
    assert (after.status, after.end_time) == (before.status, before.end_time) == (
        'FINISHED', before.end_time)
    features = _features(['f0_hz', 'loudness_db'], 45)
    wet, dry = _in_process(model_dir, features, seed=7)
    registered = client.get_model_version('ddsp-tiny', '1')
    assert registered.run_id == run_id
    pyfunc = mlflow.pyfunc.load_model(f'runs:/{run_id}/model')
    schema = pyfunc.metadata.get_input_schema()
    assert [s.name for s in schema.inputs] == ['f0_hz', 'loudness_db']
    assert pyfunc.metadata.get_params_schema().params[0].name == 'seed'
    got = pyfunc.predict(features, params={'seed': 7})
    np.testing.assert_allclose(got['audio'], wet, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(got['audio_dry'], dry, atol=2e-5, rtol=1e-4)
    # the registered version, in a process that imports nothing of this project
    np.savez(tmp_path / 'in.npz', **features)
    (tmp_path / 'load.py').write_text(PLAIN_MLFLOW_LOADER)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['MLFLOW_TRACKING_URI'] = mlflow_uri
    done = subprocess.run([sys.executable, '-I', str(tmp_path / 'load.py'), 'models:/ddsp-tiny/1',
                           str(tmp_path / 'in.npz'), str(tmp_path / 'out.npz')],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / 'out.npz')
    assert list(got['project']) == []
    np.testing.assert_allclose(got['audio'], wet, atol=2e-5, rtol=1e-4)
    # the logged model's files: the SavedModel and the code, no pickle of this project
    local = Path(mlflow.artifacts.download_artifacts(f'runs:/{run_id}/model',
                                                     dst_path=str(tmp_path / 'dl')))
    assert (local / 'artifacts' / 'sm' / 'saved_model.pb').exists()
    assert not list(local.rglob('*.pkl'))
    assert 'tensorflow==' in (local / 'requirements.txt').read_text()


# ---- DDSP-VST --------------------------------------------------------------------------------
def _plugin_frames(interpreter, f0_scaled, pw_scaled):
    """What the plugin does: tensors by name, one frame per call, the state copied back."""
    inputs = {d['name']: d['index'] for d in interpreter.get_input_details()}
    outputs = {d['name']: d['index'] for d in interpreter.get_output_details()}
    state = np.zeros(512, np.float32)
    rows = []
    for f0, pw in zip(f0_scaled, pw_scaled, strict=True):
        interpreter.set_tensor(inputs['call_f0_scaled:0'], np.array([f0], np.float32))
        interpreter.set_tensor(inputs['call_pw_scaled:0'], np.array([pw], np.float32))
        interpreter.set_tensor(inputs['call_state:0'], state)
        interpreter.invoke()
        row = [np.array(interpreter.get_tensor(outputs[f'StatefulPartitionedCall:{i}']))
               for i in range(4)]
        state = row[3]
        rows.append(row)
    return [np.stack([r[i] for r in rows]) for i in range(4)]


def _keras_controls(model_dir, f0_scaled, pw_scaled):
    """The trained Keras decoder on the whole sequence: scaled controls and GRU states."""
    from ddsp_core import core

    net = TrainedModel.load(model_dir).model
    f0 = tf.constant(f0_scaled[None, :, None])
    pw = tf.constant(pw_scaled[None, :, None])
    raw = net.decoder({'f0_scaled': f0, 'pw_scaled': pw})
    procs = {p.name: p for p in net.processor_group.processors}
    harmonic = procs['harmonic'].get_controls(raw['amps'], raw['harmonic_distribution'],
                                              core.midi_to_hz(f0 * 127.0))
    noise = procs['filtered_noise'].get_controls(raw['noise_magnitudes'])
    stacks = [s({'f0_scaled': f0, 'pw_scaled': pw}[k])
              for k, s in zip(net.decoder.input_keys, net.decoder.input_stacks, strict=True)]
    states = net.decoder.rnn(tf.concat(stacks, axis=-1))
    return [np.asarray(x)[0] for x in (harmonic['amplitudes'], harmonic['harmonic_distribution'],
                                       noise['magnitudes'], states)]


def _reference_power_db(audio, n_frames):
    """Mean square over 1024-sample frames centred on every 320th sample, in dB, floor -80."""
    padded = np.pad(audio.astype(np.float64), 512)
    frames = np.stack([padded[i * 320:i * 320 + 1024] for i in range(n_frames)])
    return np.maximum(10 * np.log10(np.maximum(np.mean(frames ** 2, axis=1), 1e-20)), -80.0)


def _reference_statistics(data_dir):
    """The reference's compute_dataset_statistics, written out again (TF conv1d smoothing)."""
    from ddsp_core.dsp.units import hz_to_midi
    from trainer.evaluation.evaluate import iter_records
    from trainer.training.data import open_source

    source = open_source(str(data_dir))
    rows = [ex for _, ex in iter_records(source.files, source.layout)]
    n = source.layout.n_frames
    take = {k: np.stack([r[k] for r in rows])[:, :-20] for k in
            ('f0_hz', 'f0_confidence', 'loudness_db')}
    power = np.stack([_reference_power_db(r['audio'], n) for r in rows])[:, :-20]
    x = tf.constant((take['f0_confidence'] ** 2)[:, :, None], tf.float32)
    smoothed = tf.nn.conv1d(x, tf.ones([40, 1, 1]) / 40.0, 1, 'SAME')[:, :, 0].numpy()
    on = smoothed * (take['loudness_db'] + 80) >= (np.mean(take['loudness_db']) + 80) * 0.49
    on |= ~on.any(axis=1, keepdims=True)
    pitch = np.asarray(hz_to_midi(take['f0_hz']))
    stat = {}
    for name, v in (('pitch', pitch), ('power', power)):
        stat[f'mean_min_{name}_note'] = np.mean([v[i][on[i]].min() for i in range(len(v))])
        stat[f'mean_max_{name}_note'] = np.mean([v[i][on[i]].max() for i in range(len(v))])
    return stat, on


@pytest.mark.filterwarnings('ignore:.*tf.lite.Interpreter is deprecated')
@pytest.mark.converts
def test_vst_tflite_is_what_the_plugin_loads_and_runs_as_the_keras_model(vst_model, workspace,
                                                                        tmp_path, mlflow_uri):
    import mlflow

    model_dir, run_id = vst_model
    out = tmp_path / 'Tiny Violin.tflite'
    # --data defaults to the dataset path the model's run records
    assert export.main(['--model', str(model_dir), '--format', 'vst', '--out', str(out)]) == 0
    data = out.read_bytes()
    assert 'vst/Tiny Violin.tflite' in {f.path for f in mlflow.MlflowClient().list_artifacts(
        run_id, 'vst')}

    interpreter = tf.lite.Interpreter(model_path=str(out), experimental_op_resolver_type=(
        tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interpreter.allocate_tensors()
    ins, outs = interpreter.get_input_details(), interpreter.get_output_details()
    assert {d['name']: list(d['shape']) for d in ins} == PLUGIN_INPUTS
    assert {d['name']: list(d['shape']) for d in outs} == PLUGIN_OUTPUTS
    assert len(ins) == 3 and len(outs) == 4
    assert all(d['dtype'] == np.float32 for d in ins + outs)
    ops = {op['op_name'] for op in interpreter._get_ops_details()}
    assert ops <= {'ADD', 'CONCATENATION', 'DIV', 'EQUAL', 'FULLY_CONNECTED', 'GREATER_EQUAL',
                   'LEAKY_RELU', 'LESS', 'LOGISTIC', 'MEAN', 'MUL', 'POW', 'RESHAPE', 'RSQRT',
                   'SELECT_V2', 'SPLIT', 'SPLIT_V', 'SQUARED_DIFFERENCE', 'SUB', 'SUM', 'TANH'}
    assert {'FULLY_CONNECTED', 'TANH', 'LOGISTIC', 'POW'} <= ops  # the GRU and exp_sigmoid
    analysis = io.StringIO()
    with redirect_stdout(analysis):
        tf.lite.experimental.Analyzer.analyze(model_content=data)
    text = analysis.getvalue()
    assert 'FULLY_CONNECTED' in text
    for forbidden in ('Flex', 'VAR_HANDLE', 'READ_VARIABLE', 'WHILE', 'CUSTOM'):
        assert forbidden not in text, forbidden

    # frame by frame, the state carried, against the Keras decoder on the whole sequence
    n = 60
    t = np.linspace(0.0, 1.0, n)
    f0_hz = 60.0 * 2.0 ** (4.0 * t)  # up to 960 Hz: harmonics from the 9th on pass 8 kHz
    f0_scaled = ((12 * np.log2(f0_hz / 440.0) + 69) / 127).astype(np.float32)
    pw_scaled = ((-70 + 60 * np.sin(np.pi * t)) / 80 + 1).astype(np.float32)
    got = _plugin_frames(interpreter, f0_scaled, pw_scaled)
    want = _keras_controls(model_dir, f0_scaled, pw_scaled)
    for name, g, w in zip(('amps', 'harmonics', 'noise', 'state'), got, want, strict=True):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4, err_msg=name)
    assert np.abs(got[3][-1]).max() > 0.01  # the state moved
    np.testing.assert_allclose(got[1].sum(axis=1), 1.0, atol=1e-5)
    above = f0_hz[:, None] * np.arange(1, 61)[None] >= 8000
    assert above.any() and np.all(got[1][above] == 0)

    # metadata.json: a zip appended after the flatbuffer, one stored entry
    with zipfile.ZipFile(out) as archive:
        (entry,) = archive.infolist()
        assert entry.filename == 'metadata.json' and entry.compress_type == zipfile.ZIP_STORED
        meta = json.loads(archive.read(entry))
    assert data.index(b'PK\x03\x04') > 100_000  # after the weights
    assert {k: meta[k] for k in ('num_harmonics', 'num_noise_amps', 'frame_rate', 'frame_size',
                                 'sample_rate')} == {
        'num_harmonics': 60, 'num_noise_amps': 65, 'frame_rate': 50, 'frame_size': 1024,
        'sample_rate': 16000}
    assert meta['version'] == vst.package_version() and meta['version'] != ''
    exported = datetime.datetime.fromisoformat(meta['export_time'])
    assert abs((datetime.datetime.now() - exported).total_seconds()) < 600
    stats, on = _reference_statistics(workspace[1])
    assert on.sum() < on.size  # the note mask keeps some frames out
    for key, value in stats.items():
        assert meta[key] == pytest.approx(value, abs=1e-3), key
    for end in ('min', 'max'):
        midi = meta[f'mean_{end}_pitch_note']
        assert meta[f'mean_{end}_pitch_note_hz'] == pytest.approx(
            440 * 2 ** ((midi - 69) / 12), rel=1e-5)
    assert 150 < meta['mean_min_pitch_note_hz'] < meta['mean_max_pitch_note_hz'] < 650
    assert -60 < meta['mean_min_power_note'] < meta['mean_max_power_note'] < 0


def test_power_feature_is_the_plugins_and_feeds_the_vst_decoder(workspace):
    from trainer.model.autoencoder import Autoencoder, frame_power_db
    from trainer.training.loop import named_weights

    t = np.arange(16000) / 16000
    sines = np.stack([np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)])
    power = np.asarray(frame_power_db(sines.astype(np.float32), 16000, 50, 1024, n_frames=50))
    # the plugin's meter (docs/vst.md): -3.02 dB and -23.02 dB away from the edges
    np.testing.assert_allclose(power[:, 2:-2], np.broadcast_to([[-3.01], [-23.01]], (2, 46)),
                               atol=0.03)
    np.testing.assert_allclose(power, np.stack([_reference_power_db(s, 50) for s in sines]),
                               atol=1e-3)
    config = resolve_data(load_preset('vst'), VST_LAYOUT, 'test')
    net = Autoencoder(config.model, config.data)
    features = {'audio': tf.constant(sines, tf.float32), 'f0_hz': tf.fill([2, 50], 440.0)}
    pre = net.preprocess(features)
    np.testing.assert_allclose(pre['pw_scaled'][..., 0], power / 80 + 1, atol=1e-5)
    assert 'ld_scaled' not in pre and net.decoder.input_keys == ('pw_scaled', 'f0_scaled')
    net(net.dummy_features(1))
    assert any('in_pw_scaled' in k for k in named_weights(net))
    # the default decoder keeps its inputs (and checkpoint names)
    tiny = resolve_data(load_preset('tiny'), VST_LAYOUT, 'test')
    default = Autoencoder(tiny.model, tiny.data)
    default(default.dummy_features(1))
    names = named_weights(default)
    assert default.decoder.input_keys == ('ld_scaled', 'f0_scaled')
    assert any('in_ld_scaled' in k for k in names) and not any('in_pw' in k for k in names)


def test_vst_preset_is_plugin_shaped_and_others_are_refused_naming_what_differs():
    vst_config = resolve_data(load_preset('vst'), records.Layout(16000, 50, 4.0), 'ds')
    assert vst.vst_differences(vst_config) == [] and vst.vst_warnings(vst_config) == []
    m = vst_config.model
    assert (m.rnn_channels, m.mlp_units, m.mlp_layers, m.n_harmonics, m.n_noise_bands,
            m.noise_window_size, m.reverb_length, m.amp_resample_method) == (
        512, 256, 1, 60, 65, 0, 24000, 'linear')
    data, train = vst_config.data, vst_config.train
    assert (data.n_frames, data.hop_samples, train.batch_size) == (200, 320, 16)
    solo = resolve_data(load_preset('solo_instrument'), records.Layout(16000, 250, 4.0), 'ds')
    found = ' '.join(vst.vst_differences(solo))
    assert 'data.frame_rate = 250 (the plugin needs 50' in found
    assert "model.decoder_inputs = ['ld_scaled', 'f0_scaled']" in found
    assert 'model.rnn_channels' not in found  # 512, as the plugin's
    short = vst_config.with_overrides(['model.noise_window_size=65',
                                       'model.amp_resample_method=window'])
    assert vst.vst_differences(short) == []  # the plugin runs it, but synthesises otherwise
    warned = ' '.join(vst.vst_warnings(short))
    assert 'noise_window_size = 65' in warned and "amp_resample_method = 'window'" in warned


def test_note_statistics_follow_the_reference():
    x = np.random.default_rng(1).uniform(0, 1, (3, 90))
    want = tf.nn.conv1d(tf.constant(x[:, :, None], tf.float32), tf.ones([40, 1, 1]) / 40.0, 1,
                        'SAME')[:, :, 0].numpy()
    np.testing.assert_allclose(vst.smooth(x, 40), want, atol=1e-6)
    # example 0 sounds in frames 40..79 of 120 (the last 20 are trimmed), example 1 is silent:
    # it has no note-on frame and counts with all its frames.
    n = 120
    loud = np.full((2, n), -80.0)
    loud[0, 40:80] = -20.0
    conf = np.ones((2, n))
    f0 = np.tile(np.linspace(200.0, 400.0, n), (2, 1))
    power = loud - 3.0
    stats = vst.note_statistics(f0, conf, loud, power)
    on = vst.detect_notes(loud[:, :-20], conf[:, :-20])
    assert on[0, 40:80].all() and not on[0, :30].any() and not on[1].any()
    pitch = 12 * np.log2(f0[:, :100] / 440) + 69
    assert stats['mean_min_pitch_note'] == pytest.approx(
        (pitch[0, on[0]].min() + pitch[1].min()) / 2, abs=1e-4)
    assert stats['mean_max_pitch_note'] == pytest.approx(
        (pitch[0, on[0]].max() + pitch[1].max()) / 2, abs=1e-4)
    assert stats['mean_max_power_note'] == pytest.approx((-23.0 + -83.0) / 2)


# ---- CLI -------------------------------------------------------------------------------------
def test_cli_errors_exit_2_and_name_the_problem(ld_model, tmp_path, capsys):
    model_dir, _ = ld_model
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'config.json').write_text((model_dir / 'config.json').read_text())
    assert export.main(['--model', str(empty), '--out', str(tmp_path / 'a')]) == 2
    assert 'no checkpoint' in capsys.readouterr().err
    assert export.main(['--model', str(model_dir), '--format', 'vst',
                        '--out', str(tmp_path / 'a.tflite')]) == 2
    err = capsys.readouterr().err
    assert 'not what the DDSP-VST plugin runs' in err
    for key in ('model.decoder_inputs', 'model.rnn_channels = 32', 'model.n_harmonics = 16',
                'model.n_noise_bands = 16', '--preset vst'):
        assert key in err
    (tmp_path / 'taken').mkdir()
    (tmp_path / 'taken' / 'x').write_text('x')
    assert export.main(['--model', str(model_dir), '--out', str(tmp_path / 'taken'),
                        '--no-log_to_mlflow']) == 2
    assert 'exists' in capsys.readouterr().err
    assert export.main(['--model', str(tmp_path / 'nothing'), '--out', str(tmp_path / 'b')]) == 2
    assert 'no such directory' in capsys.readouterr().err


def test_help_shows_the_defaults():
    done = subprocess.run([sys.executable, '-m', 'trainer.serving.export', '--help'],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0
    text = ' '.join(done.stdout.split())
    assert '(default: saved_model)' in text
    assert '--log_to_mlflow, --no-log_to_mlflow' in text
    assert 'default: on when the model has a run' in text
    assert done.stderr == ''
