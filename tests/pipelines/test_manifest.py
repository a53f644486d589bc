"""The ledger (files.jsonl) and manifest.json built from what the pipeline gathered."""

import dataclasses
import functools
import json
import math

import numpy as np
import pytest

from ddsp_core import records
from pipelines import manifest, stats
from pipelines.inputs import DIRECTORY, FILE, InputEntry, assign_split
from pipelines.options import PrepareOptions

OPTS = PrepareOptions(crepe_capacity='tiny', chunk_secs=3.0, drop_silence_db=None)


def _stats(loud, conf, f0, digest=0):
    ex = {'loudness_db': np.asarray(loud, np.float32),
          'f0_confidence': np.asarray(conf, np.float32), 'f0_hz': np.asarray(f0, np.float32)}
    out = stats.example_stats('train', ex, digest)
    del out['split']
    return out


def _acc(train=(), eval_=()):
    acc = {s: stats.empty_split_stats() for s in records.SPLITS}
    acc['train'] = functools.reduce(stats.merge_split_stats, train, acc['train'])
    acc['eval'] = functools.reduce(stats.merge_split_stats, eval_, acc['eval'])
    return acc


ENTRIES = [InputEntry('/x/a.wav', 'a.wav'), InputEntry('/x/b.wav', 'b.wav'),
           InputEntry('/x/c.wav', 'c.wav'), InputEntry('/x/sub', 'sub', DIRECTORY)]
DECODED = [{'path': '/x/a.wav', 'key': 'a.wav', 'split': 'train', 'seconds': 3.0,
            'sha256': 'aa'},
           {'path': '/x/c.wav', 'key': 'c.wav', 'split': 'train', 'seconds': 30.0,
            'sha256': 'cc'}]
DEAD = [{'path': '/x/b.wav', 'stage': 'decode', 'error': 'BadInputError',
         'reason': '/x/b.wav: unreadable or corrupt audio'},
        # c.wav wrote two examples, then one of its chunks failed
        {'path': '/x/c.wav', 'stage': 'crepe', 'error': 'RuntimeError', 'reason': 'boom'}]
COUNTS = {'/x/a.wav': (1, 2), '/x/c.wav': (2, 0)}


def _ledger(entries=ENTRIES, decoded=DECODED, counts=COUNTS, dead=DEAD, opts=OPTS):
    return manifest.build_ledger(entries, decoded, counts, dead, opts)


def test_ledger_has_one_line_per_matched_entry_with_its_outcome():
    ledger = _ledger(entries=list(reversed(ENTRIES)))
    assert [line['path'] for line in ledger] == ['/x/a.wav', '/x/b.wav', '/x/c.wav', '/x/sub']
    by = {line['path']: line for line in ledger}
    assert by['/x/a.wav'] == {
        'path': '/x/a.wav', 'key': 'a.wav', 'split': 'train', 'outcome': manifest.WRITTEN,
        'examples': 1, 'example_seconds': 4.0, 'source_seconds': 3.0,
        'windows_dropped_silent': 2, 'sha256': 'aa', 'reasons': []}
    b = by['/x/b.wav']
    assert b['outcome'] == manifest.DEAD and b['examples'] == 0
    assert b['reasons'] == ['decode: /x/b.wav: unreadable or corrupt audio']
    # a dead-lettered file's split is still the one its key hashes to
    assert b['split'] == assign_split('b.wav', OPTS.eval_fraction)
    assert b['source_seconds'] is None and b['sha256'] is None
    # examples and a dead letter: partially written
    c = by['/x/c.wav']
    assert c['outcome'] == manifest.PARTIAL and c['examples'] == 2
    assert c['reasons'] == ['crepe: boom']
    d = by['/x/sub']
    assert d['outcome'] == manifest.SKIPPED and d['split'] is None
    assert d['reasons'] == ['skipped: directory'] and d['examples'] == 0
    assert all(json.loads(json.dumps(line)) == line for line in ledger)  # JSON-ready


def test_a_file_with_neither_examples_nor_dead_letter_is_reported_not_hidden():
    (line,) = _ledger(entries=[InputEntry('/x/a.wav', 'a.wav')], counts={}, dead=[])
    assert line['outcome'] == manifest.DEAD
    assert 'internal error' in line['reasons'][0]


