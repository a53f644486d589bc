"""CREPE through Beam's RunInference equals crepe.predict; chunking does not change features."""

import dataclasses

import apache_beam as beam
import crepe
import numpy as np
import pytest
import soundfile as sf
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from ddsp_core import records
from ddsp_core.f0 import activations_to_f0, resolve_crepe_precision
from pipelines import chunking
from pipelines.crepe_inference import CrepeModelHandler, chunk_frame_count, result_precision
from pipelines.options import PrepareOptions
from pipelines.prepare_steps import DecodeFile, MakeExamples

OPTS = PrepareOptions(crepe_capacity='tiny', drop_silence_db=None, inference_batch_size=128,
                      example_secs=1.0, hop_secs=0.5, chunk_secs=1.0)


def _glide(seconds, sr=16000):
    """A tone gliding 200 -> 400 Hz plus a little noise (so Viterbi has something to do)."""
    t = np.arange(int(seconds * sr)) / sr
    f = 200.0 * 2 ** (t / seconds)
    phase = 2 * np.pi * np.cumsum(f) / sr
    rng = np.random.default_rng(0)
    return (0.5 * np.sin(phase) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _chunk(audio, opts, key='k'):
    spec = chunking.plan_chunks(len(audio), dataclasses.replace(opts, chunk_secs=100.0))[0]
    padded = np.zeros((spec.seg_end - spec.seg_first) * opts.hop_16k, np.float32)
    padded[:len(audio)] = audio
    return {'path': key, 'spec': spec, 'audio': padded, 'audio_16k': None}, padded


@pytest.mark.slow
def test_run_inference_equals_crepe_predict():
    audios = [_glide(0.6), _glide(0.9)[::-1].copy(), _glide(1.4)]
    chunks, expected = [], {}
    for i, a in enumerate(audios):
        chunk, padded = _chunk(a, OPTS, key=f'c{i}')
        chunks.append(chunk)
        for viterbi in (True, False):
            _, f0, conf, _ = crepe.predict(padded, 16000, model_capacity='tiny',
                                           viterbi=viterbi, center=True, step_size=4, verbose=0)
            expected[f'c{i}', viterbi] = (f0, conf)

    def check(results):
        assert sorted(k for k, _ in results) == sorted({k for k, _ in expected})
        for key, activations in results:
            for viterbi in (True, False):
                f0, conf = activations_to_f0(activations, viterbi)
                want_f0, want_conf = expected[key, viterbi]
                assert f0.shape == want_f0.shape
                np.testing.assert_allclose(conf, want_conf, atol=1e-4)
                np.testing.assert_allclose(f0, want_f0, rtol=1e-3)

    handler = CrepeModelHandler('tiny', 250, inference_batch_size=128)
    assert handler.batch_elements_kwargs()['max_batch_size'] >= 128
    # Several chunks in one batch give each chunk its own activations, the same bits as alone.
    model = handler.load_model()
    together = handler.run_inference(chunks, model)
    assert [r.example['path'] for r in together] == ['c0', 'c1', 'c2']
    for result, chunk in zip(together, chunks, strict=True):
        alone = handler.run_inference([chunk], model)[0].inference
        assert result.inference.shape == alone.shape == (chunk_frame_count(chunk), 360)
        np.testing.assert_array_equal(result.inference, alone)
        f0, conf = activations_to_f0(result.inference, True)
        np.testing.assert_allclose(f0, expected[chunk['path'], True][0], rtol=1e-3)
    with test_pipeline.TestPipeline(runner='DirectRunner',
                                    options=beam.options.pipeline_options.PipelineOptions(
                                        ['--direct_running_mode=in_memory'])) as p:
        out = (p | beam.Create(chunks) | RunInference(handler)
               | beam.Map(lambda r: (r.example['path'], r.inference)))
        assert_that(out, check)


def _run_chain(path, opts):
    """DecodeFile -> CREPE handler -> MakeExamples, called directly (no runner)."""
    handler = CrepeModelHandler(opts.crepe_capacity, opts.frame_rate, opts.inference_batch_size,
                                precision=opts.crepe_precision, crepe_rate=opts.crepe_rate)
    model = handler.load_model()
    make = MakeExamples(opts)
    make.setup()
    examples = []
    for chunk in DecodeFile(opts).process((path, 'x.wav')):
        (result,) = handler.run_inference([chunk], model)
        for out in make.process(result):
            if out.tag == 'records':
                split, (sort_key, data) = out.value
                assert split in records.SPLITS and sort_key[:2] == ('x.wav', path)
                examples.append((sort_key, records.parse_example(data)))
    return [ex for _, ex in sorted(examples, key=lambda item: item[0])]


@pytest.mark.slow
@pytest.mark.parametrize('f0_hop_ms', [None, 10])  # 10: CREPE on the whole file's 10 ms grid
def test_chunked_features_equal_whole_file_features(tmp_path, f0_hop_ms):
    path = str(tmp_path / 'x.wav')
    sf.write(path, _glide(3.2), 16000, subtype='FLOAT')
    opts = dataclasses.replace(OPTS, viterbi=False, eval_fraction=0.0, f0_hop_ms=f0_hop_ms)
    whole = _run_chain(path, dataclasses.replace(opts, chunk_secs=30.0))
    chunked = _run_chain(path, dataclasses.replace(opts, chunk_secs=1.0))
    assert len(whole) == len(chunked) == 6  # windows at 0..2.5 s; the last one padded
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a['audio'], b['audio'])
        np.testing.assert_allclose(a['loudness_db'], b['loudness_db'], atol=1e-4)
        np.testing.assert_allclose(a['f0_confidence'], b['f0_confidence'], atol=1e-4)
        np.testing.assert_allclose(a['f0_hz'], b['f0_hz'], rtol=1e-4)
    # consecutive windows overlap by 3 s and agree there
    np.testing.assert_array_equal(whole[0]['audio'][8000:], whole[1]['audio'][:8000])
    np.testing.assert_allclose(whole[0]['f0_hz'][125:], whole[1]['f0_hz'][:125], rtol=1e-4)


