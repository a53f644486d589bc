"""Resynthesis quality of the `tiny` model on a real sampled instrument, on held-out music.

What it measures: how well the `tiny` DDSP autoencoder, trained for a few thousand steps on
30 s of one instrument, resynthesises a *different* melody of the same instrument that it never
saw, in the metrics of ``ddsp-eval`` (``trainer.evaluation.metrics``): f0 L1 (semitones), f0 outlier
ratio, raw pitch and raw chroma accuracy, loudness L1 (dB) and multi-scale spectral distance.
The same evaluation of early checkpoints (by default after 1 step, i.e. untrained, and after
300 steps) is the baseline that gives the final numbers their meaning.

Steps, all with the project's own library calls:

1. writes two Standard MIDI Files (a ~30 s training melody and a different ~10 s evaluation
   melody, overlapping pitch range; writer below) and renders them with FluidSynth from the
   FluidR3 General MIDI sound font (sampled instruments; default GM program 40, violin) at
   16 kHz, chorus and reverb off, mixed to mono;
2. prepares each recording as its own dataset with ``pipelines.prepare_dataset.prepare_dataset``
   (Beam DirectRunner, CREPE ``--crepe_capacity``; the training melody as the train split, the
   evaluation melody as the eval split of a second dataset);
3. trains ``trainer.model.config.load_preset('tiny')`` with ``trainer.training.train.train``
(tracked in a
   SQLite MLflow store in --out_dir), stopping at each --eval_at step and at --steps to
   evaluate the latest checkpoint on the evaluation melody with
   ``trainer.evaluation.evaluate.evaluate`` (results written as ``ddsp-eval`` writes them, under
   --out_dir/eval/, and logged to the MLflow run as ``eval/*``);
4. prints and writes (--json) the metrics per evaluated step, the steps, the wall times and the
   training loss at the start (step 1, the untrained model) and at the end.

Needs FluidSynth and the GM sound font (Debian/Ubuntu)::

    sudo apt-get install -y fluidsynth fluid-soundfont-gm

Run (10-30 minutes on a 2-core CPU with the defaults)::

    .venv/bin/python benchmarks/bench_quality.py \\
        --json benchmarks/results/DATE_MACHINE_bench_quality.json
    .venv/bin/python benchmarks/bench_quality.py --program 73 --crepe_capacity full  # flute
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402 - after the path insert
from ddsp_core import runtime  # noqa: E402 - after the path insert

SAMPLE_RATE = 16000
SILENT = 1e-4  # -80 dBFS: FluidSynth's output after the last release is digital silence
TAIL_SECS = 0.25
SOUND_FONTS = ('/usr/share/sounds/sf2/FluidR3_GM.sf2', '/usr/share/sounds/sf2/default-GM.sf2',
               '/usr/share/soundfonts/FluidR3_GM.sf2', '/usr/share/soundfonts/default.sf2')
INSTALL_HINT = ('install them with: sudo apt-get install -y fluidsynth fluid-soundfont-gm '
                '(Debian/Ubuntu), or pass --soundfont PATH')
GM_NAMES = {40: 'violin', 41: 'viola', 42: 'cello', 56: 'trumpet', 57: 'trombone',
            60: 'french horn', 64: 'soprano sax', 65: 'alto sax', 68: 'oboe', 70: 'bassoon',
            71: 'clarinet', 72: 'piccolo', 73: 'flute', 74: 'recorder'}
EXPERIMENT = 'ddsp-bench-quality'
MARKER = '.bench_quality'  # an --out_dir holding it may be emptied by the next run
METRICS = ('f0_l1_semitones', 'f0_outlier_ratio', 'raw_pitch_accuracy', 'raw_chroma_accuracy',
           'loudness_l1_db', 'spectral_distance')

# ---- melodies ----------------------------------------------------------------------------------
# Space-separated notes "NAME/BEATS[/VELOCITY]" (NAME like C#5, Bb3; R is a rest); a bar line "|"
# is only for reading. Notes sound for LEGATO of their length.
LEGATO = 0.92
DEFAULT_VELOCITY = 90
#: 48 beats at 96 bpm = 30 s (plus the last note's release), D major, A3-D6: arpeggios, scale
#: runs, dotted rhythms, long notes at several dynamics.
TRAIN_MELODY = (96, """
    D4/1 F#4/.5 A4/.5 D5/1 C#5/.5 B4/.5 | A4/1.5 R/.5 G4/.5 F#4/.5 E4/1 |
    D5/.5/80 E5/.5/85 F#5/.5/90 G5/.5/95 A5/.5/100 B5/.5/105 C#6/.5/110 D6/.5/115 |
    D6/2/110 R/1 A5/.5/80 F#5/.5/75 |
    G5/1.5 F#5/.5 E5/1 D5/1 | C#5/.75 D5/.25 E5/1 A4/2/70 |
    A3/.5/70 D4/.5/75 F#4/.5/80 A4/.5/85 D5/.5/90 F#5/.5/95 A5/1/105 R/.5 |
    B4/.5 G4/.5 E4/.5 C#4/.5 A3/1.5/65 |
    D5/3/100 B4/1/70 | G5/2/115 E5/2/60 |
    F#5/.5 E5/.5 D5/.5 C#5/.5 B4/.5 A4/.5 G4/.5 F#4/.5 | E4/1 A4/1 D4/2/80
