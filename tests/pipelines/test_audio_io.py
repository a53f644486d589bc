"""Decoding, validation and streaming resampling of source files."""

import builtins
import io
import os
import struct

import numpy as np
import pytest
import soundfile as sf
import soxr

from pipelines import audio_io
from pipelines.audio_io import BadInputError
from tests.signals import peak_hz, sine


def _write(path, audio, sr, **kw):
    sf.write(str(path), audio, sr, **kw)
    return str(path)


def test_scan_reports_length_rate_and_content_hash(tmp_path):
    x = sine(440, 1.5, 22050)
    info = audio_io.scan_audio(_write(tmp_path / 'a.wav', x, 22050, subtype='FLOAT'), 0.5)
    assert (info.sample_rate, info.channels, info.n_samples) == (22050, 1, len(x))
    assert info.seconds == pytest.approx(1.5, abs=1e-4)
    assert info.peak == pytest.approx(0.5, abs=1e-3)
    same = audio_io.scan_audio(_write(tmp_path / 'b.wav', x, 22050, subtype='FLOAT'))
    other = audio_io.scan_audio(_write(tmp_path / 'c.wav', x * 0.5, 22050, subtype='FLOAT'))
    assert same.sha256 == info.sha256 != other.sha256


@pytest.mark.parametrize('kind,needle', [
    ('garbage', 'unreadable or corrupt'),
    ('text', 'unreadable or corrupt'),
    ('zero_bytes', r': empty file \(0 bytes\)$'),
    ('empty', r': no audio \(0 samples\)$'),
    ('short', 'too short'),
    ('nan', 'NaN'),
    ('silent', 'silent'),
    ('missing', ': file not found$'),
])
def test_scan_rejects_bad_files_with_a_reason(tmp_path, kind, needle):
    path = tmp_path / f'{kind}.wav'
    if kind == 'garbage':
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    elif kind == 'text':
        path.write_text('not audio at all\n' * 100)
    elif kind == 'zero_bytes':
        path.write_bytes(b'')
    elif kind == 'empty':
        _write(path, np.zeros(0, np.float32), 16000)
    elif kind == 'short':
        _write(path, sine(440, 0.2), 16000)
    elif kind == 'nan':
        x = sine(440, 1.0)
        x[8000] = np.nan
        _write(path, x, 16000, subtype='FLOAT')
    elif kind == 'silent':
        _write(path, np.zeros(16000, np.float32), 16000)
    with pytest.raises(BadInputError, match=needle) as info:
        audio_io.scan_audio(str(path), min_secs=0.5)
    assert str(path) in str(info.value)


@pytest.mark.parametrize('fmt', ['wav', 'flac', 'ogg', 'mp3'])
def test_formats_decode_to_mono_at_the_target_rate(tmp_path, fmt):
    left, right = sine(330, 2.0, 44100, 0.4), sine(330, 2.0, 44100, 0.2)
    path = _write(tmp_path / f'x.{fmt}', np.stack([left, right], 1), 44100)
    audio = audio_io.load_audio(path, 16000)
    assert abs(len(audio) - 32000) < 1200  # lossy codecs may add a few ms of priming
    assert peak_hz(audio) == pytest.approx(330, abs=2)
    assert np.abs(audio).max() == pytest.approx(0.3, abs=0.05)  # mono mix-down of 0.4 and 0.2


def test_streaming_resampler_equals_whole_file_resampling(tmp_path):
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(44100 * 3 + 17)).astype(np.float32)
    path = _write(tmp_path / 'n.wav', x, 44100, subtype='FLOAT')
    whole16 = soxr.resample(x, 44100, 16000, quality='HQ')
    whole48 = soxr.resample(x, 44100, 48000, quality='HQ')
    parts = list(audio_io.stream_resampled(path, (48000, 16000), block=10000))
    got48 = np.concatenate([p[0] for p in parts])
    got16 = np.concatenate([p[1] for p in parts])
    np.testing.assert_allclose(got48, whole48, atol=1e-6)
    np.testing.assert_allclose(got16, whole16, atol=1e-6)
    assert len(got16) == audio_io.resampled_length(len(x), 44100, 16000)
    native = np.concatenate([p[0] for p in audio_io.stream_resampled(path, (44100,), 999)])
    np.testing.assert_array_equal(native, x)


