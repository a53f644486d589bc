"""Deterministic shards: which shard a record goes to, and how a shard file is written."""

import hashlib
import os

import tensorflow as tf

from ddsp_core import records, shards
from pipelines import prepare_steps as steps


def test_shard_of_is_a_sha256_of_key_and_start():
    key = ('violin/a.wav', '/data/violin/a.wav', 250)
    want = int.from_bytes(hashlib.sha256(b'violin/a.wav\x00250').digest()[:8], 'big') % 7
    assert steps.shard_of(key, 7) == want
    # the path does not matter (a moved folder shards the same), the start frame does
    assert steps.shard_of(('violin/a.wav', '/elsewhere/a.wav', 250), 7) == want
    starts = {steps.shard_of(('violin/a.wav', '', s), 4) for s in range(0, 250 * 40, 250)}
    assert starts == {0, 1, 2, 3}  # one file's windows spread over the shards
    assert all(steps.shard_of(('k', '', s), 1) == 0 for s in range(10))


def test_assign_shard_uses_the_split_shard_count():
    item = ('eval', (('k.wav', '/k.wav', 0), b'rec'))
    (split, index, n), value = steps.assign_shard(item, {'eval': 3, 'train': 9})
    assert (split, n) == ('eval', 3) and index == steps.shard_of(('k.wav', '/k.wav', 0), 3)
    assert value == (('k.wav', '/k.wav', 0), b'rec')


def test_empty_split_gets_one_empty_shard():
    assert list(steps.empty_split_shard('eval', {'train': 4})) == [(('eval', 0, 1), [])]
    assert list(steps.empty_split_shard('train', {'train': 4})) == []


def _read(path):
    return [r.numpy() for r in tf.data.TFRecordDataset([path])]


def test_write_shard_sorts_records_skips_placeholders_and_replaces_the_file(tmp_path):
    out = str(tmp_path)
    items = [(('b.wav', '/b.wav', 0), b'b0'), None, (('a.wav', '/a.wav', 250), b'a250'),
             (('a.wav', '/a.wav', 0), b'a0'), None]
    (result,) = steps.WriteShard(out).process((('train', 1, 3), items))
    path = os.path.join(out, 'train-00001-of-00003.tfrecord')
    # the size and SHA-256 taken as the bytes were written are the file's
    assert result == ('train', 'train-00001-of-00003.tfrecord', 3, shards.file_entry(path))
    assert _read(path) == [b'a0', b'a250', b'b0']
    assert os.listdir(out) == ['train-00001-of-00003.tfrecord']  # no temporary file left
    # the same records in another order: the same bytes
    with open(path, 'rb') as f:
        first = f.read()
    list(steps.WriteShard(out).process((('train', 1, 3), list(reversed(items)))))
    with open(path, 'rb') as f:
        assert f.read() == first
    # a shard of placeholders only is written, empty
    (empty,) = steps.WriteShard(out).process((('train', 2, 3), [None]))
    assert empty == ('train', 'train-00002-of-00003.tfrecord', 0,
                     {'bytes': 0, 'sha256': hashlib.sha256(b'').hexdigest()})
    assert os.path.getsize(os.path.join(out, records.shard_name('train', 2, 3))) == 0


def test_spilled_records_write_the_bytes_of_records_held_in_memory(tmp_path):
    """The examples wait for their shard as references into per-bundle spill files: a shard
    written from references has the bytes of one written from the records themselves, and a
    damaged spill file is an error naming it, not a short record."""
    import pytest

    keys = [('b.wav', '/b.wav', 0), ('a.wav', '/a.wav', 250), ('a.wav', '/a.wav', 0)]
    blobs = [b'b0' * 1000, b'a250' * 10, b'a0']
    spill_dir = str(tmp_path / 'out' / steps.SPILL_DIR / 'job')
    bundles = [steps.Spill(spill_dir), steps.Spill(spill_dir)]  # two bundles, two files
    refs = [bundles[0].put(blobs[0]), bundles[1].put(blobs[1]), bundles[0].put(blobs[2])]
    for bundle in bundles:
        bundle.close()
    assert len(os.listdir(spill_dir)) == 2 and refs[2][1] == len(blobs[0])
    held = tmp_path / 'held'
    spilled = tmp_path / 'spilled'
    held.mkdir()
    spilled.mkdir()
    (a,) = steps.WriteShard(str(held)).process(
        (('train', 0, 1), list(zip(keys, blobs, strict=True))))
    (b,) = steps.WriteShard(str(spilled)).process(
        (('train', 0, 1), list(zip(keys, refs, strict=True))))
    assert a == b  # the same name, count, size and SHA-256
    assert _read(os.path.join(spilled, 'train-00000-of-00001.tfrecord')) == [
        b'a0', b'a250' * 10, b'b0' * 1000]
    # the job's last step removes the spill folder
    steps.remove_spill(str(tmp_path / 'out'))
    assert not os.path.exists(tmp_path / 'out' / steps.SPILL_DIR)
    # a spill file cut short while the job ran
    cut = steps.Spill(str(tmp_path / 'cut'))
    ref = cut.put(b'x' * 100)
    cut.close()
    with open(ref[0], 'r+b') as f:
        f.truncate(50)
    with pytest.raises(OSError, match=r'\.bin: 100 bytes at offset 0 expected, 50 found'):
        list(steps.WriteShard(str(spilled)).process((('train', 0, 1), [(keys[0], ref)])))


