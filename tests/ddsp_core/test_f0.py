"""CREPE f0: framing matches crepe and spectral_ops, predictions match crepe.predict."""

import crepe
import numpy as np
import pytest

from ddsp_core import f0, spectral_ops
from tests.signals import sine

# Frames whose 1024-sample window reaches into the centre padding (512 / hop at 250 fps).
EDGE = 8


@pytest.fixture(scope='module')
def tone330():
    return sine(330.0, seconds=1.0)


def test_predict_f0_tiny_finds_330_hz(tone330):
    f0_hz, confidence = f0.predict_f0(tone330, 250, model_capacity='tiny')
    assert f0_hz.dtype == np.float32 and confidence.dtype == np.float32
    assert f0_hz.shape == confidence.shape == (251,)
    interior = slice(EDGE, -EDGE)
    np.testing.assert_allclose(f0_hz[interior], 330.0, rtol=0.02)
    assert confidence[interior].min() > 0.8


@pytest.mark.parametrize('padding', ['center', 'same', 'valid'])
# 300 frames/s does not divide 16 kHz: the hop rounds down to 53 samples, as for loudness.
@pytest.mark.parametrize('n_samples,frame_rate', [(16000, 250), (5003, 100), (64000, 250),
                                                  (5003, 300)])
def test_crepe_frames_count_matches_framed_lengths(padding, n_samples, frame_rate):
    audio = np.random.randn(n_samples).astype(np.float32)
    frames = f0.crepe_frames(audio, frame_rate, padding=padding)
    hop = 16000 // frame_rate
    n_frames, _ = spectral_ops.get_framed_lengths(n_samples, 1024, hop, padding)
    assert frames.shape == (n_frames, 1024) and frames.dtype == np.float32
    # Every frame is normalised to zero mean and unit standard deviation.
    np.testing.assert_allclose(frames.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(frames.std(axis=1), 1.0, rtol=1e-4)
    # Same frame count as the loudness features of the same audio.
    loudness = spectral_ops.compute_loudness(audio, frame_rate=frame_rate, n_fft=2048,
                                             use_tf=False, padding=padding)
    if padding != 'valid':  # 'valid' counts depend on the window size by definition.
        assert loudness.shape == (n_frames,)


def test_crepe_frames_centred_on_hop_multiples():
    audio = np.random.randn(3000).astype(np.float32)
    frames = f0.crepe_frames(audio, 250, padding='center')
    # Frame 10 is centred on sample 640: samples 128 .. 1151.
    window = audio[640 - 512:640 + 512]
    want = (window - window.mean()) / window.std()
    np.testing.assert_allclose(frames[10], want, atol=1e-5)
    # Frame 0 starts with 512 zeros of padding.
    first = np.concatenate([np.zeros(512, np.float32), audio[:512]])
    np.testing.assert_allclose(frames[0], (first - first.mean()) / first.std(), atol=1e-5)


@pytest.mark.parametrize('viterbi', [True, False])
def test_matches_crepe_predict(viterbi):
    rng = np.random.default_rng(1)
    t = np.arange(8000) / 16000
    glide = 0.4 * np.sin(2 * np.pi * np.cumsum(200.0 * 2 ** (2 * t)) / 16000)
    audio = (glide + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    _, want_f0, want_conf, want_act = crepe.predict(
        audio, 16000, model_capacity='tiny', viterbi=viterbi, center=True, step_size=4,
        verbose=0)
    act = f0.predict_activations(audio, 250, model_capacity='tiny', batch_size=37)
    np.testing.assert_allclose(act, want_act, atol=1e-5)
    got_f0, got_conf = f0.activations_to_f0(want_act, viterbi=viterbi)
    np.testing.assert_allclose(got_f0, want_f0, rtol=1e-6)
    np.testing.assert_allclose(got_conf, want_conf, rtol=1e-6)
    pred_f0, pred_conf = f0.predict_f0(audio, 250, viterbi=viterbi, model_capacity='tiny')
    np.testing.assert_allclose(pred_f0, want_f0, rtol=1e-4)
    np.testing.assert_allclose(pred_conf, want_conf, atol=1e-5)


def test_activations_to_f0_decodes_bin_centres():
    # A one-hot activation at bin b decodes to the bin's cents, 1997.38 + 20 b.
    act = np.zeros([3, 360], np.float32)
    act[[0, 1, 2], [0, 100, 300]] = 0.9
    f0_hz, conf = f0.activations_to_f0(act, viterbi=False)
    cents = 1997.3794084376191 + np.array([0.0, 100.0, 300.0]) * 7180.0 / 359.0
    np.testing.assert_allclose(f0_hz, 10.0 * 2 ** (cents / 1200.0), rtol=1e-5)
    np.testing.assert_allclose(conf, 0.9)
    # All-zero activations give NaN cents in crepe; we return 0 Hz.
    f0_hz, conf = f0.activations_to_f0(np.zeros([2, 360], np.float32), viterbi=False)
    np.testing.assert_array_equal(f0_hz, 0.0)
    assert f0.activations_to_f0(np.zeros([0, 360]))[0].shape == (0,)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(RuntimeError, match=r"'small'.*empty.*Installing crepe.*CREPE_WEIGHTS_DIR"):
        f0.load_crepe_model('small')
    with pytest.raises(ValueError, match="'huge' is not a CREPE capacity"):
        f0.load_crepe_model('huge')
    with pytest.raises(ValueError, match="'huge'"):
        f0.predict_f0(np.zeros(2000, np.float32), 250, model_capacity='huge')
    for frame_rate in (0, -250, 'fast', True):
        with pytest.raises(ValueError, match='frame_rate must be a positive number'):
            f0.crepe_frames(np.zeros(2000, np.float32), frame_rate)
    with pytest.raises(ValueError, match='frame_rate=20000 is above sample_rate=16000'):
        f0.crepe_frames(np.zeros(2000, np.float32), 20000)
    with pytest.raises(ValueError, match='padding'):
        f0.crepe_frames(np.zeros(2000, np.float32), 250, padding='full')
    with pytest.raises(ValueError, match='1-D'):
        f0.crepe_frames(np.zeros([2, 2000], np.float32), 250)
    with pytest.raises(ValueError, match=r'\[n_frames, 360\]'):
        f0.activations_to_f0(np.zeros([4, 100]))


def test_load_crepe_model_is_cached():
    model = f0.load_crepe_model('tiny')
    assert f0.load_crepe_model('tiny') is model
    assert tuple(model.output.shape) == (None, 360)


def test_crepe_forward_equals_the_keras_model():
    rng = np.random.default_rng(4)
    t = np.arange(6000) / 16000
    audio = (0.5 * np.sin(2 * np.pi * 330.0 * t) + 0.01 * rng.standard_normal(len(t)))
    frames = np.concatenate([f0.crepe_frames(audio.astype(np.float32), 250),
                             rng.standard_normal([5, 1024]).astype(np.float32)])
    model = f0.load_crepe_model('tiny')
    forward = f0.load_crepe_forward('tiny')
    assert f0.load_crepe_forward('tiny') is forward
    forward_small_batches = f0.CrepeForward(model, max_batch=7)
    want = model.predict_on_batch(frames)
    got = forward(frames)
    assert got.shape == (len(frames), 360) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(forward_small_batches(frames), want, atol=1e-5)
    # The tone's frames peak at the bin of 330 Hz (20 cents per bin from 1997.38 cents).
    bin_330 = round((1200 * np.log2(330 / 10) - 1997.38) / 20)
    assert abs(int(np.median(got[4:-4].argmax(axis=1))) - bin_330) <= 1
    assert forward(np.zeros([0, 1024], np.float32)).shape == (0, 360)
    with pytest.raises(ValueError, match=r'\[n, 1024\]'):
        forward(np.zeros([3, 512], np.float32))


def test_crepe_forward_calls_the_model_batch_size_frames_at_a_time(monkeypatch):
    forward = f0.CrepeForward(f0.load_crepe_model('tiny'))
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((300, 1024)).astype(np.float32)
    sizes = []
    real = forward._fn
    monkeypatch.setattr(forward, '_fn', lambda x: sizes.append(int(x.shape[0])) or real(x))
    default = forward(frames)
    assert sizes == [128, 128, 44]  # max_batch
    sizes.clear()
    chosen = forward(frames, batch_size=250)
    assert sizes == [250, 50]
    np.testing.assert_allclose(chosen, default, atol=1e-5)
    with pytest.raises(ValueError, match='batch_size'):
        forward(frames, batch_size=-1)
