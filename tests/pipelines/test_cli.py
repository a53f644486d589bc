"""ddsp-prepare command line: help, usage errors (exit 2) naming the option or pattern."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pipelines import prepare_dataset as prep


def test_help_shows_options_and_dataflow_usage(capsys):
    assert prep.main(['--help']) == 0
    out = capsys.readouterr().out
    for flag in ('--input', '--output_dir', '--sample_rate', '--frame_rate', '--crepe_capacity',
                 '--viterbi', '--inference_batch_size', '--chunk_secs', '--example_secs',
                 '--hop_secs', '--eval_fraction', '--drop_silence_db', 'DataflowRunner',
                 '--temp_location', '--setup_file'):
        assert flag in out, flag


def test_module_entry_point_runs():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, '-m', 'pipelines.prepare_dataset', '--help'],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and 'ddsp-prepare' in proc.stdout


def test_missing_required_flags_is_usage_error(capsys):
    assert prep.main([]) == 2
    assert '--input' in capsys.readouterr().err


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / 'in' / 'a.wav'
    path.parent.mkdir()
    sf.write(str(path), np.zeros(1600, np.float32), 16000)
    return str(path)


@pytest.mark.parametrize('extra,needle', [
    (['--frame_rate', '300'], '--frame_rate'),
    (['--chunk_secs', '2.5'], '--chunk_secs'),
    (['--crepe_capacity', 'huge'], '--crepe_capacity'),
    (['--eval_fraction', '2'], '--eval_fraction'),
    (['--sample_rate_typo', '8000'], '--sample_rate_typo'),
])
def test_bad_options_exit_2_and_name_the_option(tmp_path, wav, capsys, extra, needle):
    code = prep.main(['--input', wav, '--output_dir', str(tmp_path / 'out')] + extra)
    assert code == 2
    assert needle in capsys.readouterr().err


def test_pattern_matching_nothing_exits_2_and_names_it(tmp_path, capsys):
    pattern = str(tmp_path / 'nothing' / '*.wav')
    assert prep.main(['--input', pattern, '--output_dir', str(tmp_path / 'out')]) == 2
    assert pattern in capsys.readouterr().err


def test_expand_inputs_dedupes_and_keys_relative_to_pattern(tmp_path):
    for name in ('x/a.wav', 'x/sub/b.wav', 'x/c.flac'):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b'x')
    base = str(tmp_path / 'x')
    files = prep.expand_inputs([f'{base}/*.wav,{base}/*.flac', f'{base}/a.wav',
                                f'{base}/sub/*.wav'])
    assert [k for _, k in files] == ['a.wav', 'c.flac', 'b.wav']
    assert len({p for p, _ in files}) == 3


def test_dead_letter_records_name_the_file_and_reason():
    from apache_beam.ml.inference.base import PredictionResult

    err = (ValueError, "ValueError('x.wav: bad header')", ['tb'])
    assert prep._dead_letter(('/d/x.wav', 'x.wav'), err, 'decode') == {
        'path': '/d/x.wav', 'stage': 'decode', 'error': 'ValueError',
        'reason': 'x.wav: bad header'}
    chunk = {'path': '/d/y.wav', 'audio': np.zeros(3)}
    assert prep._dead_letter(chunk, err, 'crepe')['path'] == '/d/y.wav'
    result = PredictionResult(chunk, np.zeros((1, 360)))
    letter = prep._dead_letter(result, RuntimeError('boom'), 'examples')
    assert letter == {'path': '/d/y.wav', 'stage': 'examples', 'error': 'RuntimeError',
                      'reason': 'boom'}


def test_silent_file_becomes_a_dead_letter_only_without_examples():
    opts = prep.PrepareOptions()
    assert list(prep._silent_file_letter(('/a.wav', (2, 1)), opts)) == []
    (letter,) = prep._silent_file_letter(('/b.wav', (0, 3)), opts)
    assert letter['path'] == '/b.wav' and 'all 3 windows are silent' in letter['reason']
