"""ddsp-prepare command line: help, usage errors (exit 2) naming the option or pattern, a quiet
real run with a summary."""

import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pipelines import prepare_dataset as prep
from pipelines import prepare_steps as steps


def test_help_shows_options_and_dataflow_usage(capsys):
    assert prep.main(['--help']) == 0
    out = capsys.readouterr().out
    for flag in ('--input', '--output_dir', '--sample_rate', '--frame_rate', '--crepe_capacity',
                 '--viterbi', '--inference_batch_size', '--chunk_secs', '--example_secs',
                 '--hop_secs', '--eval_fraction', '--drop_silence_db', '--min_secs',
                 '--num_shards', '--reference_layout', '--overwrite', '--verbose',
                 'DataflowRunner', '--temp_location', '--setup_file'):
        assert flag in out, flag


def _help_of(out, flag):
    """The help text of one option, joined onto one line."""
    m = re.search(rf'^  {re.escape(flag)}\b(.*?)(?=^  -)', out, re.S | re.M)
    assert m, flag
    return ' '.join(m.group(1).split())


def test_help_shows_the_defaults(capsys):
    assert prep.main(['--help']) == 0
    out = capsys.readouterr().out
    d = prep.PrepareOptions()
    for flag, default in (('--sample_rate', d.sample_rate), ('--frame_rate', d.frame_rate),
                          ('--example_secs', d.example_secs), ('--hop_secs', d.hop_secs),
                          ('--chunk_secs', d.chunk_secs), ('--eval_fraction', d.eval_fraction),
                          ('--crepe_capacity', d.crepe_capacity),
                          ('--inference_batch_size', d.inference_batch_size),
                          ('--drop_silence_db', d.drop_silence_db),
                          ('--min_secs', d.min_secs), ('--num_shards', d.num_shards),
                          ('--viterbi', d.viterbi)):
        assert f'(default: {default})' in _help_of(out, flag), flag
    # flags that are off and required options show no default
    assert 'default' not in _help_of(out, '--overwrite')
    assert 'default' not in _help_of(out, '--output_dir')


def test_module_entry_point_runs():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, '-m', 'pipelines.prepare_dataset', '--help'],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and 'ddsp-prepare' in proc.stdout
    assert '(default: 16000)' in proc.stdout and '--drop_silence_db' in proc.stdout


def test_missing_required_flags_is_usage_error(capsys):
    assert prep.main([]) == 2
    assert '--input' in capsys.readouterr().err


def test_verify_reports_a_flipped_byte_by_shard_name(tmp_path, capsys):
    from ddsp_core import records
    from trainer import testing

    shards = testing.write_dataset(tmp_path, records.Layout(16000, 250, 0.1), n_examples=4,
                                   n_shards=2)
    assert prep.main(['--verify', str(tmp_path)]) == 0
    assert f'all 2 shards match {tmp_path}/manifest.json (sizes and SHA-256' in \
        capsys.readouterr().err
    with open(shards[1], 'r+b') as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0x10]))
    assert prep.main(['--verify', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f'ddsp-prepare: {shards[1]}: SHA-256 ' in err
    assert 'first damaged record at byte 0 (corrupted record at' in err
    assert shards[0] not in err and '1 of 2 shards are missing or damaged' in err
    assert prep.main(['--verify', str(tmp_path / 'nothing')]) == 2
    assert 'nothing/manifest.json: no such file' in capsys.readouterr().err


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
    (['--crepe_precision', 'half'], '--crepe_precision'),
    (['--f0_hop_ms', '7.5'], '--f0_hop_ms'),
    (['--eval_fraction', '2'], '--eval_fraction'),
    (['--sample_rate_typo', '8000'], '--sample_rate_typo'),
])
def test_bad_options_exit_2_and_name_the_option(tmp_path, wav, capsys, extra, needle):
    code = prep.main(['--input', wav, '--output_dir', str(tmp_path / 'out')] + extra)
    assert code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize('value', ['loud', '70 dB', ''])
def test_drop_silence_db_that_is_no_number_exits_2_saying_what_it_must_be(tmp_path, wav, capsys,
                                                                         value):
    code = prep.main(['--input', wav, '--output_dir', str(tmp_path / 'out'),
                      '--drop_silence_db', value])
    assert code == 2
    err = capsys.readouterr().err
    assert '--drop_silence_db' in err and repr(value) in err
    assert 'dB' in err and '"none"' in err
    assert not (tmp_path / 'out').exists()  # nothing was started