def test_build_manifest_reconciles_and_fingerprints_content():
    acc = _acc(train=[_stats([-10], [1], [440], 11), _stats([-20], [1], [440], 12),
                      _stats([-30], [1], [440], 13)])
    ledger = _ledger()
    shards = {'train': ['/out/train-00000-of-00001.tfrecord'],
              'eval': ['eval-00000-of-00001.tfrecord']}
    m = manifest.build_manifest(OPTS, ['/x/*'], ledger, acc, shards, len(DEAD))
    assert m['files'] == {'matched': 4, 'in': 3, 'skipped_directories': 1, 'written': 1,
                          'partially_written': 1, 'dead_lettered': 1, 'reconciled': True,
                          'ledger': records.LEDGER}
    assert m['examples'] == 3 == sum(line['examples'] for line in ledger)
    assert m['dead_letters'] == 2
    assert m['splits']['train']['shards'] == ['train-00000-of-00001.tfrecord']
    assert m['splits']['eval']['shards'] == ['eval-00000-of-00001.tfrecord']
    assert m['splits']['train']['files'] == 2 and m['splits']['eval']['files'] == 0
    assert m['splits']['eval']['examples'] == 0
    # the partially written file's examples and source seconds count
    assert math.isclose(m['source_hours'], 33.0 / 3600)
    assert math.isclose(m['splits']['train']['source_hours'], 33.0 / 3600)
    assert math.isclose(m['hours'], 12.0 / 3600)
    assert m['windows_dropped_silent'] == 2
    assert m['mean_loudness_db'] == pytest.approx(-20.0)
    assert m['std_loudness_db'] == pytest.approx(np.std([-10, -20, -30]))
    assert m['f0_range_hz'] == [pytest.approx(440.0, rel=0.006)] * 2
    voiced = m['splits']['train']['loudness_db']['voiced_percentiles']
    assert len(voiced) == 101 and voiced[0] == -30.0 and voiced[100] == -9.75
    assert m['splits']['eval']['loudness_db']['voiced_percentiles'] is None
    # layout fields that ddsp_core.records reads back
    assert m['schema_version'] == records.SCHEMA_VERSION
    assert (m['sample_rate'], m['frame_rate'], m['example_secs']) == (16000, 250, 4.0)
    assert m['features'] == {'audio': [64000], 'f0_hz': [1000], 'f0_confidence': [1000],
                             'loudness_db': [1000]}
    assert m['options'] == OPTS.to_dict() and m['inputs'] == ['/x/*']
    records.validate_manifest(json.loads(json.dumps(m)), 'built')
    assert m['fingerprint'] == records.fingerprint(OPTS.layout, {'train': 36, 'eval': 0})


def test_manifest_does_not_reconcile_when_examples_or_outcomes_disagree():
    acc = _acc(train=[_stats([-10], [1], [440])] * 3)
    ledger = _ledger()
    # the shards hold one example more than the ledger accounts for
    more = _acc(train=[_stats([-10], [1], [440])] * 4)
    assert manifest.build_manifest(OPTS, ['/x/*'], ledger, acc, {}, 2)['files']['reconciled']
    assert not manifest.build_manifest(OPTS, ['/x/*'], ledger, more, {}, 2)['files'][
        'reconciled']
    odd = [dict(line) for line in ledger]
    odd[0]['outcome'] = 'lost'
    assert not manifest.build_manifest(OPTS, ['/x/*'], odd, acc, {}, 2)['files']['reconciled']


def test_fingerprint_changes_with_content_and_layout_not_with_paths():
    acc = _acc(train=[_stats([-10], [1], [440], 11)])
    m = manifest.build_manifest(OPTS, ['/x/*'], _ledger(), acc, {}, 2)
    acc2 = _acc(train=[_stats([-10], [1], [440], 11), _stats([-5], [1], [1], 7)])
    assert manifest.build_manifest(OPTS, ['/x/*'], _ledger(), acc2, {}, 2)['fingerprint'] != \
        m['fingerprint']
    moved = manifest.build_manifest(OPTS, ['/elsewhere/*'], _ledger(), acc, {}, 2)
    assert moved['fingerprint'] == m['fingerprint']
    # the same record in the other split is another dataset
    swapped = _acc(eval_=[_stats([-10], [1], [440], 11)])
    assert manifest.build_manifest(OPTS, ['/x/*'], _ledger(), swapped, {}, 2)['fingerprint'] \
        != m['fingerprint']
    at48 = dataclasses.replace(OPTS, sample_rate=48000)
    assert manifest.build_manifest(at48, ['/x/*'], _ledger(opts=at48), acc, {}, 2)[
        'fingerprint'] != m['fingerprint']


def test_manifest_of_an_all_dead_run_has_empty_splits():
    entries = [InputEntry('/x/b.wav', 'b.wav', FILE)]
    ledger = _ledger(entries=entries, decoded=[], counts={}, dead=DEAD[:1])
    m = manifest.build_manifest(OPTS, ['/x/*'], ledger, _acc(), {}, 1)
    assert m['examples'] == 0 and m['files']['dead_lettered'] == 1
    assert m['files']['reconciled'] is True
    assert m['mean_loudness_db'] is None and m['f0_range_hz'] == [None, None]
    json.dumps(m, allow_nan=False)  # no NaN/Infinity in the JSON


