"""The prepared-dataset contract: layout and the hop rule, deterministic records, the manifest."""

import itertools
import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from ddsp_core import records, shards
from ddsp_core.records import Layout, LayoutError

REF = Layout(16000, 250, 4.0)


def _example(layout, seed=0, order=None):
    rng = np.random.default_rng(seed)
    ex = {k: rng.uniform(-1, 1, n).astype(np.float32)
          for k, n in layout.feature_lengths().items()}
    keys = order or list(ex)
    return {k: ex[k] for k in keys}


# ---- layout and the hop rule -------------------------------------------------------------------
def test_reference_layout_lengths():
    assert (REF.hop_samples, REF.n_frames, REF.n_samples) == (64, 1000, 64000)
    assert REF.features == ('audio', 'f0_hz', 'f0_confidence', 'loudness_db')
    assert REF.feature_lengths() == {'audio': 64000, 'f0_hz': 1000, 'f0_confidence': 1000,
                                     'loudness_db': 1000}
    at48 = Layout(48000, 250, 4.0, audio_16k=True)
    assert at48.features == ('audio', 'audio_16k', 'f0_hz', 'f0_confidence', 'loudness_db')
    assert at48.feature_lengths() == {'audio': 192000, 'audio_16k': 64000, 'f0_hz': 1000,
                                      'f0_confidence': 1000, 'loudness_db': 1000}
    assert at48.n_samples_16k == 64000
    assert Layout(**at48.to_dict()) == at48
    assert '4 s examples at 48000 Hz, 250 frames/s, with audio_16k' == at48.describe()


@pytest.mark.parametrize('kwargs,needles', [
    (dict(sample_rate=44100, frame_rate=250, example_secs=4.0), ['250', '44100', 'sample_rate']),
    (dict(sample_rate=16000, frame_rate=300, example_secs=4.0), ['300', '16000']),
    (dict(sample_rate=48000, frame_rate=3000, example_secs=1.0, audio_16k=True),
     ['3000', 'CREPE sample rate 16000']),
    (dict(sample_rate=16000, frame_rate=250, example_secs=0.001), ['example_secs', '0.001']),
    (dict(sample_rate=16000, frame_rate=250, example_secs=0.0), ['example_secs', '0 s']),
    (dict(sample_rate=0, frame_rate=250, example_secs=4.0), ['sample rate 0', '> 0']),
    (dict(sample_rate=16000, frame_rate=-5, example_secs=4.0), ['frame rate -5']),
])
def test_invalid_layouts_name_the_value(kwargs, needles):
    with pytest.raises(LayoutError) as info:
        Layout(**kwargs)
    for needle in needles:
        assert needle in str(info.value)


def test_hop_rule_helpers():
    assert records.samples_per_frame(48000, 250) == 192
    with pytest.raises(LayoutError, match='frame rate 250 does not divide the foo 22050'):
        records.samples_per_frame(22050, 250, 'foo')
    assert records.whole_frames(0.2, 250) == 50
    with pytest.raises(LayoutError, match=r'bar = 0\.0021 s'):
        records.whole_frames(0.0021, 250, 'bar')
    # without audio_16k a frame rate need not divide 16 kHz
    assert Layout(44100, 441, 1.0).hop_samples == 100


# ---- layouts of records without a manifest -----------------------------------------------------
def test_from_lengths_infers_the_sample_rate_from_audio_16k():
    """32 kHz records of 2 s have as many audio samples as 16 kHz records of 4 s; audio_16k
    tells them apart."""
    at32 = Layout(32000, 250, 2.0, audio_16k=True)
    lengths = at32.feature_lengths()
    assert lengths['audio'] == REF.feature_lengths()['audio']
    assert Layout.from_lengths(lengths) == at32
    assert Layout.from_lengths(lengths, sample_rate=32000) == at32
    with pytest.raises(LayoutError, match='at 32000 Hz.*not 16000 Hz'):
        Layout.from_lengths(lengths, sample_rate=16000, source='x.tfrecord')
    # the reference's own 16 kHz records hold audio_16k too
    ref16 = Layout(16000, 250, 4.0, audio_16k=True)
    assert Layout.from_lengths(ref16.feature_lengths()) == ref16


