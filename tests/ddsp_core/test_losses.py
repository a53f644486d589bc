"""Losses: exact values on small tensors, zero for identical audio, useful gradients, groups."""

import numpy as np
import pytest
import tensorflow as tf

from ddsp_core import losses
from tests.signals import sine

SR = 16000
N = 4000  # 0.25 s keeps the spectrograms small.
FFT_SIZES = (512, 256, 64)
WEIGHT_OPTIONS = ['mag_weight', 'delta_time_weight', 'delta_freq_weight', 'cumsum_freq_weight',
                  'logmag_weight', 'loudness_weight']


def _only(option):
    """SpectralLoss kwargs with every weight 0 except `option` (1.0)."""
    return {name: float(name == option) for name in WEIGHT_OPTIONS}


def _tone(amplitude, freq_hz=440.0):
    """amplitude * sin(2 pi f t) rendered with TF ops, [1, N] (differentiable in amplitude)."""
    t = tf.range(N, dtype=tf.float32) / SR
    return amplitude * tf.sin(2.0 * np.pi * freq_hz * t)[tf.newaxis]


def test_mean_difference_values():
    target = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    value = tf.constant([[1.0, 0.0], [0.0, 4.0]])
    assert float(losses.mean_difference(target, value, 'L1')) == pytest.approx(1.25)
    assert float(losses.mean_difference(target, value, 'l2')) == pytest.approx(3.25)
    weights = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    assert float(losses.mean_difference(target, value, 'L1', weights)) == pytest.approx(0.75)
    assert float(losses.mean_difference(target, value, 'L2', weights)) == pytest.approx(2.25)
    # Cosine: parallel rows -> 0, orthogonal -> 1, independent of vector length.
    a = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    b = tf.constant([[5.0, 0.0], [2.0, 0.0]])
    assert float(losses.mean_difference(a, b, 'COSINE')) == pytest.approx(0.5)
    assert float(losses.mean_difference(a, b, 'cosine', tf.constant([1.0, 3.0]))) == \
        pytest.approx(0.75)
    assert float(losses.mean_difference(a, -a, 'COSINE')) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="'L3'"):
        losses.mean_difference(target, value, 'L3')
    with pytest.raises(ValueError, match='loss_type'):
        losses.SpectralLoss(loss_type='huber')


def test_amp_and_freq_loss_values():
    amp = tf.constant([1.0, 10.0])
    target = tf.constant([1.0, 100.0])
    assert float(losses.amp_loss(amp, target)) == pytest.approx(45.0)
    assert float(losses.amp_loss(amp, target, loss_type='L2')) == pytest.approx(4050.0)
    # log mode compares log10: a factor of 10 on one of two elements averages to 0.5.
    assert float(losses.amp_loss(amp, target, log=True)) == pytest.approx(0.5, rel=1e-5)
    # amin floors zeros in log mode: |log10(1e-3) - log10(1)| with amin 1e-3.
    got = losses.amp_loss(tf.constant([0.0]), tf.constant([1.0]), log=True, amin=1e-3)
    assert float(got) == pytest.approx(3.0, rel=1e-5)
    # One octave = 12 semitones.
    f0 = tf.constant([440.0, 220.0])
    f0_target = tf.constant([880.0, 220.0])
    assert float(losses.freq_loss(f0, f0_target)) == pytest.approx(6.0, rel=1e-5)
    assert float(losses.freq_loss(f0, f0_target, loss_type='L2')) == pytest.approx(72.0, rel=1e-4)
    assert float(losses.freq_loss(f0, f0_target, weights=tf.constant([0.0, 1.0]))) == 0.0


@pytest.mark.parametrize('option', WEIGHT_OPTIONS)
def test_spectral_loss_each_term(option):
    loss = losses.SpectralLoss(fft_sizes=FFT_SIZES, **_only(option))
    target = _tone(0.5)
    assert float(loss(target, target)) == 0.0
    near = float(loss(target, _tone(0.6)))
    far = float(loss(target, _tone(0.9)))
    assert 0.0 < near < far
    assert float(loss(target, _tone(0.5, freq_hz=600.0))) > 0.0