""")
#: 20 beats at 120 bpm = 10 s, A minor, E4-C6: other notes (F, G#), syncopation, a different
#: tempo and phrasing.
EVAL_MELODY = (120, """
    E4/.75 A4/.25 C5/1 B4/.5 A4/.5 G#4/1.5 R/.5 |
    E5/1.5/100 D5/.5 C5/.5 D5/.5 E5/1 |
    A5/2/105 G5/.5/85 F5/.5/80 E5/1/75 |
    C6/1/110 B5/.5 A5/.5 G#5/.5 A5/1.5/95 |
    E5/.5/80 C5/.5/75 A4/2/65
""")
_STEPS = {'C': 0, 'D': 2, 'E': 4, 'F': 5, 'G': 7, 'A': 9, 'B': 11}


def note_number(name: str) -> int:
    """MIDI note number of a name like 'C4' (60), 'F#5', 'Bb3'."""
    letter, rest = name[0].upper(), name[1:]
    shift = 0
    while rest and rest[0] in '#b':
        shift += 1 if rest[0] == '#' else -1
        rest = rest[1:]
    if letter not in _STEPS or not rest.lstrip('-').isdigit():
        raise ValueError(f'bad note name {name!r}')
    return 12 * (int(rest) + 1) + _STEPS[letter] + shift


def parse_melody(text: str) -> list[tuple[int | None, float, int]]:
    """``(note number or None for a rest, beats, velocity)`` of each note of a melody string."""
    notes = []
    for token in text.split():
        if token == '|':
            continue
        parts = token.split('/')
        pitch = None if parts[0] == 'R' else note_number(parts[0])
        velocity = int(parts[2]) if len(parts) > 2 else DEFAULT_VELOCITY
        notes.append((pitch, float(parts[1]), velocity))
    return notes


# ---- MIDI --------------------------------------------------------------------------------------
def note_ticks(notes, ppq: int = 480) -> list[tuple[int, int, int, int]]:
    """``(note number, note-on tick, note-off tick, velocity)`` of each sounding note of a
    melody (rests skipped), as :func:`midi_bytes` writes them."""
    spans = []
    tick = 0
    for pitch, beats, velocity in notes:
        length = int(round(beats * ppq))
        if pitch is not None:
            spans.append((pitch, tick, tick + max(1, int(round(length * LEGATO))),
                          max(1, min(127, velocity))))
        tick += length
    return spans


def tick_seconds(bpm: float, ppq: int = 480) -> float:
    """Seconds per tick of :func:`midi_bytes`' file (its tempo is rounded to a microsecond)."""
    return int(round(60e6 / bpm)) / 1e6 / ppq


def midi_bytes(notes, bpm: float, program: int, ppq: int = 480) -> bytes:
    """A format-0 Standard MIDI File: tempo, program change and the notes on channel 1."""
    from tools.midi import smf_bytes

    events = []  # (tick, order, bytes): note-offs (order 0) before note-ons at the same tick
    for pitch, on, off, velocity in note_ticks(notes, ppq):
        events.append((on, 1, bytes([0x90, pitch, velocity])))
        events.append((off, 0, bytes([0x80, pitch, 64])))
    timed = [(0, bytes([0xC0, program]))] + [(at, data) for at, _, data in sorted(events)]
    # end of track a beat after the last event
    return smf_bytes(timed, ppq, int(round(60e6 / bpm)), end_after=ppq)