def test_from_lengths_without_audio_16k_needs_the_sample_rate():
    assert Layout.from_lengths(REF.feature_lengths(), sample_rate=16000) == REF
    assert Layout.from_lengths(REF.feature_lengths(), sample_rate=32000) == \
        Layout(32000, 500, 2.0)
    with pytest.raises(LayoutError, match='data/x: .*sample rate of the records is unknown'):
        Layout.from_lengths(REF.feature_lengths(), source='data/x')


@pytest.mark.parametrize('change,needle', [
    (dict(f0_hz=None), "lack feature(s) f0_hz"),
    (dict(loudness_db=999), "'loudness_db' has 999 values"),
    (dict(audio=64001), 'not a whole number of samples'),
    (dict(audio_16k=30001), 'give no whole sample rate'),
    (dict(audio=192000, audio_16k=96000), 'not a whole frame rate'),  # 32 kHz, 6 s
])
def test_from_lengths_rejects_inconsistent_records_naming_the_source(change, needle):
    lengths = dict(Layout(16000, 250, 4.0, True).feature_lengths())
    for k, v in change.items():
        if v is None:
            del lengths[k]
        else:
            lengths[k] = v
    with pytest.raises(LayoutError, match='^shard-7: ') as info:
        Layout.from_lengths(lengths, source='shard-7')
    assert needle in str(info.value)


def test_check_lengths_names_the_feature_and_both_lengths():
    records.check_lengths(REF.feature_lengths(), REF, 'f')
    with pytest.raises(LayoutError, match=r"^f\.tfrecord: feature 'f0_hz' has 500 values where "
                                          r'4 s examples at 16000 Hz.* have 1000'):
        records.check_lengths({**REF.feature_lengths(), 'f0_hz': 500}, REF, 'f.tfrecord')
    with pytest.raises(LayoutError, match="lack feature 'audio_16k'"):
        records.check_lengths(REF.feature_lengths(), Layout(16000, 250, 4.0, True), 'g')


# ---- records -----------------------------------------------------------------------------------
def test_serialize_example_is_byte_deterministic_whatever_the_key_order():
    layout = Layout(48000, 250, 0.2, audio_16k=True)
    # every insertion order (protobuf's map order otherwise follows its hash table, which
    # only some orders change)
    orders = [list(p) for p in itertools.permutations(layout.features)]
    blobs = {records.serialize_example(_example(layout, 3, order)) for order in orders}
    assert len(blobs) == 1
    # arrays of another dtype or shape but the same float32 values give the same bytes
    ex = _example(layout, 3)
    as64 = {k: v.astype(np.float64)[None, :] for k, v in ex.items()}
    assert records.serialize_example(as64) in blobs
    assert records.serialize_example(_example(layout, 4)) not in blobs


def test_serialize_parse_roundtrip_in_numpy_and_tensorflow():
    layout = Layout(48000, 250, 1.0, audio_16k=True)
    ex = _example(layout, 5)
    blob = records.serialize_example(ex)
    back = records.parse_example(blob)
    assert set(back) == set(ex)
    for k in ex:
        assert back[k].dtype == np.float32
        np.testing.assert_array_equal(back[k], ex[k])
    parsed = tf.io.parse_single_example(blob, records.tf_feature_spec(layout, with_audio_16k=True))
    assert set(parsed) == set(ex)
    for k in ex:
        np.testing.assert_array_equal(parsed[k].numpy(), ex[k])
    # without with_audio_16k the spec reads the required features only (extra ones ignored)
    spec = records.tf_feature_spec(layout)
    assert set(spec) == set(records.REQUIRED_FEATURES)
    assert spec['audio'].shape == [48000] and spec['f0_hz'].shape == [250]
    assert set(tf.io.parse_single_example(blob, spec)) == set(records.REQUIRED_FEATURES)


