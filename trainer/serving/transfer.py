"""Timbre transfer: any recording, rendered by a trained model (``ddsp-transfer``).

Example::

    ddsp-transfer --model runs/violin --input voice.wav --output violin.wav
    ddsp-transfer --model runs:/RUN_ID --input song.flac --output out.wav --pitch_shift -12 \\
        --no-auto_adjust --dry --log_to_mlflow

Steps (each a function, usable from Python; the modules by concern):

1. :func:`trainer.serving.transfer_analysis.analyze`: the input (any length, sample rate,
   channel count and format ``soundfile`` reads) is decoded block by block, mixed down to mono
   and resampled (``trainer.serving.transfer_audio.stream_audio``, through
   ``ddsp_core.audio_stream`` as ``ddsp-prepare`` does) to the model's sample rate and to
   CREPE's 16 kHz; f0 and confidence (CREPE, the dataset's capacity and Viterbi setting by
   default, in a worker thread overlapped with the rest) and loudness (A-weighted, 32 ms windows,
   centred frames: ``compute_loudness(use_tf=False, padding='center')``; and the frame power for
   decoders that take it) are computed in chunks whose frames equal the whole file's (Viterbi
   decoding runs per chunk with 0.25 s of context either side, as in preparation).
2. :func:`trainer.serving.transfer_adjust.adjust`: with ``auto_adjust``, the pitch moves by
   whole octaves towards the training data's pitch range, the loudness of voiced frames is
   mapped onto the training data's distribution (quantile mapping from the manifest's
   ``voiced_percentiles``; mean/std when the manifest has no percentiles) and unconfident, quiet
   frames are attenuated; then the manual ``pitch_shift`` (semitones) and ``loudness_shift``
   (dB) are added.
3. :class:`trainer.serving.streaming.StreamingSynth` renders the audio chunk by chunk (decoder
   state, oscillator phase, noise filter tails and reverb tail carried across chunks; the same
   audio as a one-shot rendering of the whole file) and it is written to the output file block
   by block (``trainer.serving.transfer_audio.write_audio``); ``dry`` leaves out the learned
   reverb, ``reverb_from`` uses another model's instead (:func:`load_room`).

This module holds :func:`transfer` (the three steps), :func:`log_to_mlflow` and the CLI.
Memory is bounded in the file's length: only frame-rate features are held for the whole file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ddsp_core import runtime
from ddsp_core.f0 import CREPE_PRECISIONS, analysis_rate, resolve_crepe_precision
from trainer.evaluation.evaluate import default_crepe_capacity
from trainer.serving.transfer_adjust import DB_FLOOR, QUIET_DB, Adjustment, TrainingStats, adjust
from trainer.serving.transfer_analysis import Features, analyze
from trainer.serving.transfer_audio import (
    TransferError,
    audio_info,
    check_output,
    read_head,
    write_audio,
)

logger = logging.getLogger(__name__)

#: Default synthesis chunk (s).
SYNTH_CHUNK_SECS = 4.0
#: Seconds of input and output in the spectrogram logged to MLflow.
SPECTROGRAM_SECS = 30.0


# ---- transfer ------------------------------------------------------------------------------------
@dataclasses.dataclass
class TransferResult:
    """What :func:`transfer` did: the output file, its length and rate, the input's features
    and the adjusted controls (``power_db`` only for decoders that take the frame power), the
    :class:`Adjustment`, the settings and timings (s)."""

    output: Path
    seconds: float
    sample_rate: int
    features: Features
    f0_hz: np.ndarray
    loudness_db: np.ndarray
    adjustment: Adjustment
    settings: dict
    timings: dict
    clipped: int = 0
    power_db: Optional[np.ndarray] = None

    def summary(self) -> dict:
        return {'output': str(self.output), 'seconds': self.seconds,
                'sample_rate': self.sample_rate, 'settings': self.settings,
                'adjustment': dataclasses.asdict(self.adjustment), 'timings': self.timings,
                'clipped_samples': self.clipped}


def _load_model(model, tracking_uri: Optional[str] = None):
    from trainer.serving.inference import TrainedModel

    if isinstance(model, TrainedModel):
        return model
    return TrainedModel.load(str(model), tracking_uri=tracking_uri)


def load_room(reverb_from, sample_rate: int, dry: bool = False,
              tracking_uri: Optional[str] = None):
    """``(the TrainedModel, its learned Reverb)`` of ``--reverb_from`` (a TrainedModel, a model
    directory or ``runs:/RUN_ID``), checked against a render at ``sample_rate``.

    Raises:
        TransferError: ``dry`` as well, a model without a learned reverb, another sample rate.
    """
    from trainer.serving.streaming import StreamingError, room_of

    if dry:
        raise TransferError('--reverb_from and --dry: a dry render has no room; use one')
    room_model = _load_model(reverb_from, tracking_uri)
    try:
        room = room_of(room_model.model)
    except StreamingError as e:
        raise TransferError(f'--reverb_from {reverb_from}: {e}') from None
    if room_model.sample_rate != sample_rate:
        raise TransferError(f'--reverb_from {reverb_from}: its room is at '
                            f'{room_model.sample_rate} Hz, the model renders at {sample_rate} '
                            'Hz (an impulse response is only valid at its own rate)')
    return room_model, room


def transfer(model, input_path: str | os.PathLike, output_path: str | os.PathLike, *,
             auto_adjust: bool = True, pitch_shift: float = 0.0, loudness_shift: float = 0.0,
             quiet_db: float = QUIET_DB, dry: bool = False, crepe_capacity: Optional[str] = None,
             crepe_precision: str = 'auto', f0_hop_ms: Optional[float] = None,
             chunk_secs: float = SYNTH_CHUNK_SECS, seed: int = 0,
             output_sample_rate: Optional[int] = None, subtype: Optional[str] = None,
             progress: bool = False, tracking_uri: Optional[str] = None,
             reverb_from=None) -> TransferResult:
    """Render ``input_path`` with a trained model into ``output_path``.

    Args:
        model: a :class:`trainer.serving.inference.TrainedModel`, a model directory or
        ``runs:/RUN_ID``. input_path: any audio file ``soundfile`` reads (any rate, channels mixed
        down). output_path: written block by block; the format follows the extension.
        auto_adjust, pitch_shift, loudness_shift, quiet_db: see :func:`adjust`.
        dry: leave out the learned reverb.
        crepe_capacity: default: the dataset's (its manifest's options), else 'full'.
        crepe_precision: 'auto' (bfloat16 where the hardware has it), 'bfloat16' or 'float32'.
        f0_hop_ms: CREPE's analysis hop (see :func:`analyze`); default: the dataset's
            (``ddsp-prepare --f0_hop_ms``), else every frame.
        chunk_secs: synthesis chunk length (memory/speed; not the result).
        seed: the filtered noise's seed (with the model's ``train.seed``).
        output_sample_rate: resample the output (default: the model's rate).
        subtype: ``soundfile`` subtype of the output (default: the format's, e.g. PCM_16).
        progress: show progress bars.
        reverb_from: another trained model (as ``model``) whose learned room (reverb impulse
            response) replaces this model's: this model's dry synthesis in that room.

    Raises:
        TransferError: unreadable or silent input, a bad output path or option, a
            ``reverb_from`` model without a reverb or at another sample rate.
        trainer.serving.inference.ModelDirError: no model there.
        trainer.serving.streaming.StreamingError: a model this cannot render.
    """
    from tqdm.auto import tqdm

    from trainer.serving.streaming import StreamingSynth

    timings = {}
    t0 = time.perf_counter()
    check_output(output_path, subtype)
    info = audio_info(input_path)
    if chunk_secs <= 0:
        raise TransferError(f'--chunk_secs {chunk_secs:g}: must be positive')
    if output_sample_rate is not None and output_sample_rate <= 0:
        raise TransferError(f'--sample_rate {output_sample_rate}: must be positive')
    trained = _load_model(model, tracking_uri)
    sr, fr = trained.sample_rate, trained.frame_rate
    capacity = crepe_capacity or default_crepe_capacity(trained.manifest)
    viterbi = bool(trained.manifest.option('viterbi', True) if trained.manifest else True)
    if f0_hop_ms is None:
        f0_hop_ms = trained.manifest.option('f0_hop_ms') if trained.manifest else None
    precision = resolve_crepe_precision(crepe_precision)
    room, room_model = None, None
    if reverb_from is not None:
        room_model, room = load_room(reverb_from, sr, dry, tracking_uri)
    synth = StreamingSynth(trained.model, chunk_frames=max(1, int(round(chunk_secs * fr))),
                           reverb=not dry, noise_seed=(trained.config.train.seed, int(seed)),
                           room=room)
    timings['load_s'] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bar = tqdm(total=round(info.seconds, 1), unit='s', desc='analysis', disable=not progress,
               dynamic_ncols=True, bar_format='{l_bar}{bar}| {n:.1f}/{total:.1f} s '
                                              '[{elapsed}<{remaining}]')
    try:
        features = analyze(input_path, sr, fr, crepe_capacity=capacity, viterbi=viterbi,
                           crepe_precision=precision, f0_hop_ms=f0_hop_ms,
                           power_frame_size=(trained.config.model.power_frame_size
                                             if synth.uses_power else None),
                           on_seconds=lambda s: bar.update(round(s, 3)))
    finally:
        bar.close()
    timings['analysis_s'] = time.perf_counter() - t0
    stats = TrainingStats.from_manifest(trained.manifest)
    f0, loud, adjustment = adjust(features, stats, auto_adjust, pitch_shift, loudness_shift,
                                  quiet_db)
    power = None
    if features.power_db is not None:
        # The power moves with the loudness: the training data's statistics are of loudness.
        power = np.maximum(features.power_db + (loud - features.loudness_db), DB_FLOOR)
        power = power.astype(np.float32)

    t0 = time.perf_counter()
    out_rate = int(output_sample_rate or sr)
    bar = tqdm(total=round(features.seconds, 1), unit='s', desc='synthesis',
               disable=not progress, dynamic_ncols=True,
               bar_format='{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]')
    try:
        blocks = synth.render(f0, loud, power,
                              on_frames=lambda n: bar.update(round(n / fr, 3)))
        clipped = write_audio(blocks, output_path, sr, features.n_samples, out_rate, subtype)
    finally:
        bar.close()
    timings['synthesis_s'] = time.perf_counter() - t0
    output = Path(output_path)
    if clipped:
        logger.warning('%s: %d samples exceeded [-1, 1] and were clipped (try a negative '
                       '--loudness_shift, or --subtype FLOAT)', output, clipped)
    settings = {'model': str(trained.model_dir), 'step': trained.step, 'input': str(input_path),
                'input_sample_rate': info.sample_rate, 'input_channels': info.channels,
                'auto_adjust': bool(auto_adjust), 'pitch_shift': float(pitch_shift),
                'loudness_shift': float(loudness_shift), 'quiet_db': float(quiet_db),
                'dry': bool(dry), 'crepe_capacity': capacity, 'viterbi': viterbi,
                'crepe_precision': precision, 'f0_hop_ms': f0_hop_ms,
                'chunk_secs': float(chunk_secs), 'seed': int(seed), 'sample_rate': out_rate,
                'reverb_from': (None if room_model is None else
                                {'model': str(room_model.model_dir), 'step': room_model.step})}
    return TransferResult(output, features.seconds, out_rate, features, f0, loud, adjustment,
                          settings, timings, clipped, power)


def log_to_mlflow(result: TransferResult, run_id: str, tracking_uri: Optional[str] = None,
                  artifact_path: Optional[str] = None) -> str:
    """Add a transfer to the model's MLflow run (its status is left as it is): the input file,
    the output file, ``spectrogram.png`` (input over output, the first 30 s) and
    ``transfer.json`` (settings, adjustment, timings) under ``transfer/<time>-<input name>/``.

    Returns:
        The artifact path used.
    """
    from trainer.tracking import artifacts
    from trainer.tracking.store import make_client, resolve_tracking_uri

    client = make_client(resolve_tracking_uri(tracking_uri))
    stem = Path(result.settings['input']).stem
    safe = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in stem)[:60] or 'input'
    artifact_path = artifact_path or f'transfer/{time.strftime("%Y%m%d-%H%M%S")}-{safe}'
    with tempfile.TemporaryDirectory(prefix='ddsp-transfer-') as tmp:
        folder = Path(tmp)
        source = Path(result.settings['input'])
        shutil.copyfile(source, folder / f'input{source.suffix or ".audio"}')
        shutil.copyfile(result.output, folder / f'output{result.output.suffix}')
        rate = result.sample_rate
        original = read_head(source, rate, SPECTROGRAM_SECS)
        rendered = read_head(result.output, rate, SPECTROGRAM_SECS)
        title = (f'ddsp-transfer: {result.adjustment.describe()}'
                 + (' (first 30 s)' if result.seconds > SPECTROGRAM_SECS else ''))
        artifacts.spectrogram_comparison_png(folder / 'spectrogram.png', original, rendered,
                                             rate, title=title[:300],
                                             labels=(f'input: {source.name}',
                                                     f'output: {result.output.name}'))
        (folder / 'transfer.json').write_text(json.dumps(result.summary(), indent=2,
                                                         default=float) + '\n')
        client.log_artifacts(run_id, str(folder), artifact_path)
    return artifact_path


# ---- CLI ----------------------------------------------------------------------------------------
def build_arg_parser() -> argparse.ArgumentParser:
    from trainer.serving.inference import add_model_argument

    p = runtime.command_parser(
        'ddsp-transfer',
        description='Timbre transfer: render a recording (any length, sample rate, channels, '
                    'format) with a trained model. Its pitch and loudness are extracted as '
                    'ddsp-prepare does, adjusted to the training data, and synthesised in '
                    'chunks with the state carried across them.',
        epilog='Exit codes: 0 done, 1 failed, 2 bad usage (bad option, unreadable or silent '
               'input, a model directory without a checkpoint).')
    add_model_argument(p)
    p.add_argument('--input', required=True, help='audio file to transfer')
    p.add_argument('--output', required=True,
                   help='audio file to write (format from the extension: .wav, .flac, ...)')
    p.add_argument('--auto_adjust', action=argparse.BooleanOptionalAction, default=True,
                   help="shift the pitch by octaves towards the training data's range, map the "
                        "loudness onto its distribution, attenuate unconfident quiet frames")
    p.add_argument('--pitch_shift', type=float, default=0.0,
                   help='semitones added to the pitch (after auto-adjust; any amount)')
    p.add_argument('--loudness_shift', type=float, default=0.0,
                   help='dB added to the loudness (after auto-adjust)')
    p.add_argument('--quiet_db', type=float, default=QUIET_DB,
                   help='auto-adjust: most dB taken off unconfident, quiet frames')
    p.add_argument('--dry', action='store_true',
                   help='render without the learned reverb (dereverberated)')
    p.add_argument('--reverb_from', default=None, metavar='MODEL_OR_RUN',
                   help="render in another model's learned room: this model's dry synthesis "
                        "through that model's reverb impulse response (a ddsp-train "
                        '--model_dir or runs:/RUN_ID at the same sample rate)')
    p.add_argument('--crepe_capacity', default=None,
                   choices=('tiny', 'small', 'medium', 'large', 'full'),
                   help="CREPE model for the input's pitch (default: the one the training data "
                        'was prepared with)')
    p.add_argument('--crepe_precision', default='auto', choices=CREPE_PRECISIONS,
                   help="CREPE's number format: auto is bfloat16 where the hardware has it (a CPU "
                        'with AVX-512 BF16/AMX under oneDNN, a GPU of compute capability >= 8.0), '
                        'else float32')
    p.add_argument('--f0_hop_ms', type=float, default=None, metavar='MS',
                   help='run CREPE every MS milliseconds (10: its native hop) and interpolate f0 '
                        'to the frame rate: faster, at a small accuracy cost (docs/transfer.md); '
                        'default: as the training data was prepared (every frame unless '
                        'ddsp-prepare had --f0_hop_ms)')
    p.add_argument('--chunk_secs', type=float, default=SYNTH_CHUNK_SECS,
                   help='seconds synthesised per step (memory; the audio does not depend on it)')
    p.add_argument('--sample_rate', type=int, default=None,
                   help="sample rate of the output (default: the model's)")
    p.add_argument('--subtype', default=None,
                   help='soundfile subtype of the output, e.g. PCM_24 or FLOAT (default: the '
                        "format's)")
    p.add_argument('--seed', type=int, default=0, help="seed of the model's filtered noise")
    p.add_argument('--log_to_mlflow', action='store_true',
                   help="add the input, output and a spectrogram comparison to the model's "
                        'MLflow run')
    p.add_argument('--tracking_uri', default=None,
                   help="MLflow tracking URI (default: a model directory's run's, from its "
                        "mlflow_run.json; for runs:/ MLFLOW_TRACKING_URI or MLflow's default)")
    p.add_argument('--no_progress', action='store_true', help='no progress bars')
    p.add_argument('--verbose', action='store_true', help="TensorFlow's own start-up logs")
    return p


def _error(message: str) -> int:
    return runtime.usage_error('ddsp-transfer', message)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``ddsp-transfer``."""
    args = runtime.open_cli(build_arg_parser(), argv)
    if isinstance(args, int):
        return args
    # Cheap checks first, before TensorFlow starts.
    try:
        check_output(args.output, args.subtype)
        info = audio_info(args.input)
    except TransferError as e:
        return _error(str(e))
    if args.chunk_secs <= 0:
        return _error(f'--chunk_secs {args.chunk_secs:g}: must be positive')
    if args.sample_rate is not None and args.sample_rate <= 0:
        return _error(f'--sample_rate {args.sample_rate}: must be positive')
    if args.quiet_db < 0:
        return _error(f'--quiet_db {args.quiet_db:g}: must be >= 0')
    if args.f0_hop_ms is not None:
        try:
            analysis_rate(1, args.f0_hop_ms)
        except ValueError as e:
            return _error(f'--f0_hop_ms: {e}')
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        return _error(f'--output {args.output} is the input file')
    if args.reverb_from is not None and args.dry:
        return _error('--reverb_from and --dry: a dry render has no room; use one')
    runtime.import_tensorflow()
    from trainer.model.config import ConfigError
    from trainer.serving.inference import ModelDirError, TrainedModel
    from trainer.serving.streaming import StreamingError
    from trainer.tracking.store import quiet_mlflow_logging

    quiet_mlflow_logging(args.verbose)
    try:
        trained = TrainedModel.load(args.model, tracking_uri=args.tracking_uri)
    except (ModelDirError, ConfigError) as e:
        return _error(str(e))
    except Exception as e:  # noqa: BLE001 - e.g. a checkpoint that does not restore
        logger.debug('loading the model failed', exc_info=True)
        return runtime.failure('ddsp-transfer', f'cannot load the model {args.model}: '
                               f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}')
    room_model = None
    if args.reverb_from is not None:
        try:
            room_model, _ = load_room(args.reverb_from, trained.sample_rate,
                                      tracking_uri=args.tracking_uri)
        except (ModelDirError, ConfigError) as e:
            return _error(f'--reverb_from {args.reverb_from}: {e}')
        except TransferError as e:
            return _error(str(e))
    capacity = args.crepe_capacity or default_crepe_capacity(trained.manifest)
    print(f'ddsp-transfer: {info.path} ({info.seconds:.1f} s, {info.sample_rate} Hz, '
          f'{info.channels} channel{"s" if info.channels != 1 else ""}) with the model at step '
          f'{trained.step} ({trained.sample_rate} Hz); CREPE {capacity} '
          f'{resolve_crepe_precision(args.crepe_precision)}; '
          f'{runtime.describe_devices()}', file=sys.stderr, flush=True)
    try:
        result = transfer(trained, args.input, args.output, auto_adjust=args.auto_adjust,
                          pitch_shift=args.pitch_shift, loudness_shift=args.loudness_shift,
                          quiet_db=args.quiet_db, dry=args.dry, crepe_capacity=capacity,
                          crepe_precision=args.crepe_precision, f0_hop_ms=args.f0_hop_ms,
                          chunk_secs=args.chunk_secs, seed=args.seed,
                          output_sample_rate=args.sample_rate, subtype=args.subtype,
                          progress=not args.no_progress, reverb_from=room_model)
    except (TransferError, StreamingError) as e:
        return _error(str(e))
    except Exception as e:  # noqa: BLE001 - report any failure with exit code 1
        return runtime.failure('ddsp-transfer', e, log=logger, what='transfer',
                               level=logging.DEBUG)
    synth_s = result.timings.get('synthesis_s') or float('nan')
    print(f'ddsp-transfer: wrote {result.output} ({result.seconds:.1f} s at {result.sample_rate} '
          f'Hz); {result.adjustment.describe()}; analysis {result.timings["analysis_s"]:.1f} s, '
          f'synthesis {synth_s:.1f} s ({result.seconds / synth_s:.0f}x realtime)',
          file=sys.stderr)
    if args.log_to_mlflow:
        run_id = trained.run_info.get('run_id')
        if str(args.model).startswith('runs:/'):
            run_id = str(args.model)[len('runs:/'):].strip('/').split('/')[0]
        if not run_id:
            print(f'ddsp-transfer: warning: {args.model} has no MLflow run '
                  '(no mlflow_run.json); nothing logged', file=sys.stderr)
            return runtime.EXIT_OK
        # a runs:/ model is logged to the store it was downloaded from (its mlflow_run.json
        # names the training machine's store); a model directory to its run's store
        tracking_uri = args.tracking_uri
        if tracking_uri is None:
            from trainer.tracking.store import resolve_tracking_uri

            tracking_uri = (resolve_tracking_uri(None) if str(args.model).startswith('runs:/')
                            else trained.run_info.get('tracking_uri'))
        try:
            where = log_to_mlflow(result, run_id, tracking_uri)
            print(f'ddsp-transfer: logged the input, output and spectrogram to MLflow run '
                  f'{run_id} under {where}/', file=sys.stderr)
            from trainer.tracking.store import print_run_link

            print_run_link('ddsp-transfer', tracking_uri, run_id, where)
        except Exception as e:  # noqa: BLE001 - the output is written; say why MLflow failed
            print(f'ddsp-transfer: warning: could not log to MLflow run {run_id}: {e}',
                  file=sys.stderr)
            return runtime.EXIT_FAILED
    return runtime.EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
