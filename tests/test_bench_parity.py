"""bench_parity's listening report: both models' resynthesis of the same held-out examples at
one checkpoint, side by side with the original (no training here: the harness' npz files are
made up)."""

import argparse
import re

import numpy as np
import pytest
import soundfile as sf

from benchmarks import bench_parity


def _harness(tmp_path, n=9, step=40):
    t = np.arange(16000) / 16000
    original = np.stack([0.5 * np.sin(2 * np.pi * (220 + 20 * i) * t) for i in range(n)])
    rng = np.random.default_rng(0)
    for name, scale in (('reference', 0.1), ('ours', 0.3)):
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / f'step_{step}.npz', audio=original,
                 resynthesis=(scale * original + 0.01 * rng.standard_normal(original.shape))
                 .astype(np.float32))
    judged = {name: {str(step): {'spectral_loss': 0.0,
                                 'per_example': [offset + i for i in range(n)]}}
              for name, offset in (('reference', 100.0), ('ours', 200.0))}
    args = argparse.Namespace(out=tmp_path, listen=3, batch_size=8, lr=3e-4)
    return args, judged, original


def test_listening_report_puts_both_models_beside_the_original(tmp_path):
    args, judged, original = _harness(tmp_path)
    html = bench_parity.listening_report(args, judged, 40).read_text()
    picks = [0, 4, 8]  # spread over the 9 held-out examples
    for i in picks:
        folder = tmp_path / 'listen' / f'example_{i:03d}'
        got, rate = sf.read(folder / 'original.wav', dtype='float32')
        assert rate == 16000 and np.abs(got - original[i]).max() < 1e-4
        ours, _ = sf.read(folder / 'ours.wav', dtype='float32')
        reference, _ = sf.read(folder / 'reference.wav', dtype='float32')
        # each model's own output (0.3 and 0.1 of the original), not swapped
        assert 0.12 < np.abs(ours).max() < 0.2 and 0.03 < np.abs(reference).max() < 0.09
        assert (folder / 'ours.png').stat().st_size > 10_000
        assert f'held-out example {i} of 9' in html
        # each cell shows that example's loss as the reference's SpectralLoss judged it
        assert f'SpectralLoss {100 + i:.4g}' in html and f'SpectralLoss {200 + i:.4g}' in html
    assert len(re.findall(r'<audio controls', html)) == 3 * len(picks)
    assert len(re.findall(r'<img alt="spectrogram"', html)) == 2 * len(picks)
    assert html.index('reference, step 40') < html.index('ours, step 40')


def test_listening_report_refuses_different_held_out_examples(tmp_path):
    args, judged, original = _harness(tmp_path)
    data = dict(np.load(tmp_path / 'ours' / 'step_40.npz'))
    data['audio'] = data['audio'][::-1]
    np.savez(tmp_path / 'ours' / 'step_40.npz', **data)
    with pytest.raises(SystemExit, match='held-out examples differ'):
        bench_parity.listening_report(args, judged, 40)
    args.listen = 0
    assert bench_parity.listening_report(args, judged, 40) is None


def test_synth_balance_tells_a_collapsed_harmonic_part(tmp_path):
    original = 0.1 * np.ones((4, 100))  # RMS 0.1
    np.savez(tmp_path / 'alive.npz', audio=original, resynthesis=original,
             harmonic_rms=np.full(4, 0.05), noise_rms=np.full(4, 0.001))
    np.savez(tmp_path / 'dead.npz', audio=original, resynthesis=original,
             harmonic_rms=np.array([1e-5, 2e-5, 0.0, 1e-5]), noise_rms=np.full(4, 0.01))
    np.savez(tmp_path / 'old.npz', audio=original, resynthesis=original)
    alive = bench_parity.synth_balance(tmp_path / 'alive.npz')
    assert alive['harmonic_db'] == pytest.approx(-6.02, abs=0.01)
    assert alive['noise_db'] == pytest.approx(-40.0, abs=0.01)
    assert alive['harmonic_collapsed'] is False
    dead = bench_parity.synth_balance(tmp_path / 'dead.npz')
    assert dead['harmonic_db'] < -70 and dead['harmonic_collapsed'] is True
    assert dead['noise_db'] == pytest.approx(-20.0, abs=0.01)
    assert bench_parity.synth_balance(tmp_path / 'old.npz') == {}  # a run from before


def test_reports_are_strict_json_with_null_for_a_metric_that_has_no_value(tmp_path):
    """A collapsed model has no f0 L1 (NaN): the report says null, which every JSON reader
    takes, instead of Python's NaN."""
    import json

    from benchmarks import common

    report = {'curves': {'ours': [{'step': 250, 'eval_f0_l1_semitones': float('nan'),
                                   'loss': 11.7, 'gain': float('-inf')}]},
              'pair': (1.0, float('inf'))}
    path = common.write_json(tmp_path / 'r' / 'report.json', report)
    text = path.read_text()
    assert 'NaN' not in text and 'Infinity' not in text
    back = json.loads(text, parse_constant=lambda name: pytest.fail(f'{name} in the JSON'))
    assert back == {'curves': {'ours': [{'step': 250, 'eval_f0_l1_semitones': None,
                                         'loss': 11.7, 'gain': None}]},
                    'pair': [1.0, None]}