def test_parse_example_rejects_other_bytes_naming_the_source():
    with pytest.raises(LayoutError, match='^rec 3: not a tf.train.Example'):
        records.parse_example(b'\xff\x00 not a protobuf', 'rec 3')
    ints = tf.train.Example(features=tf.train.Features(feature={
        'audio': tf.train.Feature(int64_list=tf.train.Int64List(value=[1, 2]))}))
    with pytest.raises(LayoutError, match="'audio' is a int64_list, expected a float list"):
        records.parse_example(ints.SerializeToString())


# ---- fingerprint -------------------------------------------------------------------------------
def _split_digest(blobs):
    return records.combine_digests(records.record_digest(b) for b in blobs)


def test_fingerprint_is_independent_of_record_order_and_sharding():
    blobs = [records.serialize_example(_example(REF, i)) for i in range(6)]
    fp = records.fingerprint(REF, {'train': _split_digest(blobs[:4]),
                                   'eval': _split_digest(blobs[4:])})
    shuffled = list(blobs[:4])
    random.Random(0).shuffle(shuffled)
    # two shards, digested separately and combined
    sharded = records.combine_digests([_split_digest(shuffled[:1]), _split_digest(shuffled[1:])])
    assert records.fingerprint(REF, {'eval': _split_digest(blobs[5:3:-1]),
                                     'train': sharded}) == fp
    assert len(fp) == 16 and int(fp, 16) >= 0


def test_fingerprint_changes_with_content_split_and_layout():
    blobs = [records.serialize_example(_example(REF, i)) for i in range(3)]
    base = {'train': _split_digest(blobs[:2]), 'eval': _split_digest(blobs[2:])}
    fp = records.fingerprint(REF, base)
    other = records.serialize_example(_example(REF, 99))
    assert records.fingerprint(REF, {**base, 'train': _split_digest([blobs[0], other])}) != fp
    # one record fewer, or a record moved to the other split
    assert records.fingerprint(REF, {**base, 'train': _split_digest(blobs[:1])}) != fp
    assert records.fingerprint(REF, {'train': _split_digest(blobs[:1]),
                                     'eval': _split_digest(blobs[1:])}) != fp
    # the same bytes under another layout are another dataset
    assert records.fingerprint(Layout(32000, 500, 2.0), base) != fp
    # a record's digest is its sha256
    import hashlib
    assert records.record_digest(blobs[0]) == int(hashlib.sha256(blobs[0]).hexdigest(), 16)


# ---- shard names -------------------------------------------------------------------------------
def test_shard_names_and_counts():
    assert records.shard_name('train', 3, 12) == 'train-00003-of-00012.tfrecord'
    assert records.split_of_shard('/d/eval-00000-of-00001.tfrecord') == 'eval'
    assert records.split_of_shard('gs://b/d/train-00001-of-00002.tfrecord') == 'train'
    assert records.split_of_shard('C:\\d\\train-00001-of-00002.tfrecord') == 'train'
    assert records.split_of_shard('/d/manifest.json') is None
    assert records.split_of_shard('/train-data/x.tfrecord') is None
    assert records.auto_shard_count(0, REF) == 1
    assert records.auto_shard_count(10, REF) == 1
    per_record = 4 * (64000 + 3000)
    n = 3 * (128 * 1024 * 1024) // per_record
    assert records.auto_shard_count(n, REF) in (3, 4)
    assert records.auto_shard_count(10 * n, REF) > records.auto_shard_count(n, REF)


# ---- manifest ----------------------------------------------------------------------------------
def _manifest_dict(layout=REF, **extra):
    return {**records.layout_fields(layout), 'fingerprint': 'abc',
            'splits': {'train': {'examples': 3, 'shards': ['train-00000-of-00001.tfrecord']},
                       'eval': {'examples': 0, 'shards': ['eval-00000-of-00001.tfrecord']}},
            'mean_loudness_db': -30.0, **extra}