@pytest.mark.slow
def test_48k_keeps_audio_at_48k_and_adds_audio_16k_for_crepe(tmp_path):
    path = str(tmp_path / 'x.wav')
    t = np.arange(int(1.7 * 44100)) / 44100
    sf.write(path, (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 44100,
             subtype='FLOAT')
    base = dataclasses.replace(OPTS, eval_fraction=0.0)
    at16 = _run_chain(path, base)
    at48 = _run_chain(path, dataclasses.replace(base, sample_rate=48000))
    assert len(at16) == len(at48) == 3
    for a, b in zip(at16, at48, strict=True):
        assert 'audio_16k' not in a
        assert b['audio'].shape == (48000,) and b['audio_16k'].shape == (16000,)
        assert b['f0_hz'].shape == b['loudness_db'].shape == (250,)
        np.testing.assert_array_equal(b['audio_16k'], a['audio'])  # CREPE sees the same audio
        np.testing.assert_allclose(b['f0_hz'], a['f0_hz'], rtol=1e-5)
        np.testing.assert_allclose(b['f0_confidence'], a['f0_confidence'], atol=1e-5)
        # loudness uses a 32 ms FFT at either rate; dB levels depend on the FFT size (as in the
        # reference), so the contours agree up to a constant offset
        loud = a['loudness_db'] > -60
        assert loud.sum() > 100
        offset = b['loudness_db'][loud] - a['loudness_db'][loud]
        assert np.std(offset) < 0.5


def test_every_runner_runs_crepe_on_the_same_thread_count(monkeypatch):
    """The handler's TensorFlow thread count is fixed, not the worker's share of the cores, and
    loading the model sets it (tests/pipelines/test_prepare_e2e.py compares the bytes of runs
    with other shares)."""
    from ddsp_core import runtime
    from pipelines.crepe_inference import CREPE_THREADS, CrepeModelHandler

    calls = []
    monkeypatch.setattr(runtime, 'set_threads', lambda n: calls.append(n) or True)
    handler = CrepeModelHandler('tiny')
    assert handler.intra_op_threads == CREPE_THREADS == 1
    handler.load_model()
    assert calls == [1]


def _synthetic_chunk(n_frames, seed):
    """A chunk of n_frames + 1 CREPE frames (what the handler reads: spec and audio)."""
    spec = chunking.ChunkSpec(0, 1, 0, n_frames, 0, n_frames, (0,))
    audio = 0.3 * np.random.default_rng(seed).standard_normal(n_frames * 64)
    return {'path': f's{seed}', 'spec': spec, 'audio': audio.astype(np.float32),
            'audio_16k': None}


@pytest.mark.slow
def test_activations_do_not_depend_on_the_other_chunks_in_the_batch():
    """Byte-identical datasets across runs need a chunk's activations to be the same bits
    whichever chunks RunInference batches it with. (Concatenating the frames of several chunks
    into model calls broke this: a chunk whose last frame fell alone into a 1-frame call got
    different float round-off.)"""
    handler = CrepeModelHandler('tiny', 250, inference_batch_size=512)
    model = handler.load_model()
    a = _synthetic_chunk(300, 0)  # 301 frames
    alone = handler.run_inference([a], model)[0].inference
    for n_other in (211, 212, 213, 723, 100, 511, 1023):
        other = _synthetic_chunk(n_other, n_other)
        before = handler.run_inference([other, a], model)[1].inference
        after = handler.run_inference([a, other], model)[0].inference
        np.testing.assert_array_equal(before, alone, err_msg=f'after {n_other + 1} frames')
        np.testing.assert_array_equal(after, alone, err_msg=f'before {n_other + 1} frames')


def test_the_handler_runs_crepe_in_the_precision_and_at_the_rate_it_is_given():
    frames = lambda result: len(result.inference)  # noqa: E731
    chunk = _synthetic_chunk(250, 3)  # 1 s: 251 frames at 250 frames/s
    here = resolve_crepe_precision('auto')
    for precision, rate, n_frames in [('bfloat16', 100, 101), ('float32', None, 251),
                                      ('auto', None, 251)]:
        handler = CrepeModelHandler('tiny', 250, precision=precision, crepe_rate=rate)
        model = handler.load_model()  # 'auto': resolved here, in the worker
        assert model.precision == (here if precision == 'auto' else precision)
        (result,) = handler.run_inference([chunk], model)
        assert frames(result) == n_frames
        assert result_precision(result) == model.precision  # for the manifest's f0 block


def test_the_handler_and_the_decoding_put_a_chunk_on_the_same_analysis_grid():
    """One offset (chunking.crepe_offset) for the zeros the handler puts before a chunk's
    segment and for where the decoding reads the analysis frames: the padded segment starts on
    the whole file's 10 ms grid (16 kHz hops of 160), and nothing is added at the frame rate."""
    audio = np.ones(64 * 40, np.float32)
    for seg_first in (0, 1, 3, 7, 250, 251):
        spec = chunking.ChunkSpec(0, 1, seg_first, seg_first + 40, seg_first, seg_first + 40,
                                  (seg_first,))
        chunk = {'spec': spec, 'audio': audio, 'audio_16k': None}
        lead = chunking.crepe_offset(spec, 250, 100)
        assert 0 <= lead < 160 and (seg_first * 64 - lead) % 160 == 0
        padded = CrepeModelHandler('tiny', 250, crepe_rate=100).analysed_audio(chunk)
        assert len(padded) == len(audio) + lead and not padded[:lead].any()
        assert chunking.crepe_offset(spec, 250, 250) == 0
        assert CrepeModelHandler('tiny', 250).analysed_audio(chunk) is audio