@pytest.mark.parametrize('option', ['mag_weight', 'logmag_weight', 'loudness_weight'])
def test_spectral_loss_gradient_points_to_target(option):
    loss = losses.SpectralLoss(fft_sizes=FFT_SIZES, **_only(option))
    target = _tone(0.5)
    grads = []
    for start in (0.2, 0.9):
        amplitude = tf.Variable(start)
        with tf.GradientTape() as tape:
            value = loss(target, _tone(amplitude))
        grad = float(tape.gradient(value, amplitude))
        assert np.isfinite(grad) and grad != 0.0
        grads.append(grad)
    # Too quiet -> the loss falls as the amplitude grows; too loud -> the other way.
    assert grads[0] < 0.0 < grads[1]


def test_spectral_loss_gradient_finite_for_silence():
    loss = losses.SpectralLoss(fft_sizes=(256,), mag_weight=1.0, logmag_weight=1.0,
                               loudness_weight=1.0)
    audio = tf.Variable(tf.zeros([1, 2000]))
    with tf.GradientTape() as tape:
        value = loss(_tone(0.5)[:, :2000], audio)
    assert np.isfinite(tape.gradient(value, audio).numpy()).all()


@pytest.mark.parametrize('mag_weight,logmag_weight,scale', [
    (1.0, 1.0, 0.1), (0.0, 1.0, 0.1), (2.0, 0.0, 0.1), (-1.0, 1.0, 0.1), (1.0, 1.0, 1e-20)])