def _write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_read_manifest_reads_the_layout_back(tmp_path):
    layout = Layout(48000, 250, 2.0, audio_16k=True)
    _write(tmp_path / 'manifest.json', _manifest_dict(layout))
    for where in (tmp_path, str(tmp_path / 'manifest.json')):
        m = records.read_manifest(where)
        assert m.layout == layout and m.fingerprint == 'abc'
        assert m.schema_version == records.SCHEMA_VERSION
        assert m.directory == str(tmp_path)
    assert m.split_examples('train') == 3 and m.split_examples('test') is None
    assert m.shards('train') == [str(tmp_path / 'train-00000-of-00001.tfrecord')]
    assert m.shards('nope') == []
    assert m.statistic('mean_loudness_db') == -30.0
    assert m.statistic('splits', 'train', 'examples') == 3
    assert m.statistic('splits', 'x', 'y', default=7) == 7
    assert records.summary_of_split(m, 'train') == '3 examples in 1 shard'
    assert records.summary_of_split(m, 'eval') == 'empty (0 examples)'
    assert records.summary_of_split(m, 'test') == 'size unknown'


def test_read_manifest_of_a_missing_file_names_the_path(tmp_path):
    with pytest.raises(LayoutError, match='no such file') as info:
        records.read_manifest(tmp_path / 'nowhere')
    assert str(tmp_path / 'nowhere' / 'manifest.json') in str(info.value)


def test_read_manifest_of_bad_json_names_the_path(tmp_path):
    path = _write(tmp_path / 'manifest.json', '{"schema_version": 2,')
    with pytest.raises(LayoutError, match='not valid JSON') as info:
        records.read_manifest(path)
    assert str(path) in str(info.value)
    _write(path, '[1, 2]')
    with pytest.raises(LayoutError, match=f'^{path}: expected a JSON object, got list'):
        records.read_manifest(path)


@pytest.mark.parametrize('version', [0, 3, '2', None])
def test_read_manifest_rejects_unknown_schema_versions(tmp_path, version):
    path = _write(tmp_path / 'manifest.json', _manifest_dict(schema_version=version))
    with pytest.raises(LayoutError, match=f'^{path}: schema_version {version!r} is not one'):
        records.read_manifest(path)


def test_read_manifest_accepts_schema_version_1(tmp_path):
    path = _write(tmp_path / 'manifest.json', _manifest_dict(schema_version=1))
    assert records.read_manifest(path).schema_version == 1


def test_read_manifest_rejects_layout_and_feature_length_mismatch(tmp_path):
    path = tmp_path / 'manifest.json'
    bad = _manifest_dict()
    bad['features']['f0_hz'] = [999]
    _write(path, bad)
    with pytest.raises(LayoutError, match=rf"^{path}: feature 'f0_hz' is listed as \[999\], but "
                                          r'4 s examples at 16000 Hz.* have \[1000\]'):
        records.read_manifest(path)
    _write(path, _manifest_dict(frame_rate=300))
    with pytest.raises(LayoutError, match=f'^{path}: invalid layout.*300'):
        records.read_manifest(path)
    missing = _manifest_dict()
    del missing['fingerprint'], missing['example_secs']
    _write(path, missing)
    with pytest.raises(LayoutError, match=f'^{path}: missing example_secs, fingerprint'):
        records.read_manifest(path)
    _write(path, _manifest_dict(features=['audio']))
    with pytest.raises(LayoutError, match='"features" must map names to shapes'):
        records.read_manifest(path)
    _write(path, _manifest_dict(splits=[]))
    with pytest.raises(LayoutError, match='"splits" must be an object'):
        records.read_manifest(path)


def test_layout_fields_round_trip_through_validate_manifest():
    for layout in (REF, Layout(16000, 250, 4.0, True), Layout(44100, 441, 1.0)):
        data = json.loads(json.dumps(_manifest_dict(layout)))
        records.validate_manifest(data, 'x')
        assert records.Manifest(data, '/d/manifest.json').layout == layout


# ---- shard checks -------------------------------------------------------------------------------
SMALL = Layout(16000, 250, 0.1)