def test_local_permission_error_is_bad_input_but_remote_io_errors_propagate(tmp_path,
                                                                          monkeypatch):
    import contextlib

    def fail(path):
        @contextlib.contextmanager
        def ctx():
            raise PermissionError(13, 'Permission denied')
            yield
        return ctx()

    monkeypatch.setattr(audio_io, 'open_sound_file', fail)
    with pytest.raises(audio_io.BadInputError, match=r'a\.wav: permission denied$'):
        audio_io.scan_audio(str(tmp_path / 'a.wav'), 0.0)
    # A transient error reading gs:// must reach the runner (which retries), not dead-letter.
    with pytest.raises(PermissionError):
        audio_io.scan_audio('gs://bucket/a.wav', 0.0)
    with pytest.raises(ConnectionError):
        monkeypatch.setattr(audio_io, 'open_sound_file', lambda p: (_ for _ in ()).throw(
            ConnectionError('reset')))
        audio_io.scan_audio('gs://bucket/a.wav', 0.0)


# ---- why a local file cannot be read: the reasons the ledger and dead letters show ----------
def test_zero_byte_file_is_an_empty_file(tmp_path):
    path = tmp_path / 'z.wav'
    path.write_bytes(b'')
    with pytest.raises(BadInputError) as info:
        audio_io.scan_audio(str(path))
    assert str(info.value) == f'{path}: empty file (0 bytes)'


def test_dangling_symlink_names_its_missing_target(tmp_path):
    target = tmp_path / 'moved-away.wav'
    link = tmp_path / 'link.wav'
    os.symlink(str(target), str(link))
    with pytest.raises(BadInputError) as info:
        audio_io.scan_audio(str(link))
    assert str(info.value) == f'{link}: missing target (dangling symlink to {target})'
    # a symlink to a good file reads as the file
    _write(target, sine(440, 1.0), 16000)
    assert audio_io.scan_audio(str(link)).n_samples == 16000


@pytest.mark.parametrize('subtype,bytes_per_sample', [('PCM_16', 2), ('FLOAT', 4), ('PCM_24', 3)])
def test_truncated_wav_reports_header_and_decoded_seconds(tmp_path, subtype, bytes_per_sample):
    path = tmp_path / 'cut.wav'
    _write(path, sine(440, 4.0), 16000, subtype=subtype)
    data = path.read_bytes()
    header = len(data) - 4 * 16000 * bytes_per_sample  # 44 bytes, more with fact/PEAK chunks
    assert 44 <= header < 200
    path.write_bytes(data[:header + int(1.6 * 16000) * bytes_per_sample + 1])  # mid-sample
    with pytest.raises(BadInputError) as info:
        audio_io.scan_audio(str(path), min_secs=0.5)
    assert str(info.value) == f'{path}: truncated: header 4.0 s, decoded 1.6 s'
    with open(path, 'rb') as f:
        assert audio_io.wav_declared_frames(f) == 4 * 16000


def test_complete_wav_with_extra_chunks_is_not_truncated(tmp_path):
    """A LIST chunk before the data (as many editors write) must be skipped, not misread."""
    path = tmp_path / 'list.wav'
    x = sine(440, 1.0)
    pcm = (x * 32767).astype('<i2').tobytes()
    fmt = struct.pack('<HHIIHH', 1, 1, 16000, 32000, 2, 16)
    info = b'INFOISFT\x05\x00\x00\x00test\x00\x00'  # odd-sized sub-chunk, padded
    body = (b'WAVE' + b'fmt ' + struct.pack('<I', len(fmt)) + fmt
            + b'LIST' + struct.pack('<I', len(info)) + info
            + b'data' + struct.pack('<I', len(pcm)) + pcm)
    path.write_bytes(b'RIFF' + struct.pack('<I', len(body)) + body)
    with open(path, 'rb') as f:
        assert audio_io.wav_declared_frames(f) == 16000
    assert audio_io.scan_audio(str(path)).n_samples == 16000
    assert audio_io.wav_declared_frames(io.BytesIO(b'fLaC' + b'\x00' * 40)) is None


