"""Renders the data of the quality studies (docs/quality.md): seeded melodies played by sampled
General MIDI instruments with FluidSynth, with the truth of every note.

Writes under --out (each set a folder of WAV clips ``ddsp-prepare`` takes as they are; the MIDI
files under ``midi/``):

- ``<instrument>/train/`` and ``<instrument>/eval/`` for each --instruments (default violin and
  flute): --train_minutes and --eval_minutes of clips of --clip_secs, each clip its own seeded
  melody (evaluation melodies from other seeds than the training ones);
- ``dereverb/wet/train/`` and ``dereverb/wet/eval/``: the first instrument's renders (its dry
  truth: FluidSynth's reverb and chorus are off) convolved with a synthetic room,
  ``dereverb/ir.wav``: noise under an exponential decay of the known --rt60 (the direct path
  added separately, at --drr_db above the reflections' energy);
- ``extrapolation/train/``: --range_minutes of the first instrument's melodies within
  --range (MIDI notes, default 67-85, an octave and a half), and ``extrapolation/scale/``: a
  chromatic scale from an octave below the range to an octave above it (one note per
  --scale_note_secs, an equal rest after each);
- ``truth.json``: for every clip its set, split, instrument, tempo, MIDI file and notes (MIDI
  number, f0 in Hz, onset and offset in seconds, velocity); the IR's RT60 (and its estimate by
  ``ddsp_core.analysis.rt60_from_ir``); the settings and the FluidSynth version. Each note has
  its ``level_db`` in the render (mean power over the note); ``silent_notes`` lists those below
  -70 dBFS, notes the sound font did not play (a warning names them).

Melodies: a random diatonic walk (a random major key per clip) with durations of 1/2 to 3 beats,
velocities 60-115, rests now and then (the note offsets the tail measures need), 84-132 bpm.
Same --seed, same notes; the audio is FluidSynth's (same version and sound font, same audio).

Needs FluidSynth and the GM sound font (``bash tools/install_fluidsynth.sh``; Debian:
``apt-get install fluidsynth fluid-soundfont-gm``). About 1 s of CPU per minute of audio.

Run::

    .venv/bin/python benchmarks/render_quality_data.py --out runs/quality_data
    .venv/bin/python benchmarks/render_quality_data.py --out /tmp/q --train_minutes 0.5 \\
        --eval_minutes 0.25 --range_minutes 0.5        # a small set for a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_quality as bq  # noqa: E402 - after the path insert
from ddsp_core import analysis  # noqa: E402

SAMPLE_RATE = bq.SAMPLE_RATE
PPQ = 480
#: The instruments --instruments names (General MIDI programs, 0-based).
PROGRAMS = {name: program for program, name in bq.GM_NAMES.items() if ' ' not in name}
MAJOR = (0, 2, 4, 5, 7, 9, 11)
DURATIONS = (0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0, 3.0)  # beats, drawn uniformly
REST_PROBABILITY = 0.15
#: A note whose mean power over its span (``ddsp_core.analysis.note_levels_db``) is below this
#: was not played (the sound font has no sample for that key: violin MIDI 94 in
#: fluid-soundfont-gm 3.1); it is listed in truth.json's ``silent_notes``.
SILENT_DB = -70.0
SEED_STRIDE = {'train': 0, 'eval': 100_000, 'range': 200_000}  # disjoint seeds per use
MARKER = '.render_quality_data'


def random_melody(rng: np.random.Generator, seconds: float, low: int, high: int):
    """``(bpm, notes)``: a melody of at least ``seconds`` in the note format of
    ``bench_quality`` (``(note number or None, beats, velocity)``), every note within
    ``low..high`` (MIDI numbers), a walk on a random major scale."""
    if high - low < 12:
        raise ValueError(f'a melody range of {low}-{high} is under an octave')
    bpm = float(rng.integers(84, 133))
    key = int(rng.integers(0, 12))
    scale = [n for n in range(low, high + 1) if (n - key) % 12 in MAJOR]
    pos = int(rng.integers(len(scale) // 4, 3 * len(scale) // 4))
    notes, beats = [], 0.0
    while beats * 60.0 / bpm < seconds:
        if notes and notes[-1][0] is not None and rng.random() < REST_PROBABILITY:
            length = float(rng.choice((0.5, 1.0, 1.5)))
            notes.append((None, length, 0))
        else:
            pos = int(np.clip(pos + rng.choice((-4, -2, -1, -1, 1, 1, 2, 3)), 0, len(scale) - 1))
            length = float(rng.choice(DURATIONS))
            notes.append((scale[pos], length, int(rng.integers(60, 116))))
        beats += length
    return bpm, notes


def chromatic_scale(low: int, high: int, note_secs: float):
    """``(bpm, notes)``: every MIDI note from ``low`` to ``high``, each ``note_secs`` long (a
    beat, sounding LEGATO of it) followed by a rest as long."""
    notes = []
    for pitch in range(low, high + 1):
        notes += [(pitch, 1.0, 90), (None, 1.0, 0)]
    return 60.0 / note_secs, notes


def truth_notes(notes, bpm: float) -> list[dict]:
    """Each sounding note's MIDI number, f0 (Hz), onset and offset (s) and velocity, from the
    same ticks ``bench_quality.midi_bytes`` writes."""
    seconds = bq.tick_seconds(bpm, PPQ)
    return [{'midi': pitch, 'f0_hz': 440.0 * 2.0 ** ((pitch - 69) / 12.0),
             'onset_s': on * seconds, 'offset_s': off * seconds, 'velocity': velocity}
            for pitch, on, off, velocity in bq.note_ticks(notes, PPQ)]


def reverberate(dry: np.ndarray, ir: np.ndarray, drr_db: float) -> np.ndarray:
    """``dry`` (direct path) plus its convolution with ``ir`` (the reflections, unit energy,
    scaled ``drr_db`` below the direct path's unit impulse), the whole tail kept."""
    n = len(dry) + len(ir) - 1
    n_fft = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(dry.astype(np.float64), n_fft) * np.fft.rfft(
        ir.astype(np.float64) * 10 ** (-drr_db / 20.0), n_fft)
    wet = np.fft.irfft(spectrum, n_fft)[:n]
    wet[:len(dry)] += dry
    return wet.astype(np.float32)


def fluidsynth_version(exe: str) -> str:
    done = subprocess.run([exe, '--version'], capture_output=True, text=True)
    return (done.stdout.strip().splitlines() or ['unknown'])[0]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='render_quality_data.py', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', required=True, help='output folder (emptied first if this script '
                                                'made it)')
    p.add_argument('--instruments', nargs='+', default=['violin', 'flute'],
                   help=f'instruments of the training and evaluation sets, the first also of the '
                        f'dereverberation and extrapolation sets ({", ".join(sorted(PROGRAMS))})')
    p.add_argument('--train_minutes', type=float, default=5.0, help='per instrument')
    p.add_argument('--eval_minutes', type=float, default=1.0, help='per instrument')
    p.add_argument('--range_minutes', type=float, default=5.0,
                   help='the range-limited training set of the extrapolation study')
    p.add_argument('--clip_secs', type=float, default=30.0, help='length of one clip (melody)')
    p.add_argument('--range', type=int, nargs=2, default=[67, 85], metavar=('LOW', 'HIGH'),
                   help='MIDI notes of the range-limited set (default G4-C#6)')
    p.add_argument('--scale_note_secs', type=float, default=1.0,
                   help='length of each note of the chromatic scale')
    p.add_argument('--rt60', type=float, default=1.2, help='RT60 (s) of the synthetic room')
    p.add_argument('--drr_db', type=float, default=-6.0,
                   help="direct-to-reverberant ratio of the wet renders: the direct sound's "
                        "energy over the reflections' (dB; -6: the reflections 6 dB louder)")
    p.add_argument('--seed', type=int, default=0, help='seed of the melodies and the IR')
    p.add_argument('--soundfont', default=None,
                   help='sound font file (default: FluidR3_GM.sf2 of fluid-soundfont-gm)')
    p.add_argument('--gain', type=float, default=0.8,
                   help='FluidSynth master gain (0.8: the violin peaks near -12 dBFS, its wet '
                        'renders (RT60 1.2 s, DRR -6 dB) below -1 dBFS)')
    return p


def _fail(message: str) -> int:
    print(f'render_quality_data: error: {message}', file=sys.stderr)
    return 2


def main(argv=None) -> int:
    import shutil

    import soundfile as sf

    args = build_parser().parse_args(argv)
    unknown = [i for i in args.instruments if i not in PROGRAMS]
    if unknown:
        return _fail(f'--instruments {" ".join(unknown)}: not one of {", ".join(sorted(PROGRAMS))}')
    low, high = args.range
    if not (12 <= low and high <= 115) or high - low < 12:
        return _fail(f'--range {low} {high}: needs HIGH - LOW >= 12 and an octave of room on '
                     'both sides within MIDI 0-127')
    if min(args.train_minutes, args.eval_minutes, args.range_minutes) <= 0 \
            or args.clip_secs <= 0 or args.rt60 <= 0 or args.scale_note_secs <= 0:
        return _fail('--train_minutes, --eval_minutes, --range_minutes, --clip_secs, --rt60 and '
                     '--scale_note_secs must be positive')
    exe, font = bq.find_tools(args.soundfont)
    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            return _fail(f'--out {out} is not empty and was not made by this script; pick '
                         'another')
        shutil.rmtree(out)
    (out / 'midi').mkdir(parents=True)
    (out / MARKER).write_text('made by benchmarks/render_quality_data.py; emptied by its next '
                              'run\n')
    t_start = time.perf_counter()
    files: dict[str, dict] = {}
    silent: list[dict] = []

    def render_clip(folder: str, name: str, set_name: str, split: str, instrument: str,
                    bpm: float, notes, seed) -> np.ndarray:
        midi = out / 'midi' / f'{name}.mid'
        midi.write_bytes(bq.midi_bytes(notes, bpm, PROGRAMS[instrument], PPQ))
        wav = out / folder / f'{name}.wav'
        wav.parent.mkdir(parents=True, exist_ok=True)
        info = bq.render(exe, font, midi, wav, args.gain)
        audio = sf.read(str(wav), dtype='float32')[0]
        truth = truth_notes(notes, bpm)
        levels = analysis.note_levels_db(audio, SAMPLE_RATE, [n['onset_s'] for n in truth],
                                         [n['offset_s'] for n in truth])
        for note, level in zip(truth, levels, strict=True):
            note['level_db'] = None if np.isnan(level) else round(float(level), 2)
            if note['level_db'] is None or note['level_db'] < SILENT_DB:
                silent.append({'file': str(wav.relative_to(out)), 'instrument': instrument,
                               'midi': note['midi'], 'onset_s': note['onset_s'],
                               'level_db': note['level_db']})
        files[str(wav.relative_to(out))] = {
            'set': set_name, 'split': split, 'instrument': instrument,
            'program': PROGRAMS[instrument], 'seed': seed, 'bpm': bpm,
            'midi_file': str(midi.relative_to(out)), 'seconds': info['seconds'],
            'peak': info['peak'], 'notes': truth}
        return audio

    def clips(minutes: float) -> int:
        return max(1, int(np.ceil(minutes * 60.0 / args.clip_secs)))

    first = args.instruments[0]
    ir = analysis.exponential_decay_ir(args.rt60, SAMPLE_RATE, seed=args.seed)
    (out / 'dereverb').mkdir()
    sf.write(str(out / 'dereverb' / 'ir.wav'), ir, SAMPLE_RATE, subtype='FLOAT')
    for n_inst, instrument in enumerate(args.instruments):
        for split, minutes in (('train', args.train_minutes), ('eval', args.eval_minutes)):
            for i in range(clips(minutes)):
                seed = [args.seed, SEED_STRIDE[split] + 1000 * n_inst + i]
                bpm, notes = random_melody(np.random.default_rng(seed), args.clip_secs,
                                           55 if instrument == 'violin' else 60, 88)
                name = f'{instrument}_{split}_{i:03d}'
                dry = render_clip(f'{instrument}/{split}', name, instrument, split, instrument,
                                  bpm, notes, seed)
                if instrument == first:  # the same MIDI through the room
                    wet = reverberate(dry, ir, args.drr_db)
                    wav = out / 'dereverb' / 'wet' / split / f'{name}_wet.wav'
                    wav.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(str(wav), wet, SAMPLE_RATE, subtype='FLOAT')
                    files[str(wav.relative_to(out))] = {
                        **files[f'{instrument}/{split}/{name}.wav'], 'set': 'dereverb',
                        'dry_truth': f'{instrument}/{split}/{name}.wav',
                        'seconds': len(wet) / SAMPLE_RATE, 'peak': float(np.max(np.abs(wet)))}
            print(f'{instrument} {split}: {clips(minutes)} clips', flush=True)
    for i in range(clips(args.range_minutes)):
        seed = [args.seed, SEED_STRIDE['range'] + i]
        bpm, notes = random_melody(np.random.default_rng(seed), args.clip_secs, low, high)
        render_clip('extrapolation/train', f'range_train_{i:03d}', 'extrapolation', 'train',
                    first, bpm, notes, seed)
    bpm, notes = chromatic_scale(low - 12, high + 12, args.scale_note_secs)
    render_clip('extrapolation/scale', 'chromatic_scale', 'extrapolation', 'scale', first, bpm,
                notes, None)
    print(f'extrapolation: {clips(args.range_minutes)} clips within {low}-{high}, a chromatic '
          f'scale {low - 12}-{high + 12}', flush=True)
    clipping = [name for name, f in files.items() if f['peak'] >= 0.999]
    truth = {
        'generator': 'benchmarks/render_quality_data.py',
        'command': ' '.join([Path(sys.executable).name, *sys.argv]),
        'date': time.strftime('%Y-%m-%d %H:%M:%S %z'),
        'sample_rate': SAMPLE_RATE, 'soundfont': font, 'fluidsynth': fluidsynth_version(exe),
        'settings': {k: v for k, v in vars(args).items() if k != 'out'},
        'ir': {'file': 'dereverb/ir.wav', 'rt60_s': args.rt60, 'drr_db': args.drr_db,
               'rt60_estimate_s': analysis.rt60_from_ir(ir, SAMPLE_RATE)},
        'range': {'low': low, 'high': high, 'scale_low': low - 12, 'scale_high': high + 12},
        'clipping': clipping,
        'silent_notes': silent,
        'files': files,
    }
    (out / 'truth.json').write_text(json.dumps(truth, indent=1) + '\n')
    minutes = sum(f['seconds'] for f in files.values()) / 60.0
    print(f'wrote {len(files)} files ({minutes:.1f} min of audio) and truth.json under {out} '
          f'in {time.perf_counter() - t_start:.0f} s', flush=True)
    if clipping:
        print(f'warning: {len(clipping)} files clip (peak >= 0.999); lower --gain or raise '
              '--drr_db', file=sys.stderr)
    if silent:
        keys = sorted({(n['instrument'], n['midi']) for n in silent})
        print(f'warning: {len(silent)} notes have no sound in their render (below '
              f'{SILENT_DB:g} dBFS; the sound font has no sample there): '
              + ', '.join(f'{i} MIDI {m}' for i, m in keys)
              + "; truth.json lists them under 'silent_notes'", file=sys.stderr)
    return 0


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.exit(main())
