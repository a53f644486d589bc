"""ddsp-transfer: analysis as ddsp-prepare, auto-adjust, streamed synthesis equal to one-shot,
no seams, --dry, bounded memory, the CLI and MLflow logging."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from ddsp_core import records
from tests.markers import gives
from tests.trainer.conftest import TINY_LAYOUT
from trainer import testing
from trainer.serving import transfer as tr
from trainer.serving import transfer_adjust as adj
from trainer.serving import transfer_analysis as ana
from trainer.serving import transfer_audio as aud
from trainer.serving.streaming import StreamingSynth

ROOT = Path(__file__).resolve().parents[3]
#: The training tones' pitch range: a melody in 220-300 Hz is an octave below it.
TRAIN_F0 = (400.0, 700.0)


# ---- fixtures ------------------------------------------------------------------------------------
def _add_statistics(data_dir: Path) -> None:
    """Give a trainer.testing dataset the manifest statistics ddsp-prepare writes (computed by
    the same pipelines.stats code), and CREPE tiny as its preparation option."""
    from pipelines import stats

    acc = stats.empty_split_stats()
    for shard in sorted(data_dir.glob('train-*.tfrecord')):
        for raw in tf.data.TFRecordDataset(str(shard)):
            example = records.parse_example(raw.numpy(), str(shard))
            one = stats.example_stats('train', example, 0)
            one.pop('split')
            acc = stats.merge_split_stats(acc, one)
    path = data_dir / records.MANIFEST
    manifest = json.loads(path.read_text())
    summary = stats.summarize_split(acc, TINY_LAYOUT.example_secs)
    manifest['splits']['train'].update({k: v for k, v in summary.items() if k != 'examples'})
    manifest['f0_range_hz'] = [summary['f0_hz']['p01'], summary['f0_hz']['p99']]
    manifest['options'] = {'crepe_capacity': 'tiny', 'viterbi': True}
    path.write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope='module')
@gives('trains')
def model_dir(tmp_path_factory, tiny_config):
    """A tiny model trained 200 steps on harmonic tones of 400-700 Hz."""
    from trainer.training.train import train

    root = tmp_path_factory.mktemp('transfer_model')
    data = root / 'data'
    testing.write_dataset(data, TINY_LAYOUT, n_examples=8, n_shards=1, f0_range=TRAIN_F0,
                          seed=1)
    _add_statistics(data)
    train(tiny_config, str(data), root / 'model', 200, track=False, progress=False)
    return root / 'model'


@pytest.fixture(scope='module')
def trained(model_dir):
    from trainer.serving.inference import TrainedModel

    return TrainedModel.load(model_dir)


def _tone_file(path, notes, note_secs, sample_rate=22050, gap_secs=0.0, channels=1,
               amplitude=0.4):
    """Sine notes (Hz, 0 for a rest), each ``note_secs`` then ``gap_secs`` of silence."""
    parts, phase = [], 0.0
    for hz in notes:
        n = int(note_secs * sample_rate)
        ph = phase + 2 * np.pi * hz * np.arange(1, n + 1) / sample_rate
        phase = ph[-1] % (2 * np.pi)
        ramp = np.minimum(1.0, np.minimum(np.arange(n), n - np.arange(n)) / (0.01 * sample_rate))
        parts.append(amplitude * np.sin(ph) * ramp * (hz > 0))
        parts.append(np.zeros(int(gap_secs * sample_rate)))
    mono = np.concatenate(parts).astype(np.float32)
    data = mono if channels == 1 else np.stack([mono * (1 - 0.3 * c) for c in range(channels)], 1)
    sf.write(str(path), data, sample_rate)
    return path


def _controls(n_frames: int, seed: int = 0):
    """A melody of f0 and loudness controls (frame rate 250)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / 250.0
    f0 = 450.0 * 2.0 ** (np.round(5 * np.sin(1.3 * t + rng.uniform(0, 3))) / 12.0)
    loud = -25.0 + 12.0 * np.sin(3.1 * t) + rng.normal(0, 0.5, n_frames)
    return f0.astype(np.float32), loud.astype(np.float32)


# ---- analysis ------------------------------------------------------------------------------------
def test_settings_match_ddsp_prepare_and_trainer_does_not_import_pipelines():
    from pipelines import options, stats

    assert records.LOUDNESS_WINDOW_SECS == options.LOUDNESS_WINDOW_SECS
    assert ana.VITERBI_CONTEXT_SECS == options.VITERBI_CONTEXT_SECS
    assert adj.VOICED_CONFIDENCE == stats.VOICED_CONFIDENCE
    assert ana.loudness_n_fft(16000) == options.PrepareOptions().loudness_n_fft == 512
    code = ('import sys, trainer.serving.transfer, trainer.serving.streaming; '
            'bad = [m for m in sys.modules if m.split(".")[0] in ("pipelines", "apache_beam")]; '
            'print(bad); sys.exit(1 if bad else 0)')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize('model_rate', [16000, 48000])