def test_directory_is_reported_as_a_directory(tmp_path):
    d = tmp_path / 'sub.wav'
    d.mkdir()
    with pytest.raises(BadInputError) as info:
        audio_io.scan_audio(str(d))
    assert str(info.value) == f'{d}: is a directory'


def test_permission_denied_opening_the_file_is_named(tmp_path, monkeypatch):
    """Tests run as root, whom chmod does not stop: the OS's refusal is simulated at open()."""
    path = _write(tmp_path / 'locked.wav', sine(440, 1.0), 16000)
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == path:
            raise PermissionError(13, 'Permission denied', path)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, 'open', guarded_open)
    with pytest.raises(BadInputError) as info:
        audio_io.check_local_file(path)
    assert str(info.value) == f'{path}: permission denied'
    with pytest.raises(BadInputError) as info:
        audio_io.scan_audio(path)
    assert str(info.value) == f'{path}: permission denied'
    monkeypatch.undo()
    assert audio_io.check_local_file(path) == os.path.getsize(path)


# Run as an unprivileged user: the project is imported first (as whoever runs the tests), then
# the process gives up root, so the file's mode is what decides.
_UNPRIVILEGED_SCAN = """
import os, sys
from pipelines import audio_io
uid = int(sys.argv[1])
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
for path in sys.argv[2:]:
    try:
        print(f'ok {audio_io.scan_audio(path).sample_rate}')
    except audio_io.BadInputError as e:
        print(f'error {e}')
"""


def test_permission_denied_by_file_mode(tmp_path):
    """A file whose mode forbids reading is dead-lettered "permission denied" (as root, whom
    modes do not stop, the check runs in a child process that has given up root)."""
    import subprocess
    import sys
    import tempfile

    folder = tempfile.mkdtemp(dir=os.environ.get('TMPDIR', '/tmp'))  # traversable by anyone
    os.chmod(folder, 0o755)
    readable = _write(os.path.join(folder, 'open.wav'), sine(440, 1.0), 16000)
    locked = _write(os.path.join(folder, 'locked.wav'), sine(440, 1.0), 16000)
    os.chmod(readable, 0o644)
    os.chmod(locked, 0)
    try:
        if os.geteuid() != 0:
            with pytest.raises(BadInputError) as info:
                audio_io.scan_audio(locked)
            assert str(info.value) == f'{locked}: permission denied'
            assert audio_io.scan_audio(readable).sample_rate == 16000
            return
        nobody = 65534
        root_dir = os.path.dirname(os.path.dirname(os.path.abspath(audio_io.__file__)))
        done = subprocess.run([sys.executable, '-c', _UNPRIVILEGED_SCAN, str(nobody),
                               str(readable), str(locked)], capture_output=True, text=True,
                              cwd=folder, env={**os.environ, 'PYTHONPATH': root_dir},
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.splitlines() == ['ok 16000', f'error {locked}: permission denied']
    finally:
        for path in (readable, locked):
            os.chmod(path, 0o644)
            os.unlink(path)
        os.rmdir(folder)


def test_other_os_errors_name_the_file_and_the_error(tmp_path, monkeypatch):
    path = _write(tmp_path / 'io.wav', sine(440, 1.0), 16000)
    real_open = builtins.open

    def failing_open(file, *args, **kwargs):
        if isinstance(file, str) and file == path:
            raise OSError(5, 'Input/output error')
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, 'open', failing_open)
    with pytest.raises(BadInputError) as info:
        audio_io.check_local_file(path)
    assert str(info.value) == f'{path}: unreadable (Input/output error)'
