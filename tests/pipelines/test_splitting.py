"""The eval split as pure functions (pipelines.splitting): method, shares, guard, determinism.

Tolerance: with the defaults (eval_fraction 0.1, 4 s examples every 1 s), every data set below
gets an eval share of its examples within [0.5, 1.5] x the fraction (5-15 %).
"""

import dataclasses

import pytest

from pipelines import splitting
from pipelines.options import OptionError, PrepareOptions

OPTS = PrepareOptions()
FRACTION = OPTS.eval_fraction
LOW, HIGH = 0.5 * FRACTION, 1.5 * FRACTION


def _plans(files, opts=OPTS):
    """method, plans of (key, seconds) files."""
    method = splitting.choose_method([k for k, _ in files], opts)
    return method, [splitting.plan_file(k, int(s * opts.sample_rate), opts, method)
                    for k, s in files]


def _share(plans):
    counts = [p.counts() for p in plans]
    n_eval = sum(c['eval'] for c in counts)
    n_train = sum(c['train'] for c in counts)
    return n_eval, n_train, n_eval / (n_eval + n_train)


def test_one_30_s_file_holds_out_at_least_one_example_wherever_it_goes():
    shares = []
    for i in range(100):
        method, plans = _plans([(f'take{i}.wav', 30.0)])
        assert method == splitting.SEGMENT
        n_eval, n_train, share = _share(plans)
        assert n_eval >= 1 and n_train >= 10
        shares.append(share)
    assert LOW <= min(shares) and max(shares) <= HIGH


def test_one_ten_minute_file_holds_out_6_to_14_percent_in_several_blocks():
    method, (plan,) = _plans([('concert.wav', 600.0)])
    assert method == splitting.SEGMENT and len(plan.blocks) == 2
    n_eval, n_train, share = _share([plan])
    assert 0.06 <= share <= 0.14 and LOW <= share <= HIGH
    # the blocks' audio adds up to the fraction of the file (60 s), no block shorter than a
    # window; they lie in different halves of the file
    info = splitting.describe(plan, 600 * 16000, OPTS)
    assert info['eval_seconds'] == pytest.approx(FRACTION * 600, abs=OPTS.hop_secs)
    assert all(end - start >= OPTS.example_secs for start, end in info['eval_blocks'])
    assert info['eval_blocks'][0][1] <= 300 <= info['eval_blocks'][1][0]
    # each interior block costs one example window of guard audio on each side
    assert info['guard_seconds'] == pytest.approx(2 * len(plan.blocks) * OPTS.example_secs)


@pytest.mark.parametrize('files', [
    [('a.flac', 30.0), ('b.mp3', 25.0)],
    [(f'take{i}.wav', 30.0) for i in range(4)],
])
def test_two_and_four_files_are_split_by_segment_within_tolerance(files):
    method, plans = _plans(files)
    assert method == splitting.SEGMENT  # by file it would be 0 % or >= 25 %
    n_eval, _n_train, share = _share(plans)
    assert n_eval >= len(files) and LOW <= share <= HIGH
    if len(files) == 4:
        assert 0.05 <= share <= 0.20


def test_fifty_short_files_are_split_by_file_within_tolerance():
    files = [(f'note{i:02d}.wav', 6.0) for i in range(50)]
    method, plans = _plans(files)
    assert method == splitting.FILE
    assert {p.split for p in plans} == {'train', 'eval'}
    _n_eval, _n_train, share = _share(plans)
    assert LOW <= share <= HIGH


def test_auto_chooses_by_file_only_when_the_hash_comes_close_to_the_fraction():
    keys = [f'note{i:02d}.wav' for i in range(50)]
    n_eval = sum(splitting.assign_split(k, FRACTION) == 'eval' for k in keys)
    assert splitting.choose_method(keys, OPTS) == splitting.FILE and 3 <= n_eval <= 7
    assert splitting.choose_method(keys[:4], OPTS) == splitting.SEGMENT
    asked = dataclasses.replace(OPTS, split_by='segment')
    assert splitting.choose_method(keys, asked) == splitting.SEGMENT
    asked = dataclasses.replace(OPTS, split_by='file')
    assert splitting.choose_method(['x.wav'], asked) == splitting.FILE
    for fraction in (0.0, 1.0):  # every file goes to one split either way
        assert splitting.choose_method(keys[:2], dataclasses.replace(
            OPTS, eval_fraction=fraction)) == splitting.FILE


