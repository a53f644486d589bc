"""ddsp-prepare's options: validation naming the option, derived geometry, the record layout."""

import argparse
import dataclasses

import pytest

from ddsp_core import records
from pipelines.options import OptionError, PrepareOptions, parse_db_or_none

OPTS = PrepareOptions(crepe_capacity='tiny', chunk_secs=3.0, drop_silence_db=None)


@pytest.mark.parametrize('field,value,needle', [
    ('frame_rate', 300, 'must divide 16000'),
    ('sample_rate', 44100, 'must divide --sample_rate'),
    ('chunk_secs', 2.5, 'multiple of --hop_secs'),
    ('eval_fraction', 1.5, '[0, 1]'),
    ('crepe_capacity', 'huge', 'tiny'),
    ('example_secs', 0.001, 'whole number of frames'),
    ('hop_secs', 0, 'must be positive'),
    ('inference_batch_size', 0, '>= 1'),
    ('min_secs', -1.0, '>= 0'),
    ('num_shards', -1, '>= 0'),
])
def test_bad_options_name_the_option(field, value, needle):
    with pytest.raises(OptionError, match='--' + field) as info:
        dataclasses.replace(OPTS, **{field: value}).validate()
    assert needle in str(info.value)
    assert repr(value) in str(info.value)  # the message shows the bad value


def test_valid_options_validate_to_themselves():
    assert OPTS.validate() is OPTS
    assert PrepareOptions().validate() == PrepareOptions()


def test_derived_geometry_is_integer_frames_and_samples():
    opts = dataclasses.replace(OPTS, sample_rate=48000)
    assert (opts.hop_samples, opts.hop_16k) == (192, 64)
    assert (opts.example_frames, opts.hop_frames, opts.chunk_frames) == (1000, 250, 750)
    assert opts.loudness_n_fft == 1536  # 32 ms at 48 kHz (512 samples at 16 kHz)
    assert OPTS.loudness_n_fft == 512


def test_context_covers_half_a_crepe_and_loudness_window():
    for opts in (OPTS, dataclasses.replace(OPTS, sample_rate=48000, viterbi=False)):
        assert opts.context_frames * opts.hop_16k >= 512
        assert opts.context_frames * opts.hop_samples >= opts.loudness_n_fft // 2
    # Viterbi adds a quarter second of context either side
    no_viterbi = dataclasses.replace(OPTS, viterbi=False)
    assert OPTS.context_frames - no_viterbi.context_frames == round(0.25 * OPTS.frame_rate)


@pytest.mark.parametrize('sample_rate,reference_layout,audio_16k', [
    (16000, False, False), (16000, True, True), (48000, False, True), (48000, True, True),
    (32000, False, True)])
def test_layout_has_audio_16k_when_crepe_or_the_reference_needs_it(sample_rate, reference_layout,
                                                                   audio_16k):
    opts = dataclasses.replace(OPTS, sample_rate=sample_rate, reference_layout=reference_layout)
    layout = opts.layout
    assert layout == records.Layout(sample_rate, 250, 4.0, audio_16k)
    assert opts.needs_16k == (sample_rate != 16000)
    assert (records.AUDIO_16K in layout.features) == audio_16k


def test_to_dict_holds_every_option():
    d = OPTS.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(PrepareOptions)}
    assert PrepareOptions(**d) == OPTS


@pytest.mark.parametrize('text,value', [('-70', -70.0), (' -12.5 ', -12.5), ('none', None),
                                        ('None', None), (' NONE ', None), ('0', 0.0)])
def test_parse_db_or_none_accepts_numbers_and_none(text, value):
    assert parse_db_or_none(text) == value


@pytest.mark.parametrize('text', ['loud', '', '-70dB', 'null'])
def test_parse_db_or_none_rejects_other_text_saying_what_is_expected(text):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_db_or_none(text)
    message = str(info.value)
    assert repr(text) in message and 'dB' in message and '"none"' in message


def test_default_layout_is_the_reference_layout():
    assert OPTS.layout.feature_lengths() == {'audio': 64000, 'f0_hz': 1000,
                                             'f0_confidence': 1000, 'loudness_db': 1000}
    assert dataclasses.replace(OPTS, sample_rate=48000).layout.feature_lengths() == {
        'audio': 192000, 'audio_16k': 64000, 'f0_hz': 1000, 'f0_confidence': 1000,
        'loudness_db': 1000}
