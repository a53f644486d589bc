"""ddsp_core.audio_stream: the one decoder/resampler/buffer of prepare and transfer."""

import ast
import pathlib

import numpy as np
import soundfile as sf

from ddsp_core import audio_stream

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_signal_buffer_reads_absolute_positions_with_zeros_outside():
    buf = audio_stream.SignalBuffer(length=10)
    buf.append(np.arange(1, 7, dtype=np.float32))  # samples 0..5 = 1..6
    np.testing.assert_array_equal(buf.get(-2, 3), [0, 0, 1, 2, 3])
    assert not buf.ready(8) and buf.ready(6) and buf.ready(8, finished=True)
    buf.drop_before(4)
    assert buf.offset == 4 and buf.received == 6
    np.testing.assert_array_equal(buf.get(3, 8), [0, 5, 6, 0, 0])  # dropped -> 0; not yet -> 0
    buf.append(np.arange(7, 13, dtype=np.float32))  # up to sample 11, past length 10
    np.testing.assert_array_equal(buf.get(8, 12), [9, 10, 0, 0])  # cut at the logical length
    assert audio_stream.SignalBuffer().ready(5) is False


def test_stream_file_mixes_down_resamples_and_checks_every_block(tmp_path):
    rng = np.random.default_rng(1)
    stereo = (0.2 * rng.standard_normal((22050 + 333, 2))).astype(np.float32)
    path = tmp_path / 's.wav'
    sf.write(path, stereo, 22050, subtype='FLOAT')
    seen = []
    with sf.SoundFile(path) as snd:
        parts = list(audio_stream.stream_file(snd, (22050, 16000), block=4000,
                                              check=lambda x, before: seen.append(before)))
    native = np.concatenate([p[0] for p in parts])
    np.testing.assert_array_equal(native, stereo.mean(axis=1, dtype=np.float32))
    whole = audio_stream.resampler(22050, 16000).resample_chunk(native, last=True)
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts]), whole, atol=1e-6)
    assert seen == list(range(0, len(native), 4000))  # each block, with its position
    empty = list(audio_stream.resample_blocks([], 44100, (16000,)))
    assert len(empty) == 1 and empty[0][0].size == 0


def test_prepare_and_transfer_read_audio_through_this_module_only():
    """No second decoder/resampler/buffer: soxr's stream, SoundFile.read and a windowed
    signal buffer are written here, and the two readers call this module."""
    owners = {}
    for package in ('ddsp_core', 'pipelines', 'trainer'):
        for path in sorted((ROOT / package).rglob('*.py')):
            text = path.read_text()
            if not any(k in text for k in ('ResampleStream', 'snd.read', 'drop_before')):
                continue
            tree = ast.parse(text)
            for node in ast.walk(tree):
                name = None
                if isinstance(node, ast.Attribute) and node.attr in ('ResampleStream', 'read') \
                        and isinstance(node.value, ast.Name) and node.value.id in ('soxr', 'snd'):
                    name = f'{node.value.id}.{node.attr}'
                elif isinstance(node, ast.ClassDef) and {'append', 'drop_before'} <= {
                        f.name for f in node.body if isinstance(f, ast.FunctionDef)}:
                    name = 'drop_before'  # a windowed signal buffer
                if name:
                    owners.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert owners == {name: {'ddsp_core/audio_stream.py'}
                      for name in ('soxr.ResampleStream', 'snd.read', 'drop_before')}
    for module in ('pipelines/audio_io.py', 'trainer/serving/transfer_audio.py'):
        assert 'audio_stream.stream_file(' in (ROOT / module).read_text(), module