def test_spectral_loss_fast_path_equals_generic_path(mag_weight, logmag_weight, scale):
    # L1 on magnitudes/log magnitudes without weights has a hand-written gradient; weights=1.0
    # forces the generic (autodiff) path, which must give the same value and gradients, also
    # through silence (|S| = 0), for FFT sizes that are odd or not a multiple of the hop, with
    # a negative weight (the term is left out) and for magnitudes near float32's smallest.
    loss = losses.SpectralLoss(fft_sizes=(512, 250, 64, 33), mag_weight=mag_weight,
                               logmag_weight=logmag_weight)
    noise = tf.random.stateless_normal([2, N], seed=[3, 4]) * scale
    silence = tf.concat([tf.ones([2, N // 2]), tf.zeros([2, N - N // 2])], axis=1)
    target = tf.concat([_tone(0.5), _tone(0.3, freq_hz=700.0)], axis=0) * silence
    value = noise * tf.concat([tf.ones([1, N]), silence[1:]], axis=0)
    assert loss._fast_path_applies(target, value, None)

    def run(weights):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([target, value])
            out = loss(target, value, weights=weights)
        return [out, *tape.gradient(out, [target, value])]

    fast, generic = run(None), run(1.0)
    assert float(fast[0]) == pytest.approx(float(generic[0]), rel=1e-5)
    for f, g in zip(fast[1:], generic[1:], strict=True):
        f, g = f.numpy().astype(np.float64), g.numpy().astype(np.float64)
        assert np.isfinite(f).all() and np.isfinite(g).all()
        assert np.linalg.norm(g) > 0
        rel = np.linalg.norm(f - g) / np.linalg.norm(g)
        assert rel < 1e-5, rel
    graph = tf.function(lambda t, v: loss(t, v))
    assert float(graph(target, value)) == pytest.approx(float(fast[0]), rel=1e-6)


def test_spectral_loss_weights_and_tf_function():
    loss = losses.SpectralLoss(fft_sizes=(256,))
    target = tf.concat([_tone(0.5), _tone(0.5)], axis=0)
    value = tf.concat([_tone(0.5), _tone(0.1)], axis=0)
    full = float(loss(target, value))
    # Weighting out the differing example leaves only the identical one.
    assert float(loss(target, value, weights=tf.constant([1.0, 0.0])[:, None, None])) == 0.0
    assert float(tf.function(loss)(target, value)) == pytest.approx(full, rel=1e-5)


def test_losses_under_distribution_strategy():
    strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
    loss = losses.SpectralLoss(fft_sizes=(256, 64), logmag_weight=1.0)
    target, value = _tone(0.5), _tone(0.2)

    @tf.function
    def step():
        return strategy.run(lambda: loss(target, value))

    per_replica = step()
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    assert float(total) == pytest.approx(float(loss(target, value)), rel=1e-5)


@pytest.fixture(scope='module')
def crepe_loss():
    return losses.PretrainedCREPEEmbeddingLoss(model_capacity='tiny')


def test_crepe_embedding_loss(crepe_loss):
    a330 = sine(330.0, seconds=0.5)[np.newaxis]
    a440 = sine(440.0, seconds=0.5)[np.newaxis]
    assert float(crepe_loss(a330, a330)) == 0.0
    # The loudness of a tone does not change CREPE's (normalised) input much.
    same_pitch = float(crepe_loss(a330, 0.3 * a330))
    different_pitch = float(crepe_loss(a330, a440))
    assert different_pitch > 0.005 and different_pitch > 10 * same_pitch
    # Differentiable w.r.t. the audio; CREPE's weights stay frozen.
    audio = tf.Variable(a440)
    with tf.GradientTape() as tape:
        value = crepe_loss(a330, audio)
    grad = tape.gradient(value, audio).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0.0
    assert crepe_loss.trainable_variables == []
    embedding = crepe_loss.pretrained_model(a330)
    assert embedding.shape == (1, 1 + 8000 // 256, 360)


def test_crepe_embedding_loss_errors():
    with pytest.raises(ValueError, match="activation_layer='nope'"):
        losses.PretrainedCREPEEmbeddingLoss(activation_layer='nope')
    with pytest.raises(RuntimeError, match="'small'"):
        losses.PretrainedCREPEEmbeddingLoss(model_capacity='small')


def test_loss_group_returns_named_losses():
    spectral = losses.SpectralLoss(fft_sizes=(256,), name='spectral_loss')
    dag = [
        (spectral, ['audio', 'harmonic/signal']),
        ('pitch', ['f0_hz', 'f0_target']),
        (losses.amp_loss, ['amps', 'amps_target']),
    ]
    group = losses.LossGroup(dag, pitch=losses.freq_loss)
    outputs = {
        'audio': _tone(0.5), 'harmonic': {'signal': _tone(0.3)},
        'f0_hz': tf.constant([[440.0]]), 'f0_target': tf.constant([[880.0]]),
        'amps': tf.constant([[1.0, 2.0]]), 'amps_target': tf.constant([[1.0, 4.0]]),
    }
    result = group(outputs)
    assert list(result) == ['spectral_loss', 'freq_loss', 'amp_loss'] == group.loss_names
    assert float(result['spectral_loss']) == pytest.approx(
        float(spectral(_tone(0.5), _tone(0.3))), rel=1e-6)
    assert float(result['freq_loss']) == pytest.approx(12.0, rel=1e-5)
    assert float(result['amp_loss']) == pytest.approx(1.0)
    assert group.get_losses_dict(outputs).keys() == result.keys()
    graph_result = tf.function(group)(outputs)
    assert float(graph_result['freq_loss']) == pytest.approx(12.0, rel=1e-5)
    with pytest.raises(KeyError, match='missing'):
        losses.LossGroup([(spectral, ['audio', 'missing'])])(outputs)
    single = spectral.get_losses_dict(_tone(0.5), _tone(0.3))
    assert list(single) == ['spectral_loss']
    assert float(single['spectral_loss']) == pytest.approx(float(result['spectral_loss']))


def test_loss_group_stores_get_losses_dict_and_merges_nested_groups():
    class TwoLosses(losses.Loss):
        """A loss whose get_losses_dict gives two named terms."""

        def call(self, target, value):
            return losses.mean_difference(target, value)

        def get_losses_dict(self, target, value):
            return {'l1': self(target, value), 'l2': losses.mean_difference(target, value, 'L2')}

    inner = losses.LossGroup([(TwoLosses(name='pair'), ['a', 'b'])], name='inner')
    outer = losses.LossGroup([
        (inner, ['inputs']),
        (losses.SpectralLoss(fft_sizes=(64,)), ['audio', 'audio']),
    ])
    outputs = {'a': tf.constant([1.0, 2.0]), 'b': tf.constant([1.0, 4.0]), 'audio': _tone(0.5)}
    result = outer(outputs)
    assert list(result) == ['l1', 'l2', 'spectral_loss']
    assert float(result['l1']) == pytest.approx(1.0)
    assert float(result['l2']) == pytest.approx(2.0)
    assert float(result['spectral_loss']) == pytest.approx(0.0, abs=1e-7)
    # Inside the DAG a loss's entry is its losses dict.
    dag_outputs = outer.run_dag(outputs)
    assert set(dag_outputs['spectral_loss']) == {'spectral_loss'}
