"""What --input matched (directories and dangling symlinks included) and the split of each file."""

import hashlib
import os

import pytest

from pipelines import inputs
from pipelines.inputs import DIRECTORY, FILE, InputEntry
from pipelines.options import OptionError


def test_assign_split_is_sha256_based_and_stable():
    key = 'violin/take_01.wav'
    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], 'big') / 2.0 ** 64
    expected = 'eval' if value < 0.3 else 'train'
    assert inputs.assign_split(key, 0.3) == expected
    keys = [f'f{i:03d}.wav' for i in range(2000)]
    splits = [inputs.assign_split(k, 0.25) for k in keys]
    assert splits == [inputs.assign_split(k, 0.25) for k in keys]
    assert 0.2 < splits.count('eval') / len(keys) < 0.3
    assert all(inputs.assign_split(k, 0.0) == 'train' for k in keys[:50])
    assert all(inputs.assign_split(k, 1.0) == 'eval' for k in keys[:50])


def test_split_key_is_relative_to_the_pattern_base():
    assert inputs.pattern_base('/data/violin/*.wav') == '/data/violin/'
    assert inputs.pattern_base('gs://b/v/**/*.flac') == 'gs://b/v/'
    assert inputs.pattern_base('/data/violin/a.wav') == '/data/violin/'
    assert inputs.pattern_base('/data/take[12].wav') == '/data/'
    assert inputs.pattern_base('*.wav') == ''
    assert inputs.split_key('/data/violin/sub/a.wav', '/data/violin/') == 'sub/a.wav'
    # the same folder elsewhere (e.g. copied to GCS) gives the same keys, hence the same split
    assert inputs.split_key('gs://b/violin/sub/a.wav', 'gs://b/violin/') == 'sub/a.wav'
    assert inputs.split_key('C:\\data\\violin\\a.wav', 'C:\\data\\') == 'violin/a.wav'
    # a path outside the base keeps its file name
    assert inputs.split_key('/elsewhere/a.wav', '/data/') == 'a.wav'


def _touch(root, *names):
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b'x')


def test_expand_inputs_dedupes_and_keys_relative_to_pattern(tmp_path):
    _touch(tmp_path, 'x/a.wav', 'x/sub/b.wav', 'x/c.flac')
    base = str(tmp_path / 'x')
    entries = inputs.expand_inputs([f'{base}/*.wav,{base}/*.flac', f'{base}/a.wav',
                                    f'{base}/sub/*.wav'])
    assert all(isinstance(e, InputEntry) and e.kind == FILE for e in entries)
    # sorted by path; the first pattern that matched a path gives its key
    assert [(e.path, e.key) for e in entries] == [
        (f'{base}/a.wav', 'a.wav'), (f'{base}/c.flac', 'c.flac'),
        (f'{base}/sub/b.wav', 'b.wav')]


def test_expand_inputs_lists_directories_and_dangling_symlinks(tmp_path):
    _touch(tmp_path, 'x/a.wav', 'x/sub/b.wav')
    os.symlink(str(tmp_path / 'gone.wav'), str(tmp_path / 'x' / 'link.wav'))
    base = str(tmp_path / 'x')
    entries = inputs.expand_inputs([base + '/*'])
    assert [(os.path.basename(e.path), e.kind) for e in entries] == [
        ('a.wav', FILE), ('link.wav', FILE), ('sub', DIRECTORY)]
    # a directory as the pattern means every entry in it
    assert inputs.expand_inputs([base]) == entries
    assert inputs.expand_inputs(['file://' + base + '/*']) == entries
    # recursive patterns reach files in subdirectories
    deep = inputs.expand_inputs([base + '/**/*.wav'])
    assert [e.key for e in deep] == ['a.wav', 'link.wav', 'sub/b.wav']


def test_relative_patterns_give_absolute_paths(tmp_path, monkeypatch):
    _touch(tmp_path, 'x/a.wav')
    monkeypatch.chdir(tmp_path)
    (entry,) = inputs.expand_inputs(['x/*.wav'])
    assert entry.path == str(tmp_path / 'x' / 'a.wav') and entry.key == 'a.wav'


def test_a_pattern_matching_no_file_is_an_option_error_naming_it(tmp_path):
    pattern = str(tmp_path / 'nothing' / '*.wav')
    with pytest.raises(OptionError, match='no files match') as info:
        inputs.expand_inputs([pattern])
    assert pattern in str(info.value)
    (tmp_path / 'only' / 'd1').mkdir(parents=True)
    with pytest.raises(OptionError, match=r'only 1 directory.*\*\*/\*\.wav'):
        inputs.expand_inputs([str(tmp_path / 'only' / '*')])
    with pytest.raises(OptionError, match='no file pattern'):
        inputs.expand_inputs([' , '])
    # every pattern must match: a good one does not hide a bad one
    _touch(tmp_path, 'ok/a.wav')
    with pytest.raises(OptionError, match='nothing'):
        inputs.expand_inputs([str(tmp_path / 'ok' / '*.wav'), pattern])