def _write_shard(path, n=3, layout=SMALL):
    """A TFRecord shard written through DigestingWriter (as ddsp-prepare writes them); returns
    the writer's entry and each record's byte offset."""
    from apache_beam.io.tfrecordio import _TFRecordUtil

    offsets = []
    with open(path, 'wb') as f:
        out = shards.DigestingWriter(f)
        for i in range(n):
            offsets.append(out.n_bytes)
            _TFRecordUtil.write_record(out, records.serialize_example(_example(layout, i)))
    return out.entry(), offsets


def _dataset(tmp_path, n_shards=2, recorded=True):
    names = [records.shard_name('train', i, n_shards) for i in range(n_shards)]
    entries, offsets = {}, {}
    for name in names:
        entries[name], offsets[name] = _write_shard(tmp_path / name)
    data = {**records.layout_fields(SMALL), 'fingerprint': 'f',
            'splits': {'train': {'examples': 3 * n_shards, 'shards': names},
                       'eval': {'examples': 0, 'shards': []}}}
    if recorded:
        data['splits']['train'][records.SHARD_FILES] = entries
    (tmp_path / records.MANIFEST).write_text(json.dumps(data))
    return records.read_manifest(str(tmp_path)), offsets


def _flip(path, offset):
    with open(path, 'r+b') as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_digesting_writer_records_what_reached_the_file(tmp_path):
    entry, _ = _write_shard(tmp_path / 'a.tfrecord')
    assert entry == shards.file_entry(str(tmp_path / 'a.tfrecord'))
    assert entry['bytes'] == (tmp_path / 'a.tfrecord').stat().st_size > 0
    assert len(list(tf.data.TFRecordDataset(str(tmp_path / 'a.tfrecord')))) == 3


def test_sizes_are_checked_and_a_truncated_or_missing_shard_is_named(tmp_path):
    manifest, _ = _dataset(tmp_path)
    paths = manifest.shards('train')
    shards.check_shard_sizes(manifest, paths)  # intact: no error
    size = os.path.getsize(paths[1])
    os.truncate(paths[1], size * 2 // 3)
    with pytest.raises(shards.ShardError) as e:
        shards.check_shard_sizes(manifest, paths)
    assert f'{paths[1]}: expected {size} bytes' in str(e.value)
    assert f'found {size * 2 // 3}' in str(e.value)
    assert f'ddsp-prepare --verify {tmp_path}' in str(e.value)
    os.remove(paths[0])
    with pytest.raises(shards.ShardError, match=rf'{paths[0]}: missing .*\(1 more shard'):
        shards.check_shard_sizes(manifest, paths)


def test_manifests_without_shard_files_skip_the_size_check(tmp_path):
    manifest, _ = _dataset(tmp_path, recorded=False)
    paths = manifest.shards('train')
    assert manifest.shard_file(paths[0]) is None
    os.truncate(paths[0], 10)
    shards.check_shard_sizes(manifest, paths)  # nothing recorded to compare with
    os.remove(paths[0])
    with pytest.raises(shards.ShardError, match='missing'):  # existence is still checked
        shards.check_shard_sizes(manifest, paths)


def test_verify_names_a_flipped_byte_by_shard_and_record_offset(tmp_path):
    manifest, offsets = _dataset(tmp_path)
    checked, problems = shards.verify_shards(manifest)
    assert checked == manifest.shards('train') and problems == []
    damaged = manifest.shards('train')[1]
    third = offsets[os.path.basename(damaged)][2]
    _flip(damaged, third + 40)  # inside the third record's data
    _, problems = shards.verify_shards(manifest)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f'{damaged}: SHA-256 ')
    assert f'first damaged record at byte {third} (corrupted record at ' in problems[0]
    assert shards.find_damaged_record(damaged)[0] == third


def test_verify_reads_every_record_of_shards_without_a_digest(tmp_path):
    manifest, offsets = _dataset(tmp_path, recorded=False)
    assert shards.verify_shards(manifest)[1] == []
    damaged = manifest.shards('train')[0]
    second = offsets[os.path.basename(damaged)][1]
    _flip(damaged, second + 30)
    _, problems = shards.verify_shards(manifest)
    assert len(problems) == 1
    assert problems[0].startswith(f'{damaged}: damaged record at byte {second} (corrupted '
                                  'record at ')