def test_a_segmented_file_lists_its_eval_blocks_and_counts_in_both_splits():
    from pipelines import splitting

    opts = dataclasses.replace(OPTS, split_by='segment')
    n = 600 * 16000
    plan = splitting.plan_file('long.wav', n, opts, splitting.SEGMENT)
    info = splitting.describe(plan, n, opts)
    decoded = [{'path': '/x/long.wav', 'key': 'long.wav', 'split': plan.split,
                'seconds': 600.0, 'sha256': 'll', **info}]
    counts = plan.counts()
    (line,) = manifest.build_ledger([InputEntry('/x/long.wav', 'long.wav')], decoded,
                                    {'/x/long.wav': (counts['train'] + counts['eval'], 0,
                                                     counts['eval'])}, [], opts)
    assert line['split'] == 'segmented' and line['eval_examples'] == counts['eval'] == 54
    assert line['eval_blocks'] == info['eval_blocks'] and len(line['eval_blocks']) == 2
    assert line['guard_windows'] == counts['guard'] and line['guard_seconds'] == 16.0
    out = manifest.build_manifest(opts, ['/x/*.wav'], [line], _acc(), {}, 0,
                                  split_method=splitting.SEGMENT)
    assert out['split'] == {
        'method': 'segment', 'split_by': 'segment', 'seed': 0, 'eval_fraction': 0.1,
        'held_out_seconds': 60.0, 'guard_secs': 4.0, 'guard_seconds': 16.0,
        'guard_windows': counts['guard'], 'files_segmented': 1}
    assert out['splits']['eval']['files'] == out['splits']['train']['files'] == 1
    assert out['splits']['eval']['source_hours'] == pytest.approx(60 / 3600)
    assert out['splits']['train']['source_hours'] == pytest.approx((600 - 60 - 16) / 3600)
    from pipelines.prepare_dataset import _summary_lines

    assert ('  split by segment (1 file holds out blocks): 60.0 s held out, 16.0 s of guard in '
            'neither split') in list(_summary_lines(out, '/out'))


def test_build_manifest_records_each_shards_size_and_digest_in_its_split():
    acc = _acc(train=[_stats([-10], [1], [440], 11)])
    shards = {'train': ['/out/train-00000-of-00001.tfrecord'],
              'eval': ['eval-00000-of-00001.tfrecord']}
    checks = {'train-00000-of-00001.tfrecord': {'bytes': 120, 'sha256': 'ab' * 32},
              'eval-00000-of-00001.tfrecord': {'bytes': 0, 'sha256': 'cd' * 32}}
    m = manifest.build_manifest(OPTS, ['/x/*'], _ledger(), acc, shards, 2, shard_files=checks)
    assert m['splits']['train'][records.SHARD_FILES] == {
        'train-00000-of-00001.tfrecord': {'bytes': 120, 'sha256': 'ab' * 32}}
    assert m['splits']['eval'][records.SHARD_FILES] == {
        'eval-00000-of-00001.tfrecord': {'bytes': 0, 'sha256': 'cd' * 32}}
    read = records.Manifest(records.validate_manifest(json.loads(json.dumps(m)), 'm'), '/out/m')
    assert read.shard_file('/out/train-00000-of-00001.tfrecord')['bytes'] == 120
    # the fingerprint is of the records, not of how they were framed in files
    assert m['fingerprint'] == manifest.build_manifest(OPTS, ['/x/*'], _ledger(), acc, shards,
                                                       2)['fingerprint']


@pytest.mark.parametrize('precision,hop_ms', [('bfloat16', None), ('float32', 10.0)])
def test_manifest_says_how_f0_was_tracked(precision, hop_ms):
    opts = dataclasses.replace(OPTS, crepe_precision=precision, f0_hop_ms=hop_ms)
    acc = _acc(train=[_stats([-10], [1], [440])] * 3)
    m = manifest.build_manifest(opts, ['/x/*'], _ledger(), acc, {}, 2,
                                crepe_frames={precision: 700})
    assert m['f0'] == {'capacity': 'tiny', 'precision': precision, 'viterbi': True,
                       'hop_ms': hop_ms, 'frames_by_precision': {precision: 700}}


def test_manifest_says_what_the_workers_resolved_auto_to_mixed_included():
    """--crepe_precision auto is resolved per worker: the manifest's f0 block says what they ran,
    and says 'mixed' (with the frames of each) when workers of different hardware disagreed."""
    opts = dataclasses.replace(OPTS, crepe_precision='auto')
    block = manifest.f0_block(opts, {'bfloat16': 500, 'float32': 0})
    assert block['precision'] == 'bfloat16' and block['frames_by_precision'] == {'bfloat16': 500}
    block = manifest.f0_block(opts, {'float32': 200, 'bfloat16': 500})
    assert block['precision'] == 'mixed'
    assert list(block['frames_by_precision'].items()) == [('bfloat16', 500), ('float32', 200)]
    assert manifest.f0_block(opts)['precision'] == 'auto'  # no frame analysed: the option
