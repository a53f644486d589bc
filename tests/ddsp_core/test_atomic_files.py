"""Files written whole or not at all (ddsp_core.runtime.atomic_output / atomic_directory) and the
one line a full disk gets (disk_full_message)."""

import errno
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ddsp_core import runtime

ROOT = Path(__file__).resolve().parents[2]


def _leftovers(directory):
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith('.'))


def test_write_atomic_replaces_the_file_with_the_umasks_permissions(tmp_path):
    path = tmp_path / 'sub' / 'config.json'
    runtime.write_atomic(path, '{"a": 1}\n')
    runtime.write_atomic(path, b'{"a": 2}\n')
    assert path.read_text() == '{"a": 2}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert _leftovers(path.parent) == []


def test_a_failed_write_keeps_the_old_file_and_names_the_path(tmp_path):
    path = tmp_path / 'mlflow_run.json'
    path.write_text('old\n')
    with pytest.raises(RuntimeError):
        with runtime.atomic_output(path) as f:
            f.write('half of the new')
            raise RuntimeError('interrupted')
    assert path.read_text() == 'old\n' and _leftovers(tmp_path) == []
    # a full disk (a real ENOSPC from /dev/full, flushed by atomic_output) names the target
    real_fdopen = os.fdopen

    def full_disk(fd, *args, **kwargs):
        full = os.open('/dev/full', os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return real_fdopen(fd, *args, **kwargs)

    os.fdopen = full_disk
    try:
        with pytest.raises(OSError) as e:
            runtime.write_atomic(path, 'new\n')
    finally:
        os.fdopen = real_fdopen
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert runtime.disk_full_message(e.value) == f'no space left on device writing {path}'
    assert path.read_text() == 'old\n' and _leftovers(tmp_path) == []


def test_a_kill_mid_write_leaves_the_old_file(tmp_path):
    path = tmp_path / 'config.json'
    path.write_text('old\n')
    script = textwrap.dedent(f'''
        import os, signal
        from ddsp_core import runtime
        with runtime.atomic_output({str(path)!r}) as f:
            f.write('new, cut short')
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    ''')
    proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, timeout=60,
                          env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert proc.returncode == -9
    assert path.read_text() == 'old\n'  # a .partial file may be left beside it, hidden
    assert all(n.endswith('.partial') for n in _leftovers(tmp_path))


def test_atomic_directory_replaces_a_directory_only_when_complete(tmp_path):
    out = tmp_path / 'export'
    with runtime.atomic_directory(out) as d:
        (d / 'saved_model.pb').write_text('one')
    with pytest.raises(ValueError):
        with runtime.atomic_directory(out) as d:
            (d / 'saved_model.pb').write_text('two, failed its check')
            raise ValueError('check failed')
    assert (out / 'saved_model.pb').read_text() == 'one'
    with runtime.atomic_directory(out) as d:
        (d / 'saved_model.pb').write_text('three')
    assert (out / 'saved_model.pb').read_text() == 'three'
    assert _leftovers(tmp_path) == []


def test_disk_full_message_knows_tensorflow_and_sqlite_wording():
    import tensorflow as tf

    with pytest.raises(tf.errors.OpError) as e:  # a real TensorFlow write to a full device
        with tf.io.gfile.GFile('/dev/full', 'w') as f:
            f.write('x' * (1 << 20))
    assert 'No space left on device' in runtime.disk_full_message(e.value)
    wrapped = RuntimeError('saving failed')
    wrapped.__cause__ = sqlite3.OperationalError('database or disk is full')
    assert runtime.disk_full_message(wrapped) == 'database or disk is full'
    beam = RuntimeError('Pipeline failed:\nTraceback (most recent call last):\n  File "x.py"\n'
                        "OSError: [Errno 28] No space left on device: '/d/.tmp-train-0'\n")
    assert runtime.disk_full_message(beam) == ("OSError: [Errno 28] No space left on device: "
                                               "'/d/.tmp-train-0'")
    assert runtime.disk_full_message(OSError(errno.EACCES, 'Permission denied', 'x')) is None
    assert runtime.disk_full_message(ValueError('no')) is None


def test_environ_sets_unsets_and_restores_even_after_an_error(monkeypatch):
    monkeypatch.setenv('DDSP_T_SET', 'before')
    monkeypatch.delenv('DDSP_T_NEW', raising=False)
    with pytest.raises(RuntimeError):
        with runtime.environ({'DDSP_T_SET': None, 'DDSP_T_NEW': 'x'}):
            assert 'DDSP_T_SET' not in os.environ and os.environ['DDSP_T_NEW'] == 'x'
            raise RuntimeError
    assert os.environ['DDSP_T_SET'] == 'before' and 'DDSP_T_NEW' not in os.environ
