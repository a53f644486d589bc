"""Throughput and memory of ``ddsp-prepare``; prints JSON.

* Throughput: audio-seconds processed per wall-second for CREPE ``tiny`` and ``full`` (250 fps,
  Viterbi on) on a fixed set of generated files (4 x 5 s and 1 x 60 s at 16 kHz, harmonic tones
  with vibrato), on the default local runner (DirectRunner, multi-process, one worker per core).
  The wall time includes pipeline start-up and model loading, as a user sees it.
* Memory: peak RSS of a process preparing one long file (60 minutes by default; tiny CREPE,
  in-process DirectRunner so that the whole job is in the measured process).

Reference on the 2-core development machine: the reference pipeline took 311.9 s for 4 x 5 s
files with full CREPE (0.064 audio-s/s); the target is >= 4x that, and < 2 GB RSS for 60 minutes.

Usage::

    python benchmarks/bench_prepare.py                      # everything (long: full CREPE, 60 min)
    python benchmarks/bench_prepare.py --capacities tiny --rss_minutes 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

REFERENCE_SECS_4X5S_FULL = 311.9
CREPE_PREDICT_SECS_20S_FULL = 80.4


def tone(seconds: float, f0: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A harmonic tone with vibrato and a little noise, float32 [n]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    freq = f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(freq) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2
    return (x + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def write_set(directory: str, lengths: list[float]) -> float:
    import soundfile as sf

    os.makedirs(directory, exist_ok=True)
    for i, secs in enumerate(lengths):
        sf.write(os.path.join(directory, f'f{i:02d}.wav'), tone(secs, 110 * 2 ** (i / 5), seed=i),
                 16000, subtype='PCM_16')
    return float(sum(lengths))


def throughput(capacity: str, src: str, out: str, audio_secs: float, args) -> dict:
    from pipelines.prepare_dataset import prepare_dataset

    t0 = time.time()
    manifest = prepare_dataset(os.path.join(src, '*.wav'), out, crepe_capacity=capacity,
                               viterbi=True, frame_rate=250, eval_fraction=0.2,
                               inference_batch_size=args.inference_batch_size,
                               crepe_precision=args.crepe_precision, f0_hop_ms=args.f0_hop_ms,
                               pipeline_args=args.pipeline_args)
    wall = time.time() - t0
    return {'capacity': capacity, 'precision': manifest['f0']['precision'],
            'f0_hop_ms': args.f0_hop_ms, 'audio_secs': audio_secs, 'wall_secs': round(wall, 2),
            'audio_secs_per_sec': round(audio_secs / wall, 4),
            'examples': manifest['examples'], 'dead_letters': manifest['dead_letters']}


def _rss_child(path: str, out: str, capacity: str) -> None:
    from pipelines.prepare_dataset import prepare_dataset

    prepare_dataset(path, out, crepe_capacity=capacity, viterbi=True,
                    pipeline_args=['--runner=DirectRunner', '--direct_running_mode=in_memory'])


def peak_rss(minutes: float, capacity: str, tmp: str) -> dict:
    import soundfile as sf

    path = os.path.join(tmp, 'long.wav')
    with sf.SoundFile(path, 'w', 16000, 1, 'PCM_16') as f:
        for i in range(int(np.ceil(minutes))):  # written a minute at a time
            f.write(tone(min(60.0, minutes * 60 - i * 60), 220.0, seed=i))
    t0 = time.time()
    out = os.path.join(tmp, 'long_out')
    code = (f'import sys; sys.path.insert(0, {ROOT!r}); '
            f'from benchmarks.bench_prepare import _rss_child; '
            f'_rss_child({path!r}, {out!r}, {capacity!r})')
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT)
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {'minutes': minutes, 'capacity': capacity, 'exit_code': proc.returncode,
            'wall_secs': round(time.time() - t0, 1), 'peak_rss_mb': round(rss_kb / 1024, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--capacities', default='tiny,full')
    p.add_argument('--lengths', default='5,5,5,5,60', help='seconds of each generated file')
    p.add_argument('--inference_batch_size', type=int, default=512)
    p.add_argument('--crepe_precision', default='auto', choices=('auto', 'bfloat16', 'float32'))
    p.add_argument('--f0_hop_ms', type=float, default=None,
                   help="CREPE's analysis hop (default: every frame)")
    p.add_argument('--rss_minutes', type=float, default=60.0, help='0 skips the memory test')
    p.add_argument('--rss_capacity', default='tiny')
    p.add_argument('--pipeline_args', nargs='*', default=None,
                   help='Beam options (default: DirectRunner, multi-process, all cores)')
    args = p.parse_args(argv)
    lengths = [float(x) for x in args.lengths.split(',')]
    results = {'machine_cpus': os.cpu_count(), 'files_secs': lengths, 'frame_rate': 250,
               'viterbi': True, 'throughput': [],
               'reference': {'pipeline_4x5s_full_secs': REFERENCE_SECS_4X5S_FULL,
                             'pipeline_audio_secs_per_sec': round(20 / REFERENCE_SECS_4X5S_FULL,
                                                                  4),
                             'crepe_predict_20s_full_secs': CREPE_PREDICT_SECS_20S_FULL,
                             'target_audio_secs_per_sec': round(4 * 20 / REFERENCE_SECS_4X5S_FULL,
                                                                4)}}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'in')
        audio_secs = write_set(src, lengths)
        for capacity in args.capacities.split(','):
            if capacity:
                r = throughput(capacity, src, os.path.join(tmp, 'out_' + capacity), audio_secs,
                               args)
                if capacity == 'full':
                    r['speedup_vs_reference'] = round(
                        r['audio_secs_per_sec'] / (20 / REFERENCE_SECS_4X5S_FULL), 2)
                results['throughput'].append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
        if args.rss_minutes > 0:
            results['memory'] = peak_rss(args.rss_minutes, args.rss_capacity, tmp)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
