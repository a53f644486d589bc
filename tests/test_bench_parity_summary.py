"""bench_parity_summary: several parity reports pooled per checkpoint (made-up reports: no
training here)."""

import json
import re

import pytest

from benchmarks import bench_parity_summary as S

SETTINGS = {'batch_size': 8, 'learning_rate': 3e-4, 'steps': 1000, 'every': 250,
            'example_secs': 4, 'crepe_capacity': 'tiny', 'metric_examples': 16}


def _curve(losses, collapsed=()):
    return [{'step': 250 * (i + 1), 'reference_spectral_loss': v, 'eval_voiced_frames': 100.0,
             'harmonic_collapsed': i in collapsed} for i, v in enumerate(losses)]


def _write(tmp_path, name, ours, reference, seed=0, warmup=100, sha='ab' * 32, **settings):
    report = {'settings': {**SETTINGS, 'our_seed': seed, 'our_warmup_steps': warmup, **settings},
              'data': {'eval': {'examples': 56, 'sha256': sha}},
              'curves': {'ours': _curve(ours), 'reference': reference}}
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return path


def test_runs_are_pooled_per_checkpoint_with_a_borrowed_reference_curve_counted_once(tmp_path):
    ref1, ref2 = _curve([10.0, 9.0]), _curve([12.0, 9.5], collapsed=(1,))
    a = _write(tmp_path, 'a.json', [9.0, 8.0], ref1, seed=0)
    b = _write(tmp_path, 'b.json', [11.0, 8.5], ref1, seed=1)  # borrowed ref1 again
    c = _write(tmp_path, 'c.json', [20.0, 20.0], ref2, warmup=0)  # its ours not counted
    out = tmp_path / 'out' / 'summary.json'
    assert S.main(['--ours', str(a), str(b), '--reference', str(c), '--json', str(out)]) == 0
    summary = json.loads(out.read_text())
    assert (tmp_path / 'out' / 'summary.png').stat().st_size > 10_000
    assert [r['seed'] for r in summary['runs']['ours']] == [0, 1]
    assert [r['source'] for r in summary['runs']['reference']] == [str(a), str(c)]
    first, last = summary['checkpoints']
    assert first['step'] == 250 and last['step'] == 500
    assert first['ours']['mean'] == pytest.approx(10.0)
    assert first['ours']['min'] == 9.0 and first['ours']['max'] == 11.0
    assert first['ours']['std'] == pytest.approx(2 ** 0.5)
    assert first['reference']['mean'] == pytest.approx(11.0)
    assert first['ours_mean_over_reference_mean'] == pytest.approx(10 / 11)
    assert first['ours_worst_over_reference_best'] == pytest.approx(11 / 10)
    assert last['ours_mean_over_reference_mean'] == pytest.approx(8.25 / 9.25)
    assert last['within_3_percent_or_better'] is True
    assert last['reference']['collapsed'] == 1 and last['ours']['collapsed'] == 0


def test_the_markdown_table_reads_the_pooled_figures(tmp_path):
    runs = S.pool({'a': json.loads(_write(tmp_path, 'a.json', [9.0, 8.0],
                                          _curve([10.0, 9.0])).read_text())}, {})
    text = S.markdown(S.per_checkpoint(runs))
    assert '| 250 | 9.00 (9.00-9.00) | 10.00 (10.00-10.00) | 0.900 | 0 / 0 |' in text


@pytest.mark.parametrize('change, message', [
    ({'learning_rate': 1e-3}, 'learning_rate: 0.001 there, 0.0003 here'),
    ({'sha': 'cd' * 32}, 'other held-out examples'),
    ({'warmup': 0}, 'different warm-ups'),
])
def test_reports_made_otherwise_are_refused_naming_them(tmp_path, change, message):
    a = _write(tmp_path, 'a.json', [9.0, 8.0], _curve([10.0, 9.0]))
    b = _write(tmp_path, 'b.json', [9.5, 8.5], _curve([10.0, 9.0]), **change)
    with pytest.raises(SystemExit, match=re.escape(message)) as e:
        S.main(['--ours', str(a), str(b), '--json', str(tmp_path / 's.json')])
    assert 'warm-ups' in message or str(b) in str(e.value)
    assert not (tmp_path / 's.json').exists()


def test_a_file_that_is_not_a_report_is_named(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('{"curves": {"ours": [{"step": 250}]}, "settings": {}}')
    with pytest.raises(SystemExit, match=re.escape(f'{bad}: a ours row without a step')):
        S.main(['--ours', str(bad), '--json', str(tmp_path / 's.json')])
