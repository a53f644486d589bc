"""tf.data input: the dataset describes itself (manifest), crops, determinism, errors, empty
shards and splits, reference layouts, TFDS NSynth (mocked)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from ddsp_core import records
from tests.trainer.conftest import TINY_LAYOUT
from trainer import testing
from trainer.model.config import load_preset, resolve_data
from trainer.training import data as data_lib


def _take(ds, n):
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def _records(directory, split='train'):
    return [records.parse_example(r.numpy())
            for r in tf.data.TFRecordDataset(sorted(map(str, directory.glob(f'{split}-*'))))]


def test_open_source_reads_the_layout_from_the_manifest(tiny_dataset):
    for spec in (str(tiny_dataset), str(tiny_dataset / 'train-*.tfrecord'),
                 str(tiny_dataset) + ':train'):
        source = data_lib.open_source(spec)
        assert source.layout == TINY_LAYOUT, spec
        assert source.manifest is not None and source.split == 'train'
        assert source.fingerprint == json.loads(
            (tiny_dataset / 'manifest.json').read_text())['fingerprint']
        assert len(source.files) == 2


def test_crops_are_frame_aligned_windows_of_the_records(tiny_dataset, tiny_resolved):
    d = tiny_resolved.data
    assert (d.n_samples, d.n_frames, d.record_frames) == (8000, 125, 250)
    whole = {round(float(ex['f0_hz'][0]), 3): ex for ex in _records(tiny_dataset)}
    ds = data_lib.make_dataset(str(tiny_dataset), d, 4, seed=0)
    offsets = set()
    for batch in _take(ds, 6):
        assert batch['audio'].shape == (4, d.n_samples) and batch['audio'].dtype == np.float32
        for key in data_lib.FRAME_KEYS:
            assert batch[key].shape == (4, d.n_frames)
        for i in range(4):
            # Find the record and the offset this crop came from: its frames and its audio
            # must be the same window of that record (frame i <-> samples i*hop...).
            matches = []
            for rec in whole.values():
                for off in range(d.record_frames - d.n_frames + 1):
                    if np.array_equal(rec['f0_hz'][off:off + d.n_frames], batch['f0_hz'][i]):
                        matches.append((rec, off))
            assert matches, 'a crop that is no window of any record'
            rec, off = matches[0]
            hop = d.hop_samples
            np.testing.assert_array_equal(batch['audio'][i],
                                          rec['audio'][off * hop:(off + d.n_frames) * hop])
            np.testing.assert_array_equal(batch['loudness_db'][i],
                                          rec['loudness_db'][off:off + d.n_frames])
            offsets.add(off)
    assert len(offsets) > 3  # random offsets, not always the start


def test_every_record_seen_once_per_epoch(tiny_dataset, tiny_resolved):
    ds = data_lib.make_dataset(str(tiny_dataset), tiny_resolved.data, 2, seed=0, repeat=False,
                               crop_mode='start')
    batches = _take(ds, 100)
    assert len(batches) == 4  # 8 examples / 2, nothing dropped or duplicated
    starts = sorted(float(b['f0_hz'][i, 0]) for b in batches for i in range(2))
    assert starts == sorted(float(r['f0_hz'][0]) for r in _records(tiny_dataset))


def test_deterministic_when_seeded(tiny_dataset, tiny_resolved):
    spec, d = str(tiny_dataset), tiny_resolved.data
    a = _take(data_lib.make_dataset(spec, d, 4, seed=7), 6)
    b = _take(data_lib.make_dataset(spec, d, 4, seed=7), 6)
    c = _take(data_lib.make_dataset(spec, d, 4, seed=8), 6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x['audio'], y['audio'])
    assert any(not np.array_equal(x['audio'], y['audio']) for x, y in zip(a, c, strict=True))
    # Batches have the static shape needed by the distributed step (drop_remainder).
    ds = data_lib.make_dataset(spec, d, 3, seed=0)
    assert ds.element_spec['audio'].shape == (3, d.n_samples)


def test_default_prepared_4s_dataset_trains_tiny_on_crops(tmp_path):
    """The reproduced bug: a default-prepared dataset (4 s examples) and the tiny preset."""
    layout = records.Layout(16000, 250, 4.0)
    testing.write_dataset(tmp_path, layout, n_examples=2, n_shards=1)
    source = data_lib.open_source(str(tmp_path))
    config = resolve_data(load_preset('tiny'), source.layout, source.where)
    (batch,) = _take(data_lib.make_dataset(source, config.data, 2, seed=0), 1)
    assert batch['audio'].shape == (2, 8000) and batch['f0_hz'].shape == (2, 125)


def test_records_without_manifest_get_their_layout_from_the_records(tmp_path, caplog):
    # With audio_16k (the reference's records) the sample rate follows: 32 kHz 2 s records are
    # not taken for 16 kHz 4 s ones, though audio and f0 have the same lengths.
    layout32 = records.Layout(32000, 500, 2.0, audio_16k=True)
    testing.write_dataset(tmp_path / 'a', layout32, n_examples=2, n_shards=1, manifest=False)
    source = data_lib.open_source(str(tmp_path / 'a' / 'train-*'))
    assert source.manifest is None and source.layout == layout32
    assert source.fingerprint.startswith('files:')
    # Without audio_16k: the given sample rate, else 16 kHz with a warning.
    testing.write_dataset(tmp_path / 'b', TINY_LAYOUT, n_examples=2, n_shards=1, manifest=False)
    with caplog.at_level('WARNING', logger='trainer.training.data'):
        assert data_lib.open_source(str(tmp_path / 'b')).layout == TINY_LAYOUT
    assert 'assuming 16000 Hz' in caplog.text
    assert data_lib.open_source(str(tmp_path / 'b'), sample_rate=8000).layout == \
        records.Layout(8000, 125, 2.0)


def test_32k_dataset_builds_a_32k_model(tmp_path):
    from trainer.model.autoencoder import Autoencoder

    testing.write_dataset(tmp_path, records.Layout(32000, 500, 2.0, audio_16k=True),
                          n_examples=1, n_shards=1)
    source = data_lib.open_source(str(tmp_path))
    config = resolve_data(load_preset('tiny'), source.layout, source.where)
    model = Autoencoder(config.model, config.data)
    assert model.processor_group.dag[0][0].sample_rate == 32000
    out = model(model.dummy_features(1))
    assert out['audio_synth'].shape == (1, 16000)  # 0.5 s at 32 kHz
    solo = load_preset('solo_instrument')
    with pytest.raises(Exception, match='sample_rate = 16000 but the dataset'):
        resolve_data(solo.with_overrides(['data.sample_rate=16000']), source.layout,
                     source.where)


def test_reference_layout_with_audio_16k_is_read(tmp_path, tiny_resolved):
    layout = records.Layout(16000, 250, 1.0, audio_16k=True)
    testing.write_dataset(tmp_path, layout, n_examples=2, n_shards=1)
    source = data_lib.open_source(str(tmp_path))
    assert source.layout.audio_16k
    (batch,) = _take(data_lib.make_dataset(source, tiny_resolved.data, 2, seed=0), 1)
    assert set(batch) == set(data_lib.FEATURE_KEYS)


def test_wrong_length_names_file_feature_and_layout(tmp_path):
    paths = testing.write_dataset(tmp_path, TINY_LAYOUT, n_examples=2, n_shards=1)
    manifest = json.loads((tmp_path / 'manifest.json').read_text())
    manifest['example_secs'] = 2.0
    manifest['features'] = {k: [2 * v[0]] for k, v in manifest['features'].items()}
    (tmp_path / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(data_lib.DataError, match="feature 'audio' has 16000 values where 2 s "
                                                 'examples at 16000 Hz') as info:
        data_lib.open_source(str(tmp_path))
    assert paths[0] in str(info.value)


def test_missing_feature_missing_files_and_missing_shards(tmp_path):
    path = tmp_path / 'x' / 'train-00000-of-00001.tfrecord'
    path.parent.mkdir()
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(records.serialize_example({'audio': np.zeros(16000)}))
    with pytest.raises(data_lib.DataError, match='lack feature.*f0_hz'):
        data_lib.open_source(str(path))
    with pytest.raises(data_lib.DataError, match='no files match'):
        data_lib.open_source(str(tmp_path / 'nothing-*.tfrecord'))
    testing.write_dataset(tmp_path / 'y', TINY_LAYOUT, n_examples=2, n_shards=2)
    (tmp_path / 'y' / records.shard_name('train', 1, 2)).unlink()
    with pytest.raises(data_lib.DataError,
                       match=r'train-00001-of-00002.tfrecord: missing \(listed in'):
        data_lib.open_source(str(tmp_path / 'y'))


def test_empty_shards_are_fine_and_an_empty_split_is_reported(tmp_path, tiny_resolved):
    testing.write_dataset(tmp_path, TINY_LAYOUT, n_examples=3, n_shards=1)
    testing.write_dataset(tmp_path, TINY_LAYOUT, n_examples=0, n_shards=1, split='eval')
    assert (tmp_path / 'eval-00000-of-00001.tfrecord').stat().st_size == 0
    # A glob over both splits: the empty eval shard is no error, and its records count zero.
    source = data_lib.open_source(str(tmp_path / '*tfrecord*'))
    assert len(source.files) == 2 and source.split is None
    ds = data_lib.make_dataset(source, tiny_resolved.data, 1, seed=0, repeat=False)
    assert len(_take(ds, 10)) == 3
    # The empty split itself is named as such.
    for spec in (str(tmp_path) + ':eval', str(tmp_path / 'eval-*.tfrecord')):
        with pytest.raises(data_lib.DataError, match='eval split of .*manifest.json is empty'):
            data_lib.open_source(spec)


def test_tfds_nsynth_source_with_mock_data(tiny_resolved):
    import tensorflow_datasets as tfds

    name = 'tfds:nsynth/gansynth_subset.f0_and_loudness'
    with tfds.testing.mock_data(num_examples=4):
        source = data_lib.open_source(name)
        assert source.layout == records.Layout(16000, 250, 4.0)
        config = resolve_data(load_preset('solo_instrument'), source.layout, source.where)
        ds = data_lib.make_dataset(source, config.data, 2, seed=0)
        (batch,) = _take(ds, 1)
        assert batch['audio'].shape == (2, 64000)
        for key in data_lib.FRAME_KEYS:
            assert batch[key].shape == (2, 1000) and batch[key].dtype == np.float32
        # Values come from the right nested TFDS features.
        raw = next(iter(tfds.load('nsynth/gansynth_subset.f0_and_loudness', split='train',
                                  shuffle_files=False)))
        (first,) = _take(data_lib.make_dataset(name + ':train', config.data, 1, shuffle=False),
                         1)
        np.testing.assert_array_equal(first['f0_hz'][0], raw['f0']['hz'].numpy())
        np.testing.assert_array_equal(first['f0_confidence'][0], raw['f0']['confidence'].numpy())
        np.testing.assert_array_equal(first['loudness_db'][0], raw['loudness']['db'].numpy())
        np.testing.assert_array_equal(first['audio'][0], raw['audio'].numpy())
        # The tiny preset trains on 0.5 s crops of the 4 s NSynth notes.
        tiny = resolve_data(load_preset('tiny'), source.layout, source.where)
        (crop,) = _take(data_lib.make_dataset(source, tiny.data, 2, seed=0), 1)
        assert crop['audio'].shape == (2, 8000)