def test_drop_silence_db_none_keeps_every_window():
    args, _ = prep.build_arg_parser().parse_known_args(
        ['--input', 'x', '--output_dir', 'y', '--drop_silence_db', 'none'])
    assert args.drop_silence_db is None


def test_existing_dataset_exits_2_unless_overwrite(tmp_path, wav, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'manifest.json').write_text(json.dumps({'schema_version': 2}))
    assert prep.main(['--input', wav, '--output_dir', str(out)]) == 2
    err = capsys.readouterr().err
    assert f'--output_dir {out} already holds a dataset (manifest.json)' in err
    assert '--overwrite' in err
    assert json.loads((out / 'manifest.json').read_text()) == {'schema_version': 2}


def test_pattern_matching_nothing_exits_2_and_names_it(tmp_path, capsys):
    pattern = str(tmp_path / 'nothing' / '*.wav')
    assert prep.main(['--input', pattern, '--output_dir', str(tmp_path / 'out')]) == 2
    assert pattern in capsys.readouterr().err


def test_dead_letter_records_name_the_file_and_reason():
    from apache_beam.ml.inference.base import PredictionResult

    err = (ValueError, "ValueError('x.wav: bad header')", ['tb'])
    assert steps.dead_letter(('/d/x.wav', 'x.wav'), err, 'decode') == {
        'path': '/d/x.wav', 'stage': 'decode', 'error': 'ValueError',
        'reason': 'x.wav: bad header'}
    chunk = {'path': '/d/y.wav', 'audio': np.zeros(3)}
    assert steps.dead_letter(chunk, err, 'crepe')['path'] == '/d/y.wav'
    result = PredictionResult(chunk, np.zeros((1, 360)))
    letter = steps.dead_letter(result, RuntimeError('boom'), 'examples')
    assert letter == {'path': '/d/y.wav', 'stage': 'examples', 'error': 'RuntimeError',
                      'reason': 'boom'}


def test_silent_file_becomes_a_dead_letter_only_without_examples():
    opts = prep.PrepareOptions()
    assert list(steps.silent_file_letter(('/a.wav', (2, 1)), opts)) == []
    (letter,) = steps.silent_file_letter(('/b.wav', (0, 3)), opts)
    assert letter['path'] == '/b.wav' and 'all 3 windows are silent' in letter['reason']


# ---- a real run (the shared ``cli_run`` fixture: python -m pipelines.prepare_dataset) ---------
TF_STARTUP_NOISE = ('cuInit', 'oneDNN', 'absl::InitializeLog', 'cuda drivers', 'cpu_feature_guard',
                    'I0000', 'E0000', 'W0000', 'TF_ENABLE_ONEDNN_OPTS')


@pytest.mark.slow
def test_real_run_is_quiet_and_prints_a_summary(cli_run):
    assert cli_run.returncode == 0, cli_run.stderr[-3000:]
    err = cli_run.stderr
    for needle in TF_STARTUP_NOISE:
        assert needle not in err, (needle, err)
    assert 'apache_beam' not in err  # Beam's own notes only with --verbose
    lines = err.splitlines()
    assert lines[0].startswith('ddsp-prepare: 1 pattern(s) -> ' + cli_run.output_dir)
    assert 'CREPE tiny' in lines[0]
    assert re.search(r'^ddsp-prepare: 2 examples \(0\.002 h\) from 2/2 files in [\d.]+ s -> ',
                     err, re.M), err
    assert re.search(r'^  train: 1 examples, 1 files, 1 shard$', err, re.M), err
    assert re.search(r'^  eval: 1 examples, 1 files, 1 shard$', err, re.M), err
    with open(os.path.join(cli_run.output_dir, 'manifest.json')) as f:
        manifest = json.load(f)
    assert {s: manifest['splits'][s]['examples'] for s in ('train', 'eval')} == \
        {'train': 1, 'eval': 1}
    # each shard's size and SHA-256 as written, and --verify finds them so
    for split in ('train', 'eval'):
        (name,) = manifest['splits'][split]['shards']
        path = os.path.join(cli_run.output_dir, name)
        with open(path, 'rb') as f:
            body = f.read()
        assert manifest['splits'][split]['shard_files'] == {
            name: {'bytes': len(body), 'sha256': hashlib.sha256(body).hexdigest()}}
    assert prep.verify_main(cli_run.output_dir) == 0
    assert cli_run.stdout == ''  # everything goes to stderr
