"""DAGs, processors, ProcessorGroup under Keras 3: eager, tf.function, keras.Model, distribute."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddsp_core import core, dags, effects, processors, synths

N = 4000
F = 50
B = 2


def controls(batch=B):
    rng = np.random.default_rng(0)
    return {
        'amps': tf.constant(rng.normal(size=[batch, F, 1]), tf.float32),
        'harmonic_distribution': tf.constant(rng.normal(size=[batch, F, 8]), tf.float32),
        'f0_hz': tf.fill([batch, F, 1], 220.0),
        'samples': tf.constant(rng.normal(size=[batch, N]), tf.float32),
    }


def make_dag(reverb=None):
    dag = [
        (synths.Harmonic(n_samples=N), ['amps', 'harmonic_distribution', 'f0_hz']),
        (synths.TensorToAudio(), ['samples']),
        (processors.Add(), ['harmonic/signal', 'tensor_to_audio/signal']),
    ]
    if reverb is not None:
        dag.append((reverb, ['add/signal']))
    return dag


def expected_sum(inputs):
    harmonic = synths.Harmonic(n_samples=N)(inputs['amps'], inputs['harmonic_distribution'],
                                            inputs['f0_hz'])
    return harmonic + inputs['samples']


# ---------------------------------------------------------------- DAGs


def test_dag_node_forms_string_modules_and_output_keys():
    class Split(keras.layers.Layer):
        def call(self, x):
            return x[:, :2], x[:, 2:]

    dense = keras.layers.Dense(3, name='dense')
    layer = dags.DAGLayer(
        [
            ('split', ['x'], ['left', 'right']),
            {'module': dense, 'inputs': ['split/right']},
            (keras.layers.Activation('relu', name='relu'), 'dense', ['act']),
        ],
        split=Split(name='split'),
    )
    x = tf.constant([[1.0, -2.0, 3.0, 4.0, 5.0]])
    outputs = layer({'x': x})
    np.testing.assert_array_equal(outputs['split']['left'], [[1.0, -2.0]])
    assert outputs['dense'].shape == (1, 3)
    np.testing.assert_allclose(outputs['relu']['act'], np.maximum(outputs['dense'], 0))
    assert layer.module_names == ['split', 'dense', 'relu']
    # The Dense layer's variables are tracked by the DAG layer.
    assert sorted(v.path.split('/', 1)[-1] for v in layer.trainable_variables) == [
        'dense/bias', 'dense/kernel']


@pytest.mark.parametrize('dag, error, match', [
    ('harmonic', TypeError, 'dag must be a list'),
    ([], ValueError, 'dag is empty'),
    ([(synths.TensorToAudio(),)], ValueError, 'DAG node 0: expected'),
    ([(synths.TensorToAudio(), ['samples'], ['a'], 'extra')], ValueError, 'DAG node 0'),
    ([('missing', ['samples'])], ValueError, "'missing' is a string but no module"),
    ([(synths.TensorToAudio(), [3])], TypeError, 'non-empty string'),
    ([(synths.TensorToAudio(), [])], ValueError, 'has no input keys'),
    ([(42, ['samples'])], TypeError, 'must be a Keras layer'),
    ([{'module': synths.TensorToAudio(), 'input': ['samples']}], ValueError, "'inputs'"),
    ([(synths.TensorToAudio(), ['samples']), (synths.TensorToAudio(), ['samples'])],
     ValueError, "'tensor_to_audio' is already used by node 0"),
])
def test_bad_dags_fail_at_construction_with_clear_errors(dag, error, match):
    with pytest.raises(error, match=match):
        processors.ProcessorGroup(dag)


def test_missing_input_key_lists_available_keys():
    group = processors.ProcessorGroup(make_dag())
    inputs = controls()
    del inputs['f0_hz']
    with pytest.raises(KeyError) as info:
        group(inputs)
    message = str(info.value)
    assert "'f0_hz' not found" in message and "'harmonic'" in message
    assert 'amps' in message and 'samples' in message  # available keys listed


# ---------------------------------------------------------------- ProcessorGroup


def test_processor_group_eager_equals_sum_of_processors_and_returns_controls():
    inputs = controls()
    group = processors.ProcessorGroup(make_dag())
    audio = group(inputs)
    assert audio.shape == (B, N)
    np.testing.assert_allclose(audio, expected_sum(inputs), atol=1e-4)

    # Like a single processor: {'signal': final signal, 'controls': the DAG's outputs}.
    result = group(inputs, return_outputs_dict=True)
    assert set(result) == {'signal', 'controls'}
    np.testing.assert_allclose(result['signal'], audio, atol=1e-6)
    outputs = result['controls']
    # Each node stores {'signal', 'controls'}; 'out' is the last node's entry.
    assert set(outputs['harmonic']) == {'signal', 'controls'}
    assert set(outputs['harmonic']['controls']) == {'amplitudes', 'harmonic_distribution',
                                                    'f0_hz'}
    distribution = core.nested_lookup('harmonic/controls/harmonic_distribution', outputs)
    np.testing.assert_allclose(np.sum(distribution, -1), 1.0, rtol=1e-5)
    assert set(outputs['add']['controls']) == {'signal_one', 'signal_two'}
    assert outputs['out'] is outputs['add']
    np.testing.assert_allclose(core.nested_lookup('out/signal', outputs), audio, atol=1e-6)
    # The inputs are kept at the top level and again under 'inputs'.
    assert outputs['amps'] is outputs['inputs']['amps']
    np.testing.assert_allclose(group.get_signal(group.get_controls(inputs)), audio, atol=1e-6)


def test_dag_nodes_read_nested_controls_and_reserved_names_are_refused():
    class Identity(keras.layers.Layer):
        def call(self, x):
            return x

    group = processors.ProcessorGroup([
        (synths.Harmonic(n_samples=N), ['amps', 'harmonic_distribution', 'inputs/f0_hz']),
        (Identity(name='f0_copy'), ['harmonic/controls/f0_hz'], ['f0_hz']),
        (processors.Add(), ['harmonic/signal', 'harmonic/signal']),
    ])
    inputs = controls()
    outputs = group.get_controls(inputs)
    np.testing.assert_allclose(outputs['f0_copy']['f0_hz'], inputs['f0_hz'])
    np.testing.assert_allclose(outputs['out']['signal'], 2.0 * outputs['harmonic']['signal'],
                               atol=1e-6)
    # The flat form of the controls is not a key any more.
    with pytest.raises(KeyError, match='harmonic/amplitudes'):
        processors.ProcessorGroup([(processors.Add(), ['harmonic/amplitudes', 'amps'])])(inputs)
    for reserved in ('out', 'inputs'):
        with pytest.raises(ValueError, match=f'{reserved!r} is reserved'):
            processors.ProcessorGroup([(synths.TensorToAudio(name=reserved), ['samples'])])


def test_processor_group_nested_in_a_dag_stores_signal_and_controls():
    inner = processors.ProcessorGroup(make_dag(), name='inner')
    outer = processors.ProcessorGroup([
        (inner, ['inputs']),
        (effects.Reverb(reverb_length=10, add_dry=False), ['inner/signal', 'ir']),
    ])
    inputs = controls()
    inputs['ir'] = tf.zeros([B, 10])
    outputs = outer.get_controls(inputs)
    assert set(outputs['inner']) == {'signal', 'controls'}
    np.testing.assert_allclose(outputs['inner']['signal'], expected_sum(inputs), atol=1e-4)
    assert 'harmonic' in outputs['inner']['controls']
    np.testing.assert_allclose(outputs['out']['signal'], 0.0)


def test_processor_group_with_harmonic_noise_add_in_tf_function():
    group = processors.ProcessorGroup([
        (synths.Harmonic(n_samples=N), ['amps', 'harmonic_distribution', 'f0_hz']),
        (synths.FilteredNoise(n_samples=N), ['noise_magnitudes']),
        (processors.Add(), ['harmonic/signal', 'filtered_noise/signal']),
    ])
    inputs = controls()
    inputs['noise_magnitudes'] = tf.zeros([B, F, 16])
    del inputs['samples']
    audio = tf.function(group)(inputs)
    assert audio.shape == (B, N)
    assert np.isfinite(audio.numpy()).all() and float(tf.math.reduce_std(audio)) > 0
    # Inputs as numpy arrays and Python floats work too.
    numpy_inputs = {k: v.numpy() for k, v in inputs.items()}
    assert group(numpy_inputs).shape == (B, N)


class SynthModel(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1, name='amp_dense')
        self.group = processors.ProcessorGroup(
            make_dag(effects.Reverb(trainable=True, reverb_length=500)))

    def call(self, inputs):
        inputs = dict(inputs)
        inputs['amps'] = self.dense(inputs['amps'])
        return self.group(inputs)


def test_processor_group_in_keras_model_tracks_and_trains_reverb():
    model = SynthModel()
    inputs = controls()
    model(inputs)
    paths = sorted(v.path for v in model.trainable_variables)
    assert len(paths) == 3  # dense kernel and bias, reverb IR
    assert [p for p in paths if p.endswith('reverb/ir')]
    assert [p for p in paths if p.endswith('amp_dense/kernel')]
    assert [v.path for v in model.group.trainable_variables] == [
        p for p in paths if p.endswith('reverb/ir')]

    target = tf.random.normal([B, N])

    @tf.function
    def loss_and_grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - target) ** 2)
        return loss, tape.gradient(loss, model.trainable_variables)

    _, grads = loss_and_grads(inputs)
    by_name = {v.path.split('/')[-2] + '/' + v.name: g
               for v, g in zip(model.trainable_variables, grads, strict=True)}
    assert float(tf.reduce_sum(tf.abs(by_name['reverb/ir']))) > 0
    assert float(tf.reduce_sum(tf.abs(by_name['amp_dense/kernel']))) > 0


def test_processor_group_under_tf_distribute_trains():
    strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
    with strategy.scope():
        model = SynthModel()
        optimizer = keras.optimizers.SGD(0.1)
    ir = [v for v in model.trainable_variables if v.path.endswith('reverb/ir')][0]
    before = ir.numpy().copy()
    inputs = controls()
    target = tf.zeros([B, N])

    @tf.function
    def train_step(x):
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(x) - target) ** 2)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss
        return strategy.reduce('SUM', strategy.run(step, args=(x,)), axis=None)

    losses = [float(train_step(inputs)) for _ in range(3)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert np.abs(ir.numpy() - before).max() > 0


# ---------------------------------------------------------------- Processor, Add, Mix, Crop


def test_processor_return_outputs_dict_and_python_number_inputs():
    mix = processors.Mix()
    one, two = tf.ones([1, 100]), tf.zeros([1, 100])
    outputs = mix(one, two, 0.0, return_outputs_dict=True)  # sigmoid(0) = 0.5
    assert set(outputs) == {'signal', 'controls'}
    assert set(outputs['controls']) == {'signal_one', 'signal_two', 'mix_level'}
    np.testing.assert_allclose(outputs['controls']['mix_level'], 0.5)
    np.testing.assert_allclose(outputs['signal'], np.sqrt(0.5) * np.ones([1, 100]), atol=1e-6)
    # Keras's own `training` keyword (which a DAG may pass on) is not a control.
    np.testing.assert_allclose(mix(one, two, 0.0, training=True), outputs['signal'])


def test_mix_is_a_constant_power_crossfade():
    raw = np.linspace(-6.0, 6.0, 50, dtype=np.float32)[None, :, None]
    level = 1.0 / (1.0 + np.exp(-raw[0, :, 0]))
    ones, zeros = tf.ones([1, 50]), tf.zeros([1, 50])
    gain_one = processors.Mix()(ones, zeros, raw).numpy()[0]
    gain_two = processors.Mix()(zeros, ones, raw).numpy()[0]
    np.testing.assert_allclose(gain_one, np.sqrt(level), atol=1e-6)
    np.testing.assert_allclose(gain_two, np.sqrt(1.0 - level), atol=1e-6)
    np.testing.assert_allclose(gain_one**2 + gain_two**2, 1.0, atol=1e-5)  # power is kept
    # Two uncorrelated noises keep their power through the middle of the fade (a linear
    # fade would lose 3 dB there).
    rng = np.random.default_rng(1)
    a, b = (tf.constant(rng.normal(size=[1, 20000]), tf.float32) for _ in range(2))
    middle = processors.Mix()(a, b, tf.zeros([1, 4, 1])).numpy()
    assert np.mean(middle**2) == pytest.approx(1.0, rel=0.05)


def test_mix_crossfades_with_a_frame_rate_level():
    one, two = tf.ones([1, 1000]), -tf.ones([1, 1000])
    level = tf.constant(np.linspace(-20.0, 20.0, 10, dtype=np.float32)[None, :, None])
    out = processors.Mix()(one, two, level, return_outputs_dict=True)
    assert out['controls']['mix_level'].shape == (1, 1000)  # resampled to the signals
    out = out['signal'].numpy()[0]
    assert out.shape == (1000,)
    assert out[0] == pytest.approx(-1.0, abs=1e-4)  # all signal_two
    assert out[-1] == pytest.approx(1.0, abs=1e-4)  # all signal_one
    assert np.all(np.diff(out) >= -1e-6)


def test_mix_takes_signals_of_either_rank_and_checks_lengths():
    x1 = np.full((2, 100, 3), 1.0, np.float32)
    x2 = np.full((2, 100, 3), 2.0, np.float32)
    level = np.zeros((2, 25, 1), np.float32)  # frame rate: resampled to 100 steps
    out = processors.Mix()(x1, x2, level).numpy()
    assert out.shape == (2, 100, 3)
    np.testing.assert_allclose(out, 3.0 * np.sqrt(0.5), atol=1e-5)
    mixed_ranks = processors.Mix()(tf.ones([2, 100]), tf.ones([2, 100, 1]), level)
    assert mixed_ranks.shape == (2, 100)
    with pytest.raises(ValueError, match='same length'):
        processors.Mix()(tf.ones([2, 100]), tf.ones([2, 90]), level)
    # Finite gradients even where the level saturates at 0 or 1.
    raw = tf.constant([[[-200.0], [200.0]]])
    with tf.GradientTape() as tape:
        tape.watch(raw)
        total = tf.reduce_sum(processors.Mix()(tf.ones([1, 2]), tf.ones([1, 2]), raw))
    assert np.all(np.isfinite(tape.gradient(total, raw).numpy()))


def test_add_sums_signals():
    out = processors.Add()(tf.fill([2, 10], 1.5), tf.fill([2, 10], 2.0))
    np.testing.assert_allclose(out, 3.5)


def test_crop_locations():
    audio = tf.constant(np.arange(20, dtype=np.float32)[None, :])
    np.testing.assert_array_equal(processors.Crop(4)(audio)[0], np.arange(16))
    np.testing.assert_array_equal(processors.Crop(4, 'front')(audio)[0], np.arange(4, 20))
    np.testing.assert_array_equal(processors.Crop(4, 'center')(audio)[0], np.arange(2, 18))
    with pytest.raises(ValueError, match='crop_location'):
        processors.Crop(4, 'middle')
    # The padding of centred framing is frame_size // 2 a side, so an odd size removes one less.
    np.testing.assert_array_equal(processors.Crop(5)(audio)[0], np.arange(16))
    np.testing.assert_array_equal(processors.Crop(5, 'front')(audio)[0], np.arange(4, 20))


def test_processors_accept_keyword_controls_and_work_in_functional_models():
    harmonic = synths.Harmonic(n_samples=N, scale_fn=None)
    audio = harmonic(amplitudes=tf.ones([1, F, 1]), harmonic_distribution=tf.ones([1, F, 2]),
                     f0_hz=tf.fill([1, F, 1], 200.0))
    assert audio.shape == (1, N)

    inputs = {key: keras.Input(shape=(F, channels), name=key)
              for key, channels in (('amps', 1), ('harmonic_distribution', 8), ('f0_hz', 1))}
    group = processors.ProcessorGroup([
        (synths.Harmonic(n_samples=N), ['amps', 'harmonic_distribution', 'f0_hz']),
        (effects.Reverb(trainable=True, reverb_length=100), ['harmonic/signal']),
    ])
    model = keras.Model(inputs, group(inputs))
    assert len(model.trainable_variables) == 1
    batch = {k: v for k, v in controls().items() if k in inputs}
    np.testing.assert_allclose(model(batch), group(batch), atol=1e-5)