def _report(tmp_path, name, settings=None, examples=56, sha=None, voiced=10374.0):
    import json

    eval_data = {'examples': examples, **({'sha256': sha} if sha else {})}
    report = {'settings': {'batch_size': 8, 'learning_rate': 3e-4, 'steps': 1000, 'every': 250,
                           'example_secs': 4, 'crepe_capacity': 'tiny', 'metric_examples': 16,
                           **(settings or {})},
              'data': {'eval': eval_data},
              'curves': {'reference': [{'step': s, 'reference_spectral_loss': 9.0 - s / 1000,
                                        'eval_voiced_frames': voiced} for s in (250, 500)]}}
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return path, report


def test_a_run_of_ours_borrows_the_reference_curve_of_an_earlier_report_on_the_same_data(
        tmp_path):
    path, earlier = _report(tmp_path, 'earlier.json')
    settings = dict(earlier['settings'], steps=500, our_seed=2, our_warmup_steps=100)
    ours = [{'step': 250, 'eval_voiced_frames': 10374.0}]
    rows, seed = bench_parity.borrowed_reference(path, settings, {'eval': {'examples': 56}}, ours)
    assert [r['reference_spectral_loss'] for r in rows] == [8.75, 8.5]
    assert seed is None  # a report from before --ref_seed, or an unseeded reference
    # With fingerprints on both sides, they decide; the seed of a seeded reference comes along.
    path, _ = _report(tmp_path, 'hashed.json', sha='ab' * 32, settings={'reference_seed': 4})
    assert bench_parity.borrowed_reference(
        path, settings, {'eval': {'examples': 56, 'sha256': 'ab' * 32}}, ours) == (rows, 4)


@pytest.mark.parametrize('change, message', [
    ({'settings': {'learning_rate': 1e-3}}, 'learning_rate: 0.001 there, 0.0003 here'),
    ({'examples': 55}, 'judged 55 held-out examples, this run 56'),
    ({'voiced': 9000.0}, 'the held-out originals differ'),
    ({'sha': 'cd' * 32}, 'other held-out examples'),
])
def test_borrowing_a_reference_curve_is_refused_for_other_settings_or_other_data(
        tmp_path, change, message):
    path, _ = _report(tmp_path, 'earlier.json', **change)
    settings = {'batch_size': 8, 'learning_rate': 3e-4, 'steps': 1000, 'every': 250,
                'example_secs': 4, 'crepe_capacity': 'tiny', 'metric_examples': 16}
    mine = {'examples': 56, **({'sha256': 'ab' * 32} if 'sha' in change else {})}
    with pytest.raises(SystemExit, match=re.escape(message)):
        bench_parity.borrowed_reference(path, settings, {'eval': mine},
                                        [{'step': 250, 'eval_voiced_frames': 10374.0}])


def test_every_stage_records_its_command_for_the_report(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(bench_parity, 'stage_resynth', lambda args: calls.append('resynth'))
    monkeypatch.setattr(bench_parity.sys, 'argv', ['bench_parity.py', 'resynth', '--seed', '3'])
    for _ in range(2):
        assert bench_parity.main(['resynth', '--out', str(tmp_path)]) == 0
    stages = bench_parity._stage_commands(tmp_path)
    assert calls == ['resynth', 'resynth']
    assert [s['stage'] for s in stages] == ['resynth', 'resynth']
    assert stages[0]['command'].endswith('bench_parity.py resynth --seed 3')


@pytest.mark.slow
def test_a_seeded_reference_process_draws_the_same_numbers_and_gets_the_rest_of_its_command(
        tmp_path):
    """``--ref_seed``'s launcher, with a stand-in for the reference's ddsp_run that prints its
    command line and the first numbers of TensorFlow's and NumPy's generators."""
    import json
    import subprocess
    import sys

    run = tmp_path / 'ddsp' / 'training'
    run.mkdir(parents=True)
    for init in (tmp_path / 'ddsp' / '__init__.py', run / '__init__.py'):
        init.write_text('')
    (run / 'ddsp_run.py').write_text(
        'import json, sys\nimport numpy as np\nimport tensorflow as tf\n'
        'def console_entry_point():\n'
        '    print(json.dumps({"argv": sys.argv[1:], "tf": float(tf.random.uniform(())),\n'
        '                      "np": float(np.random.rand())}))\n')

    def launch(seed):
        cmd = [sys.executable, *bench_parity.reference_launcher(seed), '--mode=train', '--x=1']
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={'PYTHONPATH': str(tmp_path), 'TF_CPP_MIN_LOG_LEVEL': '2',
                                   'PATH': '/usr/bin:/bin'})
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, again, other = launch(7), launch(7), launch(8)
    assert first['argv'] == ['--mode=train', '--x=1']
    assert first == again
    assert first['tf'] != other['tf'] and first['np'] != other['np']
    assert bench_parity.reference_launcher(None) == ['-m', 'ddsp.training.ddsp_run']