def test_analysis_in_chunks_equals_whole_file_features(tmp_path, model_rate):
    """Chunked analysis of a stereo 44.1 kHz file = the whole file's features computed as
    ddsp-prepare computes them (mix-down, soxr HQ, centred loudness frames, CREPE)."""
    import soxr

    from ddsp_core.f0 import predict_f0
    from ddsp_core.spectral_ops import compute_loudness

    path = _tone_file(tmp_path / 'in.wav', [220.0, 330.0, 0.0, 261.6], 0.8, sample_rate=44100,
                      channels=2)
    stereo, rate = sf.read(str(path), dtype='float32')
    mono = stereo.mean(axis=1, dtype=np.float32)
    audio = soxr.resample(mono, rate, model_rate, quality='HQ')
    audio16 = soxr.resample(mono, rate, 16000, quality='HQ')
    from trainer.model.autoencoder import frame_power_db

    n_fft = ana.loudness_n_fft(model_rate)
    loud = compute_loudness(audio, model_rate, 250, n_fft=n_fft, use_tf=False, padding='center')
    power = np.asarray(frame_power_db(audio[np.newaxis], model_rate, 250, 1024))[0]
    # float32 every frame (the reference's way), and bfloat16 with the 10 ms analysis hop.
    for viterbi, precision, hop_ms in [(False, 'float32', None), (True, 'float32', None),
                                       (False, 'bfloat16', 10), (True, 'bfloat16', 10)]:
        f0, conf = predict_f0(audio16, 250, viterbi=viterbi, padding='center',
                              model_capacity='tiny', precision=precision, hop_ms=hop_ms)
        # (with the power's window, the analysis keeps more audio before each chunk: only
        # at 48 kHz, so that at 16 kHz the loudness and CREPE windows alone set what is kept)
        got = ana.analyze(path, model_rate, 250, 'tiny', viterbi=viterbi, chunk_secs=0.37,
                         power_frame_size=1024 if model_rate != 16000 else None,
                         crepe_precision=precision, f0_hop_ms=hop_ms)
        n = got.n_frames
        assert got.n_samples == len(audio) and n == -(-len(audio) // (model_rate // 250))
        np.testing.assert_allclose(got.loudness_db, loud[:n], atol=1e-4)
        if model_rate != 16000:
            np.testing.assert_allclose(got.power_db, power[:n], atol=1e-4)
        else:
            assert got.power_db is None
        np.testing.assert_allclose(got.f0_confidence, conf[:n], atol=1e-4)
        cents = 1200 * np.abs(np.log2(np.maximum(got.f0_hz, 1) / np.maximum(f0[:n], 1)))
        # Viterbi decodes each chunk with 0.25 s of context, as ddsp-prepare does.
        assert np.mean(cents < 1.0) >= (1.0 if not viterbi else 0.99)


def test_crepe_runs_in_a_worker_thread_on_each_analysis_frame_once():
    """CrepeStream: the model calls run outside the calling thread (overlapped with its
    decoding and Viterbi work), every frame of the file's grid is computed once and comes back
    in order, equal to framing the whole signal; at most max_pending calls are in flight."""
    import threading

    from ddsp_core import audio_stream
    from ddsp_core.f0 import crepe_frames

    calls = []

    def forward(frames, batch_size):  # a stand-in model: [n, 1024] -> [n, 360]
        calls.append((threading.get_ident(), len(frames)))
        return np.repeat(frames[:, :1] + frames[:, 100:101], 360, axis=1)

    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    signal = audio_stream.SignalBuffer()
    with ana.CrepeStream(forward, signal, 100, batch_size=8, max_pending=2) as crepe:
        for i in range(0, len(x), 1500):
            signal.append(x[i:i + 1500])
            crepe.submit_ready()
            assert len(crepe._pending) <= 2
        got = [crepe.activations(0, 40), crepe.activations(40, 70)]
        crepe.drop_before(70)
        got.append(crepe.activations(70, 101))  # the last frames: past the end, zeros
        with pytest.raises(ValueError, match='dropped'):
            crepe.activations(60, 80)
    whole = forward(crepe_frames(x, 100, padding='center'), 8)
    np.testing.assert_array_equal(np.concatenate(got), whole)
    assert threading.get_ident() not in {t for t, _ in calls[:-1]}
    assert sum(n for _, n in calls[:-1]) == 101  # each frame once (the last call: `whole`)


@pytest.mark.parametrize('frame_rate,power_size', [(50, 1024), (250, 2048)])
def test_frame_power_at_16_khz_in_chunks_equals_the_whole_files(tmp_path, frame_rate,
                                                                 power_size):
    """At 16 kHz (the vst preset's rate: 50 frames/s, 1024-sample power frames) the model-rate
    signal is also CREPE's: chunking keeps what both the power window and CREPE need."""
    import soxr

    from trainer.model.autoencoder import frame_power_db

    path = _tone_file(tmp_path / 'in.wav', [220.0, 330.0, 0.0, 261.6], 0.8, sample_rate=22050)
    mono, rate = sf.read(str(path), dtype='float32')
    audio = soxr.resample(mono, rate, 16000, quality='HQ')
    power = np.asarray(frame_power_db(audio[np.newaxis], 16000, frame_rate, power_size))[0]
    got = ana.analyze(path, 16000, frame_rate, 'tiny', viterbi=False, chunk_secs=0.37,
                     power_frame_size=power_size)
    np.testing.assert_allclose(got.power_db, power[:got.n_frames], atol=1e-4)


def test_silent_and_unreadable_inputs_are_refused(tmp_path):
    silent = tmp_path / 'silent.wav'
    sf.write(str(silent), np.zeros(8000, np.float32), 16000)
    with pytest.raises(aud.TransferError, match='silent'):
        ana.analyze(silent, 16000, 250, 'tiny')
    hiss = tmp_path / 'hiss.wav'  # not all zeros, but nothing above -70 dB
    sf.write(str(hiss), np.random.default_rng(0).normal(0, 1e-5, 8000).astype(np.float32),
             16000, subtype='FLOAT')
    with pytest.raises(aud.TransferError, match='silent'):
        ana.analyze(hiss, 16000, 250, 'tiny')
    garbage = tmp_path / 'garbage.wav'
    garbage.write_bytes(b'not audio at all' * 100)
    with pytest.raises(aud.TransferError, match='cannot read audio'):
        aud.audio_info(garbage)
    with pytest.raises(aud.TransferError, match='file not found'):
        aud.audio_info(tmp_path / 'missing.wav')
    with pytest.raises(aud.TransferError, match='unknown audio format'):
        aud.check_output(tmp_path / 'out.xyz')


def test_a_failed_write_leaves_the_earlier_output_and_no_partial_file(tmp_path):
    out = tmp_path / 'out.wav'
    earlier = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    sf.write(str(out), earlier, 16000, subtype='FLOAT')

    def failing():
        yield np.full(800, 0.1, np.float32)
        raise RuntimeError('synthesis failed half way')

    with pytest.raises(RuntimeError, match='half way'):
        aud.write_audio(failing(), out, 16000, 1600, subtype='FLOAT')
    kept, _ = sf.read(str(out), dtype='float32')
    np.testing.assert_array_equal(kept, earlier)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.wav']
    # and a complete write replaces it
    aud.write_audio(iter([np.full(1600, 0.25, np.float32)]), out, 16000, 1600, subtype='FLOAT')
    np.testing.assert_array_equal(sf.read(str(out), dtype='float32')[0], np.full(1600, 0.25))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.wav']
    with pytest.raises(aud.TransferError, match='give --subtype'):
        aud.check_output(tmp_path / 'out.raw')


# ---- auto-adjust ---------------------------------------------------------------------------------
def test_octave_shift_moves_the_pitch_into_the_training_range():
    melody = np.array([220.0, 247.0, 277.0, 294.0])
    assert adj.octave_shift(melody, (400.0, 700.0)) == 1
    assert adj.octave_shift(melody * 8, (400.0, 700.0)) == -2
    assert adj.octave_shift(melody * 2, (400.0, 700.0)) == 0
    # A wide range that holds the melody at several shifts: the one nearest the mean pitch.
    assert adj.octave_shift(melody, (100.0, 1600.0), f0_mean_hz=900.0) == 2
    assert adj.octave_shift(np.zeros(3), (400.0, 700.0)) == 0


def test_quantile_map_puts_the_input_distribution_on_the_training_one():
    rng = np.random.default_rng(0)
    source = rng.normal(-35.0, 3.0, 20000)
    target = rng.normal(-12.0, 6.0, 20000)
    mapped = adj.quantile_map(source, np.percentile(source, np.arange(101)),
                             np.percentile(target, np.arange(101)))
    np.testing.assert_allclose(np.percentile(mapped, [5, 25, 50, 75, 95]),
                               np.percentile(target, [5, 25, 50, 75, 95]), atol=0.3)
    assert np.all(np.diff(mapped[np.argsort(source)]) >= -1e-9)  # monotone
    # Silence stays at the floor; values above the input's range keep their distance.
    edge = adj.quantile_map(np.array([-80.0, source.max() + 10.0]),
                           np.percentile(source, np.arange(101)),
                           np.percentile(target, np.arange(101)))
    assert edge[0] == pytest.approx(-80.0)
    assert edge[1] == pytest.approx(np.percentile(target, 99) + source.max() + 10.0
                                    - np.percentile(source, 99), abs=1e-3)


def _manifest_from_examples(examples):
    """A manifest built by ddsp-prepare's own code from examples' features."""
    from pipelines import manifest, stats
    from pipelines.options import PrepareOptions

    acc = stats.empty_split_stats()
    for ex in examples:
        one = stats.example_stats('train', ex, 0)
        one.pop('split')
        acc = stats.merge_split_stats(acc, one)
    opts = PrepareOptions(crepe_capacity='tiny')
    return records.Manifest(manifest.build_manifest(opts, ['x'], [], {'train': acc}, {}, 0),
                            'data/manifest.json')


def _features(f0, conf, loud, frame_rate=250):
    hop = 16000 // frame_rate
    return ana.Features(np.asarray(f0, np.float32), np.asarray(conf, np.float32),
                       np.asarray(loud, np.float32), len(f0) * hop, 16000, frame_rate, 0.5)


def test_adjust_maps_loudness_onto_the_manifest_percentiles_or_mean_std():
    rng = np.random.default_rng(1)
    n = 5000
    train_loud = rng.normal(-10.0, 4.0, n)
    manifest = _manifest_from_examples([{
        'loudness_db': train_loud.astype(np.float32), 'f0_confidence': np.full(n, 0.9),
        'f0_hz': rng.uniform(400, 700, n)}])
    stats = adj.TrainingStats.from_manifest(manifest)
    assert stats.loudness_percentiles is not None and len(stats.loudness_percentiles) == 101
    assert stats.f0_range_hz == pytest.approx((400, 700), rel=0.02)
    feats = _features(rng.uniform(200, 300, n), np.full(n, 0.9), rng.normal(-40.0, 2.0, n))
    f0, loud, info = adj.adjust(feats, stats)
    assert info.octaves == 1 and info.pitch_shift == 12.0
    assert info.loudness_mapping == 'quantiles'
    np.testing.assert_allclose(f0, feats.f0_hz * 2, rtol=1e-6)
    np.testing.assert_allclose(np.percentile(loud, [10, 50, 90]),
                               np.percentile(train_loud, [10, 50, 90]), atol=0.5)
    # A manifest without percentiles (older ddsp-prepare): mean and std are matched.
    del manifest.data['splits']['train']['loudness_db']['voiced_percentiles']
    _, loud, info = adj.adjust(feats, adj.TrainingStats.from_manifest(manifest))
    assert info.loudness_mapping == 'mean_std'
    assert np.mean(loud) == pytest.approx(-10.0, abs=0.3)
    assert np.std(loud) == pytest.approx(4.0, abs=0.3)
    # Manual shifts come on top, auto-adjust off leaves the rest alone; no statistics: say so.
    f0, loud, info = adj.adjust(feats, stats, auto_adjust=False, pitch_shift=-7,
                               loudness_shift=3)
    np.testing.assert_allclose(f0, feats.f0_hz * 2 ** (-7 / 12), rtol=1e-5)
    np.testing.assert_allclose(loud, feats.loudness_db + 3, atol=1e-5)
    assert info.octaves == 0 and info.loudness_mapping == 'none'
    _, _, info = adj.adjust(feats, None)
    assert 'no dataset statistics' in info.describe()


def test_adjust_attenuates_unconfident_quiet_frames_only():
    n = 1500
    conf = np.where((np.arange(n) // 250) % 2 == 0, 0.9, 0.05)  # 1 s notes, 1 s breaths
    loud = np.where(conf > 0.5, -20.0, -50.0)
    feats = _features(np.full(n, 300.0), conf, loud)
    stats = adj.TrainingStats((400.0, 700.0), 530.0, None, None, None)
    _, plain, _ = adj.adjust(feats, stats, quiet_db=0.0)
    _, quiet, info = adj.adjust(feats, stats, quiet_db=20.0)
    core_note = (conf > 0.5) & (np.abs(np.arange(n) % 250 - 125) < 100)
    core_breath = (conf < 0.5) & (np.abs(np.arange(n) % 250 - 125) < 100)
    np.testing.assert_allclose(quiet[core_note], plain[core_note])
    assert np.all(plain[core_breath] - quiet[core_breath] > 15.0)
    assert 0.3 < info.attenuated_fraction < 0.7


# ---- streaming (its building blocks are ddsp_core's: tests/ddsp_core/test_synths.py) -------
def _one_shot(model, f0, loud, seed, dry=False):
    """The model's own whole-sequence rendering (its window set to the sequence's length);
    ``loud`` is also the power for a decoder that takes it."""
    from trainer.model.autoencoder import NOISE_SEED_KEY

    hop = model.data_config.n_samples // model.data_config.n_frames
    batch = {'audio': tf.zeros([1, len(f0) * hop]), 'f0_hz': f0[np.newaxis],
             'loudness_db': loud[np.newaxis], 'power_db': loud[np.newaxis],
             NOISE_SEED_KEY: tf.constant(seed, tf.int32)}
    out = model.preprocess(batch)
    out.update(model.decoder(out))
    group = model.processor_group(out, return_outputs_dict=True)
    signal = group['controls']['add']['signal'] if dry else group['signal']
    return np.asarray(signal)[0]


def _untrained(overrides, secs, frame_rate=250):
    import dataclasses

    from trainer.model.autoencoder import Autoencoder
    from trainer.model.config import load_preset, resolve_data

    config = resolve_data(load_preset('tiny').with_overrides(overrides),
                          records.Layout(16000, frame_rate, secs), 'test')
    data = dataclasses.replace(config.data, example_secs=secs)
    model = Autoencoder(config.model, data)
    model(model.dummy_features(1))
    return model


VST_LIKE = ['model.decoder_inputs=[pw_scaled, f0_scaled]', 'model.amp_resample_method=linear',
            'model.noise_window_size=0']


@pytest.mark.parametrize('overrides,frame_rate', [
    (['model.rnn_type=gru'], 250), (['model.rnn_type=keras_gru'], 250),
    (['model.rnn_type=lstm'], 250), (VST_LIKE, 50),
    (['model.n_noise_bands=129', 'model.noise_window_size=0'], 250),
    (['model.reverb_type=exp_decay', 'model.reverb_length=6000'], 250)],
    ids=['gru', 'keras_gru', 'lstm', 'power+linear@50fps', 'noise filters longer than a hop',
         'exp_decay room'])
def test_streamed_equals_one_shot_for_every_decoder_and_synth_setting(overrides, frame_rate):
    model = _untrained(overrides, 1.2, frame_rate)
    n = int(1.2 * frame_rate)
    f0, loud = _controls(n)
    reference = _one_shot(model, f0, loud, (0, 4))
    # The one-shot model renders the whole sequence as one chunk of the same synthesis (exact
    # interpolation positions t / hop, also for a hop of 320 that is not a power of two).
    rel = 2e-6
    for chunk in (1, 37, 1000):
        synth = StreamingSynth(model, chunk_frames=chunk, noise_seed=(0, 4))
        out = synth.synthesize(f0, loud, loud if synth.uses_power else None)
        np.testing.assert_allclose(out, reference, atol=rel * np.abs(reference).max() + 1e-7,
                                   err_msg=f'{overrides}, {chunk}-frame chunks')


def test_transfer_feeds_the_frame_power_to_decoders_that_take_it(tmp_path):
    """A decoder on power + f0 (the DDSP-VST models) gets the input's frame power, moved by
    the same amount as auto-adjust moves the loudness."""
    from trainer.model.config import load_preset, resolve_data
    from trainer.serving.inference import TrainedModel

    model = _untrained(VST_LIKE, 1.0, 50)
    config = resolve_data(load_preset('tiny').with_overrides(VST_LIKE),
                          records.Layout(16000, 50, 1.0), 'test')
    stats = records.Manifest(
        {'splits': {'train': {'f0_hz': {'p01': 400.0, 'p99': 700.0},
                              'loudness_db': {'voiced_mean': -10.0, 'voiced_std': 3.0}}},
         'options': {'crepe_capacity': 'tiny'}}, 'data/manifest.json')
    trained = TrainedModel(model, config, 0, tmp_path, stats, {})
    path = _tone_file(tmp_path / 'in.wav', [250.0, 0.0, 280.0], 0.5)
    result = tr.transfer(trained, path, tmp_path / 'out.wav')
    feats = result.features
    assert feats.power_db is not None and result.power_db is not None
    assert result.adjustment.loudness_mapping == 'mean_std' and result.adjustment.octaves == 1
    expected = np.maximum(feats.power_db + (result.loudness_db - feats.loudness_db), -80.0)
    np.testing.assert_allclose(result.power_db, expected, atol=1e-4)
    audio, rate = sf.read(str(result.output), dtype='float32')
    assert rate == 16000 and len(audio) == feats.n_samples and np.all(np.isfinite(audio))


# ---- with a trained model ------------------------------------------------------------------------
def test_streamed_equals_one_shot_wet_and_dry(trained):
    """Decoder state, oscillator phase, noise filter tails and reverb tail are all carried:
    any chunking gives the one-shot audio of the whole sequence (same noise seed)."""
    from trainer.serving.inference import TrainedModel

    f0, loud = _controls(1000, seed=3)
    whole = TrainedModel.load(trained.model_dir, example_secs=4.0)
    reference = whole.resynthesize({'f0_hz': f0[None], 'loudness_db': loud[None]}, seed=7)[0]
    seed = (trained.config.train.seed, 7)
    reference_dry = _one_shot(whole.model, f0, loud, seed, dry=True)
    tol = 2e-6 * np.abs(reference).max()
    for chunk in (3, 37, 250, 4000):
        out = StreamingSynth(trained.model, chunk, noise_seed=seed).synthesize(f0, loud)
        np.testing.assert_allclose(out, reference, atol=tol, err_msg=f'{chunk}-frame chunks')
        dry = StreamingSynth(trained.model, chunk, reverb=False,
                             noise_seed=seed).synthesize(f0, loud)
        np.testing.assert_allclose(dry, reference_dry, atol=tol, err_msg=f'dry, {chunk}')
    assert np.sum((reference - reference_dry) ** 2) > 1e-3 * np.sum(reference ** 2)


def _spectral_flux(audio, n_fft=256, hop=64):
    """Relative change of the magnitude spectrum between consecutive frames, and the frames'
    start samples."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    mags = np.abs(np.fft.rfft(frames, axis=1))
    flux = np.sum(np.abs(np.diff(mags, axis=0)), axis=1) / np.sum(mags[1:], axis=1)
    return flux, np.arange(1, len(mags)) * hop


def _edge_flux(audio, chunk_samples, n_fft=256, hop=64, settle=4800):
    """(largest flux of frames that overlap a chunk edge, largest of the others), after the
    first ``settle`` samples."""
    flux, starts = _spectral_flux(audio, n_fft, hop)
    edges = np.arange(chunk_samples, len(audio), chunk_samples)
    near = np.zeros(len(flux), bool)
    for e in edges:
        near |= (starts - hop < e) & (e < starts + n_fft)
    steady = starts > settle
    return flux[near & steady].max(), flux[~near & steady].max()


def test_no_spectral_jump_at_chunk_edges(trained):
    n, chunk = 1000, 50
    t = np.arange(n) / 250.0
    f0 = (500.0 * (1 + 0.003 * np.sin(2 * np.pi * 5 * t))).astype(np.float32)  # a steady note
    loud = np.full(n, -20.0, np.float32)
    for reverb in (True, False):
        audio = StreamingSynth(trained.model, chunk, reverb=reverb).synthesize(f0, loud)
        at_edges, elsewhere = _edge_flux(audio, chunk * 64)
        assert at_edges <= 1.25 * elsewhere, (reverb, at_edges, elsewhere)
    # The measure sees seams: chunks rendered independently (no state carried) show them.
    fresh = StreamingSynth(trained.model, chunk)  # each synthesize() starts from scratch
    spliced = np.concatenate([fresh.synthesize(f0[a:a + chunk], loud[a:a + chunk])
                              for a in range(0, n, chunk)])
    at_edges, elsewhere = _edge_flux(spliced, chunk * 64)
    assert at_edges > 2 * elsewhere


def test_melody_follows_the_input_after_the_octave_adjustment(trained, tmp_path):
    """A sine melody an octave below the training tones comes out an octave up, on pitch."""
    from ddsp_core.f0 import predict_f0
    from trainer.evaluation import metrics

    notes, secs = [220.0, 246.9, 277.2, 293.7, 261.6], 1.0
    path = _tone_file(tmp_path / 'melody.wav', notes, secs)
    frames = np.arange(int(len(notes) * secs * 250)) / 250.0
    expected = 2 * np.asarray(notes)[np.minimum((frames / secs).astype(int), len(notes) - 1)]
    since_onset = frames % secs
    for dry, settle in ((True, 0.03), (False, 0.12)):  # the reverb blurs note changes
        result = tr.transfer(trained, path, tmp_path / f'out_{dry}.wav', dry=dry)
        assert result.adjustment.octaves == 1
        audio, rate = sf.read(str(result.output), dtype='float32')
        assert rate == 16000 and len(audio) == result.features.n_samples
        f0, _ = predict_f0(audio, 250, model_capacity='tiny')
        n = min(len(f0), len(expected))
        scored = ((since_onset > settle) & (since_onset < secs - 0.03))[:n].astype(np.float32)
        rpa = metrics.raw_pitch_accuracy(expected[:n], f0[:n], scored)
        assert rpa >= 0.9, (dry, rpa)


def test_dry_has_less_energy_after_note_offsets(trained, tmp_path):
    """--dry leaves out the reverb: after each note ends the wet output rings on, the dry one
    does not (the reverb set to a clear 0.25 s tail, so the test does not hang on what 200
    training steps learned)."""
    from trainer.serving.inference import TrainedModel

    model = TrainedModel.load(trained.model_dir)
    reverb = model.model.processor_group.processors[-1]
    length = int(reverb.reverb_length)
    rng = np.random.default_rng(0)
    reverb._ir.assign((0.05 * rng.normal(size=length) * np.exp(-6.0 * np.arange(length) / length))
                      .astype(np.float32))
    note, gap, rate = 0.4, 0.4, 16000
    path = _tone_file(tmp_path / 'notes.wav', [250.0, 300.0, 280.0], note, rate, gap_secs=gap)
    energy = {}
    for dry in (False, True):
        result = tr.transfer(model, path, tmp_path / f'{dry}.wav', dry=dry)
        audio, _ = sf.read(str(result.output), dtype='float64')
        offsets = [int(((note + gap) * k + note) * rate) for k in range(3)]
        energy[dry] = sum(np.sum(audio[o + int(0.03 * rate):o + int(0.3 * rate)] ** 2)
                          for o in offsets)
    assert energy[True] < 0.5 * energy[False], energy


def _set_room(model, rt60: float, seed: int) -> None:
    """Give a model's learned reverb a known room: an exponential-decay IR of ``rt60``."""
    from ddsp_core.analysis import exponential_decay_ir
    from trainer.serving.streaming import room_of

    room = room_of(model.model)
    ir = exponential_decay_ir(rt60, model.sample_rate, room.reverb_length / model.sample_rate,
                              seed=seed)
    next(w for w in room.weights if 'ir' in w.path.split('/')[-1]).assign(ir)


def test_reverb_from_renders_in_the_room_models_room(model_dir, tmp_path):
    """--reverb_from: the output is this model's dry synthesis in the room model's room. The
    output's impulse response (deconvolved against the dry synthesis of the same controls) has
    the room model's RT60 (0.2 s), not the source model's own (0.06 s)."""
    from ddsp_core.analysis import estimate_ir, rt60_from_ir
    from trainer.serving.inference import TrainedModel
    from trainer.serving.streaming import StreamingSynth, room_of

    source, room = TrainedModel.load(model_dir), TrainedModel.load(model_dir)
    _set_room(source, 0.06, seed=1)
    _set_room(room, 0.2, seed=2)
    path = _tone_file(tmp_path / 'notes.wav', [250.0, 300.0, 280.0], 0.4, 16000, gap_secs=0.4)
    result = tr.transfer(source, path, tmp_path / 'room.wav', subtype='FLOAT', reverb_from=room)
    assert result.settings['reverb_from'] == {'model': str(room.model_dir), 'step': room.step}
    in_room, _ = sf.read(str(result.output), dtype='float64')
    seed = (source.config.train.seed, 0)  # transfer's default noise seed
    dry, own = (StreamingSynth(source.model, reverb=reverb, noise_seed=seed).synthesize(
        result.f0_hz, result.loudness_db).astype(np.float64) for reverb in (False, True))
    n_ir = room_of(room.model).reverb_length
    rt60 = {name: rt60_from_ir(estimate_ir(dry, out - dry, n_ir), 16000)
            for name, out in (('room', in_room), ('own', own))}
    assert rt60['room'] == pytest.approx(0.2, rel=0.1), rt60
    # a short decay is blurred by the deconvolution's regularisation: measured 0.074 s
    assert rt60['own'] == pytest.approx(0.06, rel=0.3), rt60
    assert rt60['room'] > 2 * rt60['own']


def test_reverb_from_refuses_a_model_without_a_room_or_at_another_rate(trained, tiny_config):
    from trainer.model.autoencoder import Autoencoder
    from trainer.model.config import resolve_data
    from trainer.serving.streaming import StreamingError, room_of

    config = resolve_data(tiny_config.with_overrides(['model.use_reverb=false']), TINY_LAYOUT,
                          'test')
    no_room = Autoencoder(config.model, config.data)
    with pytest.raises(StreamingError, match='no learned reverb'):
        room_of(no_room)
    with pytest.raises(tr.TransferError, match='at 16000 Hz, the model renders at 22050'):
        tr.load_room(trained, 22050)
    with pytest.raises(tr.TransferError, match='--reverb_from and --dry'):
        tr.load_room(trained, 16000, dry=True)
    assert tr.load_room(trained, 16000) == (trained, room_of(trained.model))


# ---- the CLI -------------------------------------------------------------------------------------
def test_only_rooms_with_a_fixed_impulse_response_are_streamed():
    """The learned IR or the exponential decay over fixed noise streams; a room that draws new
    noise on each call, has no dry path or is not learned is refused, saying why."""
    from types import SimpleNamespace

    from ddsp_core import effects
    from trainer.model.autoencoder import LearnedExpDecayReverb
    from trainer.serving.streaming import StreamingError, room_of

    def model_with(reverb):
        return SimpleNamespace(processor_group=SimpleNamespace(processors=[reverb]))

    for good in (effects.Reverb(trainable=True, reverb_length=100), LearnedExpDecayReverb(100)):
        assert room_of(model_with(good)) is good
    for bad in (effects.ExpDecayReverb(trainable=True, reverb_length=100),
                effects.FilteredNoiseReverb(trainable=True, reverb_length=100, n_frames=10),
                effects.Reverb(trainable=True, reverb_length=100, add_dry=False),
                effects.Reverb(trainable=False)):
        with pytest.raises(StreamingError, match='supports the trainable Reverb'):
            room_of(model_with(bad))


def test_help_shows_the_defaults_without_starting_tensorflow():
    code = textwrap.dedent("""
        import sys
        from trainer.serving import transfer
        try:
            transfer.main(['--help'])
        finally:
            print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED')
    """)
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for expected in ('--no-auto_adjust', '--dry', '--reverb_from', '--pitch_shift',
                     '--loudness_shift',
                     '--crepe_capacity', '--log_to_mlflow', '(default: True)',
                     '(default: 4.0)', '(default: 20.0)', 'Exit codes', 'TF_NOT_LOADED'):
        assert expected in text, expected
    module = subprocess.run([sys.executable, '-m', 'trainer.serving.transfer', '--help'], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert module.returncode == 0 and 'ddsp-transfer' in module.stdout


def _cli(argv, capsys):
    rc = tr.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.err


def test_cli_errors_exit_2_with_one_line(model_dir, tmp_path, capsys):
    good = _tone_file(tmp_path / 'in.wav', [300.0], 0.5)
    silent = tmp_path / 'silent.flac'
    sf.write(str(silent), np.zeros(16000, np.float32), 16000)
    garbage = tmp_path / 'garbage.wav'
    garbage.write_bytes(b'RIFF....WAVEfmt garbage' * 50)
    no_checkpoint = tmp_path / 'no_ckpt'
    no_checkpoint.mkdir()
    shutil.copy(model_dir / 'config.json', no_checkpoint / 'config.json')
    out = tmp_path / 'out.wav'
    cases = [
        (['--input', tmp_path / 'missing.wav'], 'missing.wav: file not found'),
        (['--input', garbage], 'garbage.wav: cannot read audio'),
        (['--input', silent], 'silent.flac: silent'),
        (['--input', good, '--model', no_checkpoint], 'no checkpoint'),
        (['--input', good, '--output', tmp_path / 'out.xyz'], 'unknown audio format'),
        (['--input', good, '--chunk_secs', '0'], '--chunk_secs 0: must be positive'),
        (['--input', good, '--f0_hop_ms', '7'], '--f0_hop_ms: f0 hop of 7 ms'),
        (['--input', good, '--model', tmp_path / 'nowhere'], 'no such directory'),
        (['--input', good, '--dry', '--reverb_from', model_dir], '--reverb_from and --dry'),
        (['--input', good, '--reverb_from', no_checkpoint], f'--reverb_from {no_checkpoint}: '),
    ]
    for extra, message in cases:
        argv = ['--model', model_dir, '--output', out]
        argv += extra
        rc, err = _cli(argv, capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith('ddsp-transfer: error:')]
        assert rc == 2, (extra, err)
        assert len(errors) == 1 and message in errors[0], (extra, err)
    rc, err = _cli(['--model', model_dir, '--output', out, '--input', good, '--bogus'], capsys)
    assert rc == 2 and 'unrecognized arguments: --bogus' in err


def test_cli_transfers_and_logs_to_the_models_mlflow_run(model_dir, tmp_path, capsys):
    """Stereo 22.05 kHz FLAC in, output at the input's rate; --log_to_mlflow adds the input,
    output, spectrogram and settings to the model's run without changing its status."""
    from trainer.tracking.store import make_client

    model = tmp_path / 'model'
    shutil.copytree(model_dir, model)
    uri = f'sqlite:///{tmp_path / "mlflow.db"}'
    client = make_client(uri)
    experiment = client.create_experiment('transfer-test',
                                          artifact_location=str(tmp_path / 'artifacts'))
    run = client.create_run(experiment)
    client.set_terminated(run.info.run_id, 'FINISHED')
    (model / 'mlflow_run.json').write_text(json.dumps({'run_id': run.info.run_id,
                                                       'tracking_uri': uri}))
    source = _tone_file(tmp_path / 'voice.flac', [230.0, 260.0], 0.75, channels=2)
    out = tmp_path / 'violin.wav'
    rc, err = _cli(['--model', model, '--input', source, '--output', out, '--sample_rate',
                    '22050', '--log_to_mlflow', '--no_progress'], capsys)
    assert rc == 0, err
    info = sf.info(str(out))
    assert info.samplerate == 22050 and info.channels == 1
    assert abs(info.frames - 1.5 * 22050) <= 2
    assert 'auto +1 octave' in err and 'logged' in err
    (folder,) = client.list_artifacts(run.info.run_id, 'transfer')
    names = sorted(Path(f.path).name for f in client.list_artifacts(run.info.run_id,
                                                                   folder.path))
    assert names == ['input.flac', 'output.wav', 'spectrogram.png', 'transfer.json']
    assert client.get_run(run.info.run_id).info.status == 'FINISHED'
    local = client.download_artifacts(run.info.run_id, f'{folder.path}/transfer.json',
                                      str(tmp_path))
    summary = json.loads(Path(local).read_text())
    assert summary['adjustment']['octaves'] == 1 and summary['settings']['dry'] is False


# ---- memory --------------------------------------------------------------------------------------
MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys, tracemalloc
    import numpy as np, soundfile as sf
    from trainer.serving import transfer as tr
    from trainer.serving import transfer_audio as aud
    from trainer.serving.inference import TrainedModel
    from trainer.serving.streaming import StreamingSynth

    model_dir, tmp = sys.argv[1], sys.argv[2]
    model = TrainedModel.load(model_dir)
    synth = StreamingSynth(model.model)

    def write(path, secs, rate=22050):  # one-second notes, written a second at a time
        rng = np.random.default_rng(0)
        with sf.SoundFile(path, 'w', rate, 1, subtype='FLOAT') as f:
            for _ in range(secs):
                t = np.arange(rate) / rate
                f.write((0.3 * np.sin(2 * np.pi * rng.uniform(200, 300) * t)
                         * (t < 0.8)).astype(np.float32))

    out = {}
    for secs in (30, 30, 180):  # the first run warms up (graphs, CREPE, allocator pools)
        path = f'{tmp}/in{secs}.wav'
        write(path, secs)
        result = tr.transfer(model, path, f'{tmp}/out{secs}.wav')  # the whole CLI path
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # Synthesis alone (decoder, synthesizers, reverb, file writing), under tracemalloc.
        tracemalloc.start()
        blocks = synth.render(result.f0_hz, result.loudness_db)
        aud.write_audio(blocks, f'{tmp}/synth{secs}.wav', synth.sample_rate,
                        result.features.n_samples)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        out[secs] = {'rss_mb': rss, 'synthesis_peak_mb': peak}
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_three_minute_input_transfers_with_bounded_memory(model_dir, tmp_path):
    """A 3-minute input needs no more memory than a 30 s one: the synthesis' peak of
    Python-side allocations (tracemalloc: numpy arrays) stays that of one chunk (the whole 3
    minutes of output alone would be 11 MB more), and the process's peak RSS over the whole
    transfer grows by far less than one whole-file array of per-harmonic samples would take
    (16 harmonics x 2.9 M samples x 4 bytes = 184 MB)."""
    out = subprocess.run([sys.executable, '-c', MEMORY_SCRIPT, str(model_dir), str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    short, long = measured['30'], measured['180']
    assert long['synthesis_peak_mb'] < 1.2 * short['synthesis_peak_mb'] + 1.0, measured
    assert long['rss_mb'] - short['rss_mb'] < 40, measured
    assert sf.info(str(tmp_path / 'out180.wav')).duration == pytest.approx(180.0, abs=1e-3)
