"""CREPE in bfloat16 (where the hardware has it) holds float32's pitch accuracy on melodies
with a known f0; the opt-in 10 ms analysis hop costs little; 'auto' picks the format."""

import numpy as np
import pytest

from ddsp_core import f0
from tests.signals import f0_at_frames, melody
from trainer.evaluation.metrics import f0_l1_semitones, raw_pitch_accuracy


def score(audio, truth_per_sample, **kwargs):
    est, _ = f0.predict_f0(audio, 250, model_capacity='tiny', **kwargs)
    truth = f0_at_frames(truth_per_sample, 250, len(est))
    ones = np.ones_like(truth)
    return raw_pitch_accuracy(truth, est, ones), f0_l1_semitones(truth, est, ones)


@pytest.fixture(scope='module')
def melodies():
    return [melody(2.5, 'string', seed=1), melody(2.5, 'flute', seed=2)]


def test_bfloat16_holds_float32_pitch_accuracy(melodies):
    for audio, truth in melodies:
        rpa32, l1_32 = score(audio, truth, precision='float32')
        rpa16, l1_16 = score(audio, truth, precision='bfloat16')
        assert rpa32 > 0.95 and l1_32 < 0.15  # float32 tracks these melodies
        assert abs(rpa16 - rpa32) <= 0.002
        assert abs(l1_16 - l1_32) <= 0.02


def test_bfloat16_really_computes_in_bfloat16(melodies):
    frames = f0.crepe_frames(melodies[0][0][:8000], 250)
    a32 = f0.load_crepe_forward('tiny', 'float32')(frames)
    forward = f0.load_crepe_forward('tiny', 'bfloat16')
    assert forward.precision == 'bfloat16' and forward is not f0.load_crepe_forward('tiny')
    a16 = forward(frames)
    assert a16.dtype == np.float32 and a16.shape == a32.shape
    diff = np.abs(a16 - a32).max()
    assert 1e-5 < diff < 0.05  # rounded products, not float32's and not garbage


def test_f0_hop_10ms_costs_little(melodies):
    for audio, truth in melodies:
        rpa, l1 = score(audio, truth, precision='float32')
        rpa10, l1_10 = score(audio, truth, precision='float32', hop_ms=10)
        assert rpa10 >= rpa - 0.01 and l1_10 <= l1 + 0.02
    est, conf = f0.predict_f0(audio, 250, model_capacity='tiny', hop_ms=10)
    assert est.shape == conf.shape == (626,)  # the frame rate's count, not CREPE's 251


def test_interpolate_f0_in_log_frequency():
    # An exponential glide is a straight line in cents: interpolated exactly.
    src = 100.0 * 2.0 ** (np.arange(11) / 10.0)  # 100 frames/s
    out, conf = f0.interpolate_f0(src, np.linspace(0, 1, 11), 100, 250, 26)
    np.testing.assert_allclose(out, 100.0 * 2.0 ** (np.arange(26) * 0.4 / 10.0), rtol=1e-6)
    np.testing.assert_allclose(conf, np.minimum(np.arange(26) * 0.04, 1.0), atol=1e-6)
    # Next to 0 Hz (no pitch) a frame takes its nearest neighbour; past the end holds the last.
    out, _ = f0.interpolate_f0([200.0, 0.0, 300.0], [1.0, 0.0, 1.0], 100, 250, 7)
    np.testing.assert_allclose(out, [200, 200, 0, 0, 300, 300, 300])


@pytest.mark.parametrize('hop_ms', [0, -10, 3, 7.5])
def test_bad_hops_and_precisions_raise(hop_ms):
    with pytest.raises(ValueError, match='f0 hop of'):
        f0.analysis_rate(250, hop_ms)
    assert f0.analysis_rate(250, None) == 250 and f0.analysis_rate(250, 10) == 100
    with pytest.raises(ValueError, match="precision='half'"):
        f0.resolve_crepe_precision('half')


def test_auto_precision_follows_the_hardware(monkeypatch):
    import tensorflow as tf

    # the CPU's case wherever the test runs (a GPU is asked first)
    monkeypatch.setattr(tf.config, 'list_physical_devices', lambda *_: [])
    monkeypatch.delenv('TF_ENABLE_ONEDNN_OPTS', raising=False)
    monkeypatch.setattr(f0, '_cpu_flags', lambda: {'avx512f', 'avx512_bf16'})
    assert f0.resolve_crepe_precision('auto') == 'bfloat16'
    assert f0.resolve_crepe_precision('float32') == 'float32'
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', '0')
    assert f0.resolve_crepe_precision('auto') == 'float32'
    assert 'oneDNN off' in f0.bfloat16_hardware()[1]
    monkeypatch.delenv('TF_ENABLE_ONEDNN_OPTS')
    monkeypatch.setattr(f0, '_cpu_flags', lambda: {'avx2', 'avx512f'})
    assert f0.resolve_crepe_precision('auto') == 'float32'
    assert f0.resolve_crepe_precision('bfloat16') == 'bfloat16'