def test_a_file_too_short_for_blocks_and_guard_goes_whole_by_its_path_hash():
    for seconds in (4.0, 10.0, 18.0):
        for key in ('a.wav', 'b.wav', 'c.wav', 'take7.wav'):
            plan = splitting.plan_file(key, int(seconds * 16000), OPTS, splitting.SEGMENT)
            assert plan.blocks == () and plan.split == splitting.assign_split(key, FRACTION)
            assert set(plan.labels()) == {plan.split}
    plan = splitting.plan_file('a.wav', 20 * 16000, OPTS, splitting.SEGMENT)
    assert plan.split == splitting.SEGMENTED and plan.counts()['train'] >= 1


@pytest.mark.parametrize('example_secs,hop_secs', [(4.0, 1.0), (4.0, 1.5), (1.0, 0.5),
                                                   (2.0, 2.0), (2.0, 3.0)])
def test_no_train_window_comes_within_one_example_of_an_eval_window(example_secs, hop_secs):
    opts = PrepareOptions(example_secs=example_secs, hop_secs=hop_secs,
                          chunk_secs=6 * hop_secs, eval_fraction=0.2, split_by='segment')
    e, h = opts.example_frames, opts.hop_frames
    segmented = 0
    for i in range(40):
        seconds = 15.0 + 7.3 * i
        plan = splitting.plan_file(f'k{i}', int(seconds * 16000), opts, splitting.SEGMENT)
        labels = plan.labels()
        spans = {s: [(w * h, w * h + e) for w, lab in enumerate(labels) if lab == s]
                 for s in ('train', 'eval')}
        if plan.split != splitting.SEGMENTED:
            continue
        segmented += 1
        assert spans['train'] and spans['eval']
        for lo, hi in spans['train']:
            for elo, ehi in spans['eval']:
                assert hi + e <= elo or ehi + e <= lo  # a whole example of guard between
        # a window is in the guard only when the guard forces it out
        for w, lab in enumerate(labels):
            if lab is None:
                assert any(w * h + 2 * e > elo and w * h < ehi + e
                           for elo, ehi in spans['eval'])
    assert segmented >= 30


def test_the_split_is_a_pure_function_of_key_length_and_options():
    a = splitting.plan_file('dir/take.wav', 300 * 16000, OPTS, splitting.SEGMENT)
    assert a == splitting.plan_file('dir/take.wav', 300 * 16000, OPTS, splitting.SEGMENT)
    moved = [splitting.plan_file(f'dir/take{i}.wav', 300 * 16000, OPTS, splitting.SEGMENT)
             for i in range(5)]
    assert len({p.blocks for p in moved}) > 1  # placed by the key's hash
    seeded = [splitting.plan_file('dir/take.wav', 300 * 16000,
                                  dataclasses.replace(OPTS, split_seed=s), splitting.SEGMENT)
              for s in range(5)]
    assert len({p.blocks for p in seeded}) > 1  # and by the seed
    by_file = splitting.plan_file('dir/take.wav', 300 * 16000, OPTS, splitting.FILE)
    assert by_file.blocks == () and by_file.split == splitting.assign_split('dir/take.wav',
                                                                            FRACTION)


def test_bad_split_options_are_named():
    with pytest.raises(OptionError, match='--split_by'):
        PrepareOptions(split_by='random').validate()
    with pytest.raises(OptionError, match='--split_seed'):
        PrepareOptions(split_seed=-1).validate()


def test_cli_takes_split_by_and_rejects_an_unknown_method(capsys):
    from pipelines.prepare_dataset import build_arg_parser, main

    args = build_arg_parser().parse_args(['--input', 'x', '--output_dir', 'o',
                                          '--split_by', 'segment', '--split_seed', '3'])
    assert (args.split_by, args.split_seed) == ('segment', 3)
    assert build_arg_parser().parse_args(['--input', 'x', '--output_dir', 'o']).split_by == 'auto'
    assert main(['--input', 'x', '--output_dir', 'o', '--split_by', 'random']) == 2
    assert '--split_by' in capsys.readouterr().err


def test_window_labels_agree_with_a_check_against_every_block():
    opts = PrepareOptions(eval_fraction=0.3, example_secs=2.0, hop_secs=0.5, chunk_secs=1.0)
    e, h = opts.example_frames, opts.hop_frames
    plan = splitting.plan_file('long.wav', 900 * 16000, opts, splitting.SEGMENT)
    assert len(plan.blocks) > 10
    for w in range(plan.n_windows):
        spans = [(a * h, (a + k - 1) * h + e) for a, k in plan.blocks]
        if any(a <= w < a + k for a, k in plan.blocks):
            expected = 'eval'
        elif any(w * h + e + e > lo and w * h < hi + e for lo, hi in spans):
            expected = None
        else:
            expected = 'train'
        assert plan.window_split(w) == expected, w
