"""CREPE's precision and analysis hop: pitch accuracy on melodies with a known f0, and speed.

Melodies (``tests.signals.melody_notes``: held notes with vibrato, fast stepwise runs, two
octaves) are rendered by FluidSynth with the General MIDI sound font (flute, violin, clarinet,
trumpet, choir; vibrato as pitch-bend events every 5 ms) when ``fluidsynth`` and
``/usr/share/sounds/sf2/FluidR3_GM.sf2`` are installed (Debian: ``apt-get install fluidsynth
fluid-soundfont-gm``), else (or with ``--synth``) by the additive instruments of
``tests.signals.melody``. Each is tracked by CREPE (``ddsp_core.f0.predict_f0``, 250 frames/s,
Viterbi) in float32 and bfloat16, every frame and with ``hop_ms=10``, and scored against the
known f0 on the frames inside notes (not the first 30 ms after an onset nor the release):
raw pitch accuracy (within 50 cents) and mean |error| in semitones (``trainer.evaluation.metrics``).
Speed: CPU seconds of ``predict_f0`` (framing, model calls, decoding; all TensorFlow threads),
the modes run in turn on each melody, and the FLOP rate that is (the network's multiply-adds x 2
per analysed frame over those seconds).

Per frame (``--per_frame``, alone with ``--per_frame_only``): the network alone
(``CrepeForward``, no framing or decoding) on 1024 random normalised frames, in model calls of
64 (ddsp-transfer's) and 512 (ddsp-prepare's) frames, on one TensorFlow thread (as a prepare
worker runs it), float32 and bfloat16 alternately, twice each: CPU ms per frame, the ratio and
the FLOP rate.

    python benchmarks/bench_crepe_precision.py                  # full CREPE, 5 x 5 s
    python benchmarks/bench_crepe_precision.py --capacity tiny --secs 2 --synth
    python benchmarks/bench_crepe_precision.py --per_frame_only  # full CREPE per frame
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from benchmarks import common  # noqa: E402 - after the path insert
from tools.midi import smf_bytes  # noqa: E402 - after the path insert

SOUND_FONT = '/usr/share/sounds/sf2/FluidR3_GM.sf2'
#: General MIDI programs (0-based) of the rendered instruments.
GM_PROGRAMS = {'flute': 73, 'violin': 40, 'clarinet': 71, 'trumpet': 56, 'choir': 52}
BEND_STEP_MS = 5
ONSET_SKIP_S = 0.03


def write_midi(path: str, notes, program: int, sample_rate: int = 16000) -> None:
    """A one-track SMF of `melody_notes` at 1 ms per tick: program change, pitch bends for the
    vibrato (bend range +-2 semitones, GM's default) every BEND_STEP_MS, legato notes."""
    events = [(0, bytes([0xC0, program])), (0, bytes([0xE0, 0x00, 0x40]))]
    for start, end, note, depth in notes:
        t0, t1 = round(start * 1000 / sample_rate), round(end * 1000 / sample_rate)
        events.append((t0, bytes([0x90, note, 96])))
        if depth:
            for t in range(t0, t1, BEND_STEP_MS):
                semis = depth * np.sin(2 * np.pi * 5.5 * (t - t0) / 1000.0)
                value = int(np.clip(round(8192 + semis / 2.0 * 8192), 0, 16383))
                events.append((t, bytes([0xE0, value & 0x7F, value >> 7])))
            events.append((t1, bytes([0xE0, 0x00, 0x40])))
        events.append((t1, bytes([0x80, note, 0])))
    events.sort(key=lambda e: e[0])  # stable: a note's off before the next note's on
    with open(path, 'wb') as f:  # 120 bpm at 500 ticks per beat: 1 ms per tick
        f.write(smf_bytes(events, ppq=500, tempo_usecs=500000))


def render_fluidsynth(notes, program: int, seconds: float, tmp: str) -> np.ndarray:
    import soundfile as sf

    mid, wav = os.path.join(tmp, 'm.mid'), os.path.join(tmp, 'm.wav')
    write_midi(mid, notes, program)
    subprocess.run(['fluidsynth', '-ni', '-g', '0.6', '-r', '16000', '-F', wav, SOUND_FONT, mid],
                   check=True, capture_output=True)
    audio, rate = sf.read(wav, dtype='float32', always_2d=True)
    assert rate == 16000, rate
    audio = audio.mean(axis=1)[:int(seconds * 16000)]
    return np.pad(audio, (0, int(seconds * 16000) - len(audio)))


def melodies(secs: float, synth: bool):
    """[(name, audio 16 kHz, f0 per sample, mask of scored samples)]."""
    from tests.signals import MELODY_INSTRUMENTS, melody, melody_notes, notes_f0

    n = int(secs * 16000)
    out = []
    use_fluid = not synth and shutil.which('fluidsynth') and os.path.exists(SOUND_FONT)
    names = GM_PROGRAMS if use_fluid else MELODY_INSTRUMENTS
    with tempfile.TemporaryDirectory() as tmp:
        for seed, name in enumerate(names, start=1):
            notes = melody_notes(secs, seed)
            mask = np.zeros(n, bool)
            for start, end, _, _ in notes:
                mask[start + int(ONSET_SKIP_S * 16000):end] = True
            if use_fluid:
                audio, f0 = render_fluidsynth(notes, GM_PROGRAMS[name], secs, tmp), \
                    notes_f0(notes, n)
            else:
                audio, f0 = melody(secs, name, seed=seed)
            out.append((name, audio, f0, mask))
    return ('fluidsynth' if use_fluid else 'additive'), out


def flops_per_frame(forward) -> float:
    """Multiply-adds x 2 of one frame through CrepeForward's convolutions and classifier."""
    positions = -(-1024 // forward._convs[0][2])  # after the strided first layer
    total = 0.0
    for kernel, _, _ in forward._convs:
        width, c_in, c_out = kernel.shape
        total += 2.0 * positions * width * c_in * c_out
        positions //= 2  # max-pool
    w = forward._dense[0]
    return total + 2.0 * w.shape[0] * w.shape[1]


def per_frame(capacity: str, batches=(64, 512), n_frames: int = 1024, rounds: int = 2) -> list:
    """CPU ms per frame of CrepeForward alone, float32 and bfloat16 alternately (module doc)."""
    from ddsp_core import f0 as crepe

    frames = np.random.default_rng(0).standard_normal((n_frames, 1024)).astype(np.float32)
    forwards = {m: crepe.load_crepe_forward(capacity, m) for m in ('float32', 'bfloat16')}
    flops = flops_per_frame(forwards['float32'])
    out = []
    for batch in batches:
        cpu = {m: [] for m in forwards}
        for fw in forwards.values():
            fw(frames[:batch], batch)  # traced at this shape before timing
        for _ in range(rounds):
            for precision, fw in forwards.items():
                c0 = time.process_time()
                fw(frames, batch)
                cpu[precision].append((time.process_time() - c0) / n_frames * 1e3)
        ms = {m: min(v) for m, v in cpu.items()}
        out.append({'batch': batch, 'frames': n_frames, 'rounds': rounds,
                    'float32_ms_per_frame': round(ms['float32'], 3),
                    'bfloat16_ms_per_frame': round(ms['bfloat16'], 3),
                    'ratio': round(ms['float32'] / ms['bfloat16'], 3),
                    'float32_gflop_per_cpu_sec': round(flops / ms['float32'] / 1e6, 1),
                    'bfloat16_gflop_per_cpu_sec': round(flops / ms['bfloat16'] / 1e6, 1),
                    'runs_ms_per_frame': {m: [round(x, 3) for x in v] for m, v in cpu.items()}})
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--capacity', default='full')
    p.add_argument('--secs', type=float, default=5.0, help='seconds per melody')
    p.add_argument('--synth', action='store_true', help='additive instruments, not FluidSynth')
    p.add_argument('--per_frame', action='store_true',
                   help='also time the network alone per frame, one TensorFlow thread')
    p.add_argument('--per_frame_only', action='store_true', help='only the per-frame timing')
    p.add_argument('--out', help='also write the JSON here')
    args = p.parse_args(argv)
    if args.per_frame or args.per_frame_only:
        from ddsp_core import runtime

        runtime.set_threads(1)  # before TensorFlow's first op
    if args.per_frame_only:
        from ddsp_core import f0 as crepe

        result = {'capacity': args.capacity, 'cpus': os.cpu_count(),
                  'hardware': crepe.bfloat16_hardware()[1], 'tf_threads': 1,
                  'per_frame': per_frame(args.capacity)}
        return common.emit(result, args.out)
    from ddsp_core import f0 as crepe
    from ddsp_core.spectral_ops import get_framed_lengths
    from tests.signals import f0_at_frames
    from trainer.evaluation.metrics import f0_l1_semitones, raw_pitch_accuracy

    source, sets = melodies(args.secs, args.synth)
    modes = [('float32', None), ('bfloat16', None), ('float32', 10), ('bfloat16', 10)]
    forwards = {m: crepe.load_crepe_forward(args.capacity, m) for m in ('float32', 'bfloat16')}
    for fw in forwards.values():  # trace both before timing
        fw(crepe.crepe_frames(sets[0][1][:4000], 250))
    rows, cpu = [], {m: 0.0 for m in modes}
    frames = {m: 0 for m in modes}
    for name, audio, f0_true, mask in sets:
        for precision, hop in modes:
            c0 = time.process_time()
            est, _ = crepe.predict_f0(audio, 250, model_capacity=args.capacity,
                                      precision=precision, hop_ms=hop)
            cpu[(precision, hop)] += time.process_time() - c0
            frames[(precision, hop)] += get_framed_lengths(
                len(audio), 1024, 16000 // crepe.analysis_rate(250, hop), 'center')[0]
            truth = f0_at_frames(f0_true, 250, len(est))
            keep = f0_at_frames(mask, 250, len(est)).astype(bool)
            ones = np.ones(int(keep.sum()))
            rows.append({'melody': name, 'precision': precision, 'hop_ms': hop,
                         'rpa': raw_pitch_accuracy(truth[keep], est[keep], ones),
                         'f0_l1_semitones': f0_l1_semitones(truth[keep], est[keep], ones),
                         'frames_scored': int(keep.sum())})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    flops = flops_per_frame(forwards['float32'])
    summary = []
    for precision, hop in modes:
        mine = [r for r in rows if r['precision'] == precision and r['hop_ms'] == hop]
        weights = np.array([r['frames_scored'] for r in mine], float)
        rpa, l1 = (float(np.average([r[k] for r in mine], weights=weights))
                   for k in ('rpa', 'f0_l1_semitones'))
        secs = cpu[(precision, hop)]
        summary.append({'precision': precision, 'hop_ms': hop, 'rpa': round(rpa, 5),
                        'f0_l1_semitones': round(l1, 5),
                        'cpu_secs': round(secs, 2),
                        'audio_secs_per_cpu_sec': round(len(sets) * args.secs / secs, 3),
                        'gflop_per_cpu_sec': round(flops * frames[(precision, hop)] / secs / 1e9,
                                                   1)})
    base = summary[0]
    for s in summary:
        s['rpa_minus_float32'] = round(s['rpa'] - base['rpa'], 5)
        s['l1_minus_float32'] = round(s['f0_l1_semitones'] - base['f0_l1_semitones'], 5)
        s['speedup_vs_float32'] = round(base['cpu_secs'] / s['cpu_secs'], 2)
    result = {'capacity': args.capacity, 'source': source, 'melodies': [s[0] for s in sets],
              'secs_each': args.secs, 'frame_rate': 250, 'viterbi': True,
              'auto_precision': crepe.resolve_crepe_precision('auto'),
              'hardware': crepe.bfloat16_hardware()[1], 'cpus': os.cpu_count(),
              'gflop_per_frame': round(flops / 1e9, 3), 'summary': summary, 'rows': rows}
    if args.per_frame:
        result['per_frame'] = per_frame(args.capacity)
    return common.emit(result, args.out)


if __name__ == '__main__':
    sys.exit(main())