# ---- rendering ---------------------------------------------------------------------------------
def find_tools(soundfont: str | None) -> tuple[str, str]:
    """The fluidsynth executable and a GM sound font, or exit with how to install them."""
    exe = shutil.which('fluidsynth')
    font = soundfont or next((f for f in SOUND_FONTS if os.path.isfile(f)), None)
    missing = []
    if exe is None:
        missing.append('the fluidsynth program (not on PATH)')
    if font is None or not os.path.isfile(font):
        missing.append(f'a General MIDI sound font ({soundfont or " or ".join(SOUND_FONTS[:2])})')
    if missing:
        sys.exit(f'bench_quality: error: missing {" and ".join(missing)}; {INSTALL_HINT}')
    return exe, font


def render(exe: str, font: str, midi_path: Path, wav_path: Path, gain: float) -> dict:
    """Render a MIDI file with FluidSynth at 16 kHz (chorus and reverb off) to mono float WAV."""
    import soundfile as sf

    raw = wav_path.with_suffix('.stereo.wav')
    cmd = [exe, '-ni', '-q', '-R', '0', '-C', '0', '-g', str(gain), '-r', str(SAMPLE_RATE),
           '-F', str(raw), font, str(midi_path)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not raw.exists():
        sys.exit(f'bench_quality: error: fluidsynth failed ({done.returncode}): '
                 f'{" ".join(cmd)}\n{done.stderr.strip()}')
    audio, rate = sf.read(str(raw), dtype='float32', always_2d=True)
    raw.unlink()
    if rate != SAMPLE_RATE:
        sys.exit(f'bench_quality: error: fluidsynth wrote {rate} Hz, not {SAMPLE_RATE}')
    mono = audio.mean(axis=1)
    # FluidSynth appends ~2 s of digital silence: keep TAIL_SECS after the last audible sample.
    audible = np.nonzero(np.abs(mono) > SILENT)[0]
    mono = mono[:(audible[-1] if audible.size else 0) + int(TAIL_SECS * SAMPLE_RATE)]
    sf.write(str(wav_path), mono, SAMPLE_RATE, subtype='FLOAT')
    peak = float(np.max(np.abs(mono)))
    if peak >= 0.999:
        print(f'warning: {wav_path.name} clips (peak {peak:.3f}); lower --gain', flush=True)
    return {'seconds': len(mono) / SAMPLE_RATE, 'peak': peak,
            'rms_dbfs': float(20 * np.log10(np.sqrt(np.mean(mono ** 2)) + 1e-12))}


def describe_melody(bpm: float, notes) -> dict:
    pitches = [p for p, _, _ in notes if p is not None]
    beats = sum(b for _, b, _ in notes)
    return {'bpm': bpm, 'notes': len(pitches), 'beats': beats, 'seconds': beats * 60 / bpm,
            'lowest_midi': min(pitches), 'highest_midi': max(pitches),
            'distinct_pitches': len(set(pitches))}


# ---- the benchmark -----------------------------------------------------------------------------
class _Formatter(runtime.HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in --help, the module docstring kept as written."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='bench_quality.py', description=__doc__,
                                formatter_class=_Formatter)
    p.add_argument('--steps', type=int, default=3000, help='training steps of the final model')
    p.add_argument('--eval_at', type=int, nargs='*', default=[1, 300],
                   help='also evaluate the checkpoints at these earlier steps (baselines; step '
                        '1 is the untrained model after one update)')
    p.add_argument('--out_dir', default='runs/bench_quality',
                   help='audio, datasets, model, MLflow store (mlflow.db) and eval outputs; '
                        'emptied first if an earlier run of this script made it')
    common.add_crepe_capacity(p, "CREPE model of the preparation and of the evaluation's "
                                 'pitch tracking')
    p.add_argument('--program', type=int, default=40,
                   help='General MIDI program (0-127) of the instrument: 40 violin, 73 flute, '
                        '71 clarinet, 56 trumpet ...')
    p.add_argument('--soundfont', default=None,
                   help='sound font file (default: FluidR3_GM.sf2 of fluid-soundfont-gm)')
    p.add_argument('--gain', type=float, default=2.0,
                   help='FluidSynth master gain (2.0: the violin peaks near -6 dBFS)')
    p.add_argument('--eval_every', type=int, default=250,
                   help='log the spectral loss on the evaluation melody (eval_loss) every this '
                        'many steps (a multiple of the preset\'s log_every, 5); 0: never')
    p.add_argument('--json', default=None, help='also write the results JSON here')
    return p


def evaluate_checkpoint(model_dir: Path, eval_dir: Path, out_dir: Path, tracking_uri: str,
                        crepe_capacity: str) -> dict:
    """``ddsp-eval`` of the model directory's latest checkpoint on the eval split of
    ``eval_dir``: results under ``out_dir/eval/eval-step_N``, ``eval/*`` in the MLflow run."""
    from trainer.evaluation import evaluate as evaluation
    from trainer.serving.inference import TrainedModel
    from trainer.training.data import open_source

    t0 = time.perf_counter()
    source = open_source(str(eval_dir), split='eval')
    model = TrainedModel.load(str(model_dir), example_secs=source.layout.example_secs)
    result = evaluation.evaluate(model, source, crepe_capacity, progress=False)
    where = evaluation.write_outputs(result, out_dir / 'eval' / f'eval-step_{model.step}',
                                     model.sample_rate)
    run_id = model.run_info.get('run_id')
    if run_id:
        evaluation.log_to_mlflow(result, run_id, tracking_uri, model.sample_rate)
    row = {'step': model.step, 'examples': len(result.rows),
           **{k: float(v) for k, v in result.aggregate.items() if isinstance(v, (int, float))},
           'eval_secs': time.perf_counter() - t0, 'outputs': str(where)}
    print(f'  eval at step {model.step}: ' + ', '.join(
        f'{k} {row[k]:.3f}' for k in METRICS if k in row), flush=True)
    return row


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps < 1 or not 0 <= args.program <= 127:
        sys.exit('bench_quality: error: --steps must be >= 1 and --program in 0..127')
    stops = sorted({s for s in args.eval_at if 0 < s < args.steps} | {args.steps})
    exe, font = find_tools(args.soundfont)
    wall0 = time.perf_counter()
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    for noisy in ('apache_beam', 'root', 'mlflow'):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    runtime.import_tensorflow()
    from trainer.tracking.store import ensure_experiment, make_client, quiet_mlflow_logging

    quiet_mlflow_logging()
    out = Path(args.out_dir).resolve()
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            sys.exit(f'bench_quality: error: --out_dir {out} is not empty and was not made by '
                     'this script; pick another')
        shutil.rmtree(out)
    audio_dir, model_dir = out / 'audio', out / 'model'
    audio_dir.mkdir(parents=True)
    (out / MARKER).write_text('made by benchmarks/bench_quality.py; emptied by its next run\n')
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    timings = {}

    # 1. MIDI -> FluidSynth -> 16 kHz mono WAV.
    instrument = GM_NAMES.get(args.program, f'GM program {args.program}')
    print(f'[1/4] rendering the melodies with FluidSynth ({instrument}, {font})', flush=True)
    t0 = time.perf_counter()
    melodies = {}
    for split, (bpm, text) in (('train', TRAIN_MELODY), ('eval', EVAL_MELODY)):
        notes = parse_melody(text)
        midi = audio_dir / f'{split}_melody.mid'
        midi.write_bytes(midi_bytes(notes, bpm, args.program))
        (audio_dir / split).mkdir()
        wav = audio_dir / split / f'{split}_melody.wav'
        melodies[split] = {**describe_melody(bpm, notes), 'audio': render(
            exe, font, midi, wav, args.gain), 'wav': str(wav), 'midi': str(midi)}
        print(f"      {split}: {melodies[split]['notes']} notes, "
              f"{melodies[split]['audio']['seconds']:.1f} s", flush=True)
    timings['render_secs'] = time.perf_counter() - t0

    # 2. Two datasets: the training melody (all train), the evaluation melody (all eval).
    from pipelines.prepare_dataset import prepare_dataset

    datasets = {}
    for split, fraction in (('train', 0.0), ('eval', 1.0)):
        print(f'[2/4] preparing the {split} melody (CREPE {args.crepe_capacity})', flush=True)
        t0 = time.perf_counter()
        manifest = prepare_dataset([str(audio_dir / split / '*.wav')], str(out / f'{split}_data'),
                                   crepe_capacity=args.crepe_capacity, eval_fraction=fraction,
                                   overwrite=True)
        timings[f'prepare_{split}_secs'] = time.perf_counter() - t0
        datasets[split] = {'dir': str(out / f'{split}_data'), 'examples': manifest['examples'],
                           'dead_letters': manifest['dead_letters']}
        print(f"      {manifest['examples']} examples in {timings[f'prepare_{split}_secs']:.0f} s",
              flush=True)

    # 3. Train, stopping at each evaluation step.
    from trainer.model.config import load_preset
    from trainer.training.train import train

    ensure_experiment(make_client(tracking_uri), EXPERIMENT, (out / 'mlartifacts').as_uri(),
                      'benchmarks/bench_quality.py: tiny on a sampled instrument')
    config = load_preset('tiny')
    history: list[tuple[int, float]] = []
    eval_losses: list[tuple[int, float]] = []
    tick = {'t': time.perf_counter()}

    def on_log(step, metrics):
        history.append((step, float(metrics['total_loss'])))
        if 'eval_loss' in metrics:
            eval_losses.append((step, float(metrics['eval_loss'])))
        if step % 250 == 0 or step == args.steps:
            now = time.perf_counter()
            print(f'      step {step}: total_loss {metrics["total_loss"]:.3f}'
                  + (f', eval_loss {metrics["eval_loss"]:.3f}' if 'eval_loss' in metrics
                     else '') + f' ({now - tick["t"]:.0f} s since last line)', flush=True)
            tick['t'] = now

    evaluations, train_secs, eval_secs, result = [], 0.0, 0.0, None
    print(f'[3/4] training tiny to step {args.steps}, evaluating at steps {stops}', flush=True)
    for stop in stops:
        t0 = time.perf_counter()
        result = train(config, datasets['train']['dir'], str(model_dir), steps=stop,
                       tracking_uri=tracking_uri, experiment=EXPERIMENT,
                       run_name=f'bench_quality {instrument}', progress=sys.stderr.isatty(),
                       eval_data=datasets['eval']['dir'] if args.eval_every else None,
                       eval_every=args.eval_every, on_log=on_log)
        train_secs += time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluations.append(evaluate_checkpoint(model_dir, Path(datasets['eval']['dir']), out,
                                               tracking_uri, args.crepe_capacity))
        eval_secs += time.perf_counter() - t0
    timings.update(train_secs=train_secs, eval_secs=eval_secs,
                   total_wall_secs=time.perf_counter() - wall0)

    # 4. Report.
    losses = [v for _, v in history]
    report = {
        'benchmark': 'bench_quality',
        'date': time.strftime('%Y-%m-%d %H:%M:%S %z'),
        'command': ' '.join([Path(sys.executable).name, *sys.argv]),
        'machine': {'platform': platform.platform(), 'cpu_count': os.cpu_count(),
                    'devices': runtime.describe_devices()},
        'instrument': {'program': args.program, 'name': instrument, 'soundfont': font,
                       'fluidsynth_gain': args.gain},
        'melodies': melodies,
        'datasets': datasets,
        'crepe_capacity': args.crepe_capacity,
        'preset': 'tiny',
        'steps': result['step'],
        'train_steps_per_sec': result['step'] / train_secs,
        'loss': {
            'start': history[0][1] if history else None,
            'start_step': history[0][0] if history else None,
            'end': history[-1][1] if history else None,
            'end_step': history[-1][0] if history else None,
            'mean_first_10_logged': float(np.mean(losses[:10])) if losses else None,
            'mean_last_10_logged': float(np.mean(losses[-10:])) if losses else None,
            'final_terms': {k: float(v) for k, v in result['losses'].items()},
            'history_every_100': [(s, v) for s, v in history if s % 100 == 0 or s == 1],
        },
        'eval_loss': eval_losses,
        'evaluations': evaluations,
        'timings': timings,
        'mlflow': {'tracking_uri': tracking_uri, 'experiment': EXPERIMENT,
                   'run_id': result['run_id']},
    }
    text = json.dumps(report, indent=2, default=float)
    print('[4/4] results')
    print(text, flush=True)
    width = 12
    print('\n' + f'{"metric":<22}' + ''.join(f'{"step " + str(e["step"]):>{width}}'
                                             for e in evaluations))
    for key in METRICS:
        print(f'{key:<22}' + ''.join(f'{e.get(key, float("nan")):>{width}.4f}'
                                     for e in evaluations))
    print(f'\ntraining loss {report["loss"]["start"]:.3f} (step {report["loss"]["start_step"]}) '
          f'-> {report["loss"]["end"]:.3f} (step {report["loss"]["end_step"]}); wall '
          f'{timings["total_wall_secs"]:.0f} s (training {train_secs:.0f} s)', flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + '\n')
    return 0


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.exit(main())
