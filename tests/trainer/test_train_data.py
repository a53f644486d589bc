"""tf.data pipelines: schema, determinism, errors, manifest, TFDS NSynth source (mocked)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer import data as data_lib
from trainer import testing


def _take(ds, n):
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def test_schema_and_shapes(tiny_dataset, tiny_config):
    ds = data_lib.make_dataset(str(tiny_dataset / 'train-*.tfrecord'), tiny_config.data, 4,
                               seed=0)
    (batch,) = _take(ds, 1)
    d = tiny_config.data
    assert set(batch) == set(data_lib.FEATURE_KEYS)
    assert batch['audio'].shape == (4, d.n_samples) and batch['audio'].dtype == np.float32
    for key in data_lib.FRAME_KEYS:
        assert batch[key].shape == (4, d.n_frames)
    # Known answers from the generator: f0 in its range, loudness is the frame RMS in dB.
    assert np.all((batch['f0_hz'] > 100) & (batch['f0_hz'] < 950))
    hop = d.n_samples // d.n_frames
    rms = np.sqrt(np.mean(batch['audio'][0].reshape(d.n_frames, hop) ** 2, axis=1))
    np.testing.assert_allclose(batch['loudness_db'][0], np.maximum(20 * np.log10(rms), -80),
                               atol=1e-3)


def test_all_examples_seen_once_per_epoch(tiny_dataset, tiny_config):
    ds = data_lib.make_dataset(str(tiny_dataset), tiny_config.data, 2, seed=0, repeat=False)
    batches = _take(ds, 100)
    assert len(batches) == 4  # 8 examples / 2, nothing dropped or duplicated
    f0s = sorted(float(b['f0_hz'][i, 0]) for b in batches for i in range(2))
    assert len(set(f0s)) == 8


def test_deterministic_when_seeded(tiny_dataset, tiny_config):
    spec = str(tiny_dataset)
    a = _take(data_lib.make_dataset(spec, tiny_config.data, 4, seed=7), 6)
    b = _take(data_lib.make_dataset(spec, tiny_config.data, 4, seed=7), 6)
    c = _take(data_lib.make_dataset(spec, tiny_config.data, 4, seed=8), 6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x['audio'], y['audio'])
    order = lambda bs: [tuple(np.round(b['f0_hz'][:, 0], 3)) for b in bs]  # noqa: E731
    assert order(a) == order(b)
    assert order(a) != order(c)
    # Batches have the static shape needed by the distributed step (drop_remainder).
    ds = data_lib.make_dataset(spec, tiny_config.data, 3, seed=0)
    assert ds.element_spec['audio'].shape == (3, tiny_config.data.n_samples)


def test_wrong_length_names_file_and_feature(tmp_path, tiny_config):
    other = tiny_config.with_overrides(['data.example_secs=0.2']).data
    paths = testing.write_dataset(tmp_path, other, n_examples=2, n_shards=1)
    with pytest.raises(data_lib.DataError, match='audio') as info:
        data_lib.make_dataset(str(tmp_path), tiny_config.data, 2)
    assert paths[0] in str(info.value) and 'example_secs' in str(info.value)


def test_missing_feature_and_missing_files(tmp_path, tiny_config):
    path = tmp_path / 'train-00000-of-00001.tfrecord'
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(testing.to_tf_example({'audio': np.zeros(tiny_config.data.n_samples)})
                .SerializeToString())
    with pytest.raises(data_lib.DataError, match="lack feature 'f0_hz'"):
        data_lib.make_dataset(str(path), tiny_config.data, 1)
    with pytest.raises(data_lib.DataError, match='no files match'):
        data_lib.make_dataset(str(tmp_path / 'nothing-*.tfrecord'), tiny_config.data, 1)


def test_manifest_and_fingerprint(tiny_dataset, tmp_path, tiny_config):
    assert data_lib.find_manifest(str(tiny_dataset / 'train-*')) == tiny_dataset / 'manifest.json'
    fp = data_lib.dataset_fingerprint(str(tiny_dataset))
    import json
    assert fp == json.loads((tiny_dataset / 'manifest.json').read_text())['fingerprint']
    # Without a manifest: a fingerprint of file names and sizes.
    testing.write_dataset(tmp_path, tiny_config.data, n_examples=2, n_shards=1)
    (tmp_path / 'manifest.json').unlink()
    assert data_lib.find_manifest(str(tmp_path)) is None
    assert data_lib.dataset_fingerprint(str(tmp_path)).startswith('files:')


def test_tfds_nsynth_source_with_mock_data(tiny_config):
    import tensorflow_datasets as tfds

    config = tiny_config.with_overrides(['data.example_secs=4.0']).data
    with tfds.testing.mock_data(num_examples=4):
        ds = data_lib.make_dataset('tfds:nsynth/gansynth_subset.f0_and_loudness', config, 2,
                                   seed=0)
        (batch,) = _take(ds, 1)
        assert batch['audio'].shape == (2, 64000)
        for key in data_lib.FRAME_KEYS:
            assert batch[key].shape == (2, 1000) and batch[key].dtype == np.float32
        # Values come from the right nested TFDS features.
        raw = next(iter(tfds.load('nsynth/gansynth_subset.f0_and_loudness', split='train',
                                  shuffle_files=False)))
        (first,) = _take(data_lib.make_dataset('tfds:nsynth/gansynth_subset.f0_and_loudness:train',
                                               config, 1, shuffle=False), 1)
        np.testing.assert_array_equal(first['f0_hz'][0], raw['f0']['hz'].numpy())
        np.testing.assert_array_equal(first['f0_confidence'][0], raw['f0']['confidence'].numpy())
        np.testing.assert_array_equal(first['loudness_db'][0], raw['loudness']['db'].numpy())
        np.testing.assert_array_equal(first['audio'][0], raw['audio'].numpy())
        # The layout must match the config: a 0.5 s config is refused with a clear message.
        with pytest.raises(data_lib.DataError, match='example_secs'):
            data_lib.make_dataset('tfds:nsynth/gansynth_subset.f0_and_loudness',
                                  tiny_config.data, 2)