def test_a_failed_spill_write_fails_the_bundle_and_remote_outputs_spill_locally(tmp_path):
    """A write that fails makes every later use of the bundle's spill raise (the bundle fails,
    is retried or fails the job; an example is never dead-lettered for it, and no later record
    gets an offset past unknown bytes); a gs:// output spills to this machine's temporary
    folder, one per output directory."""
    import pytest

    blocker = tmp_path / 'not-a-folder'
    blocker.write_text('x')
    spill = steps.Spill(str(blocker / 'job'))  # its files cannot be created under a file
    with pytest.raises(OSError):
        spill.put(b'record')
    with pytest.raises(OSError, match='spill file'):
        spill.check()
    with pytest.raises(OSError, match='spill file'):
        spill.put(b'next record')
    a, b = steps.spill_root('gs://bucket/data/violin'), steps.spill_root('gs://bucket/data/x')
    assert '://' not in a and a != b and a == steps.spill_root('gs://bucket/data/violin/')
    assert steps.spill_root(str(tmp_path)) == os.path.join(str(tmp_path), steps.SPILL_DIR)


def test_decoded_chunks_cross_the_reshuffle_as_spill_references(tmp_path):
    """On a local runner ``DecodeFile`` puts each chunk's audio (both rates) in its bundle's
    spill file and emits references, so the reshuffle holds a few bytes per chunk, not the
    decoded file; ``LoadChunkAudio`` gives back exactly the arrays of an unspilled decode, and
    a spill file cut short is an error naming it."""
    import pickle

    import numpy as np
    import pytest
    import soundfile as sf

    from pipelines.options import PrepareOptions

    sr = 44100
    t = np.arange(int(7.3 * sr)) / sr
    path = str(tmp_path / 'tone.wav')
    sf.write(path, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), sr, subtype='FLOAT')
    opts = PrepareOptions(sample_rate=48000, frame_rate=250, chunk_secs=2.0)  # two streams
    held = list(steps.DecodeFile(opts).process((path, 'tone.wav')))
    decode = steps.DecodeFile(opts, spill_dir=str(tmp_path / 'spill' / 'job'))
    decode.start_bundle()
    spilled = list(decode.process((path, 'tone.wav')))
    decode.finish_bundle()  # closes the bundle's file before its references are committed
    assert len(spilled) == len(held) >= 3
    assert all(isinstance(c[k], steps.SpilledAudio)
               for c in spilled for k in ('audio', 'audio_16k'))
    assert len(os.listdir(tmp_path / 'spill' / 'job')) == 1  # one file for the bundle
    assert max(len(pickle.dumps(c)) for c in spilled) < 2000 < min(
        len(pickle.dumps(c)) for c in held)
    load = steps.LoadChunkAudio()
    load.start_bundle()
    loaded = [out for c in spilled for out in load.process(c)]
    load.finish_bundle()
    for a, b in zip(held, loaded, strict=True):
        assert a['spec'] == b['spec'] and a['path'] == b['path']
        for k in ('audio', 'audio_16k'):
            assert b[k].dtype == np.float32 and b[k].flags.writeable
            np.testing.assert_array_equal(a[k], b[k])
    ref = spilled[-1]['audio_16k']
    with open(ref.path, 'r+b') as f:
        f.truncate(ref.offset + 10)
    load.start_bundle()
    with pytest.raises(OSError, match=r'\.bin: \d+ bytes at offset \d+ expected, \d+ found'):
        list(load.process(spilled[-1]))


def _spill_dirs(options_args, tmp_path):
    """The job's DoFns that spill (by their label) and their spill folders, for a job built (not
    run) with ``options_args``."""
    import apache_beam as beam
    import numpy as np
    import soundfile as sf

    from pipelines import prepare_dataset as prep
    from pipelines.options import PrepareOptions

    sf.write(str(tmp_path / 'a.wav'), np.full(16000, 0.1, np.float32), 16000)
    pipeline = beam.Pipeline(options=prep._pipeline_options(options_args))
    prep.build_pipeline(pipeline, prep.expand_inputs([str(tmp_path / '*.wav')]),
                        str(tmp_path / 'out'), PrepareOptions(), ['x'])
    found = {}

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            if isinstance(node.transform, beam.ParDo):
                fn = getattr(node.transform.fn, '_fn', node.transform.fn)  # exception handling
                found[node.full_label.split('/')[0]] = fn

    pipeline.visit(Visitor())
    return found


def test_a_local_job_spills_the_chunks_and_the_examples_into_one_job_folder(tmp_path, caplog):
    """The job as ``ddsp-prepare`` builds it on the DirectRunner: Decode and Examples spill into
    the same fresh folder under ``OUTPUT_DIR/.spill``, and the chunks' audio is read back right
    after the reshuffle ('Unspill'), before CREPE. Building it prints no warning (Beam's false
    one about the tagged outputs of a ParDo with exception handling is filtered)."""
    import logging

    with caplog.at_level(logging.WARNING):
        fns = _spill_dirs(['--runner=DirectRunner'], tmp_path)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not logging.getLogger().filters  # the filter was only there while building
    decode, examples = fns['Decode'], fns['Examples']
    assert isinstance(decode, steps.DecodeFile) and isinstance(examples, steps.MakeExamples)
    assert decode.spill_dir is not None and decode.spill_dir == examples.spill_dir
    assert os.path.dirname(decode.spill_dir) == os.path.join(str(tmp_path / 'out'),
                                                              steps.SPILL_DIR)
    assert isinstance(fns['Unspill'], steps.LoadChunkAudio)
