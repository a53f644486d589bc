"""ddsp-transfer speed on this machine: the realtime factor of streamed synthesis alone, and of
the whole transfer (analysis with CREPE, adjustment, synthesis, writing the file).

Synthesis alone renders frame-rate controls (a melody with a loudness envelope) through
``trainer.serving.streaming.StreamingSynth`` for each preset (untrained weights: speed does not
depend on them), wet and dry, after a warm-up render that traces the chunk function. End to end runs
``trainer.serving.transfer.transfer`` on a generated WAV (44.1 kHz, a sung-like melody) with each
CREPE capacity, the first preset's model. Reports JSON: seconds of audio per second of wall time
(the realtime factor), median of the repeats, and the analysis/synthesis split.

    python benchmarks/bench_transfer.py                  # solo_instrument + tiny; CREPE tiny, full
    python benchmarks/bench_transfer.py --presets tiny --capacities tiny --secs 20
    python benchmarks/bench_transfer.py --out results.json  # also write the JSON to a file
    python benchmarks/bench_transfer.py --capacities full --f0_hop_ms 10 --crepe_precision auto
    python benchmarks/bench_transfer.py --analysis_only --capacities full --e2e_secs 10

``--analysis_only``: the analysis alone (``trainer.serving.transfer_analysis.analyze`` of the
generated input at 16 kHz, 250 frames/s, after a warm-up call), wall and CPU seconds of each
repeat: the part that CREPE dominates, without model building or synthesis.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402 - after the path insert


def build(preset: str, sample_rate: int = 16000, frame_rate: int = 250):
    """An untrained autoencoder of the preset and its resolved config."""
    from ddsp_core import records
    from trainer.model.autoencoder import Autoencoder
    from trainer.model.config import load_preset, resolve_data

    config = load_preset(preset)
    if config.data.frame_rate is not None:  # a preset that insists on its rates (vst)
        sample_rate, frame_rate = config.data.sample_rate, config.data.frame_rate
    config = resolve_data(config, records.Layout(sample_rate, frame_rate, 4.0), 'bench')
    model = Autoencoder(config.model, config.data, compute_dtype=config.train.compute_dtype)
    model(model.dummy_features(1))
    return model, config


def controls(secs: float, frame_rate: int):
    import numpy as np

    t = np.arange(int(secs * frame_rate)) / frame_rate
    f0 = 220.0 * 2.0 ** (np.round(7 * np.sin(0.9 * t)) / 12.0)
    loud = -30.0 + 15.0 * np.sin(2.3 * t) ** 2
    return f0.astype(np.float32), loud.astype(np.float32)


def bench_synthesis(preset: str, secs: float, repeats: int, chunk_secs: float) -> list[dict]:
    from trainer.serving.streaming import StreamingSynth

    model, config = build(preset)
    rate = config.data.frame_rate
    f0, loud = controls(secs, rate)
    rows = []
    for reverb in (True, False):
        synth = StreamingSynth(model, chunk_frames=int(round(chunk_secs * rate)), reverb=reverb)
        extra = {'power_db': loud} if synth.uses_power else {}
        for _ in synth.render(f0[:2 * synth.chunk_frames], loud[:2 * synth.chunk_frames],
                              **{k: v[:2 * synth.chunk_frames] for k, v in extra.items()}):
            pass  # warm-up: traces the chunk function
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in synth.render(f0, loud, **extra):
                pass
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        rows.append({'preset': preset, 'reverb': reverb, 'audio_secs': secs,
                     'chunk_secs': chunk_secs, 'median_secs': median,
                     'realtime_factor': secs / median, 'min_secs': min(times),
                     'max_secs': max(times), 'repeats': repeats})
        print(f'synthesis {preset:16s} {"wet" if reverb else "dry"}: '
              f'{secs / median:7.1f}x realtime ({median:.2f} s for {secs:g} s)',
              file=sys.stderr, flush=True)
    return rows


def write_input(path: str, secs: float, sample_rate: int = 44100) -> None:
    """A melody of 0.5 s notes with vibrato, onsets and short rests, 44.1 kHz mono."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, 'w', sample_rate, 1, subtype='PCM_16') as out:
        phase = 0.0
        for _ in range(int(secs * 2)):
            n = sample_rate // 2
            t = np.arange(n) / sample_rate
            f0 = 196.0 * 2 ** (rng.integers(0, 12) / 12) * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
            ph = phase + 2 * np.pi * np.cumsum(f0) / sample_rate
            phase = float(ph[-1])
            env = np.minimum(1.0, t / 0.03) * (t < 0.42)
            x = sum(np.sin(k * ph) / k for k in range(1, 6)) * env * 0.2
            out.write(x.astype(np.float32))


def bench_end_to_end(preset: str, capacity: str, secs: float, repeats: int,
                     crepe_precision: str = 'auto', f0_hop_ms=None) -> dict:
    from trainer.serving.inference import TrainedModel
    from trainer.serving.transfer import transfer

    model, config = build(preset)
    from ddsp_core.records import Manifest

    manifest = Manifest({'options': {'crepe_capacity': capacity, 'viterbi': True},
                         'f0_range_hz': [200.0, 800.0],
                         'splits': {'train': {'loudness_db': {'voiced_mean': -20.0,
                                                              'voiced_std': 6.0}}}},
                        'bench/manifest.json')
    with tempfile.TemporaryDirectory(prefix='bench-transfer-') as tmp:
        trained = TrainedModel(model, config, 0, Path(tmp), manifest, {})
        source = os.path.join(tmp, 'in.wav')
        write_input(source, secs)
        kwargs = {'crepe_precision': crepe_precision, 'f0_hop_ms': f0_hop_ms}
        transfer(trained, source, os.path.join(tmp, 'warm.wav'), **kwargs)  # loads, traces
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = transfer(trained, source, os.path.join(tmp, 'out.wav'), **kwargs)
            runs.append((time.perf_counter() - start, result.timings))
    total = statistics.median(t for t, _ in runs)
    analysis = statistics.median(r['analysis_s'] for _, r in runs)
    synthesis = statistics.median(r['synthesis_s'] for _, r in runs)
    precision = result.settings['crepe_precision']
    print(f'end to end {preset:15s} CREPE {capacity:5s} {precision} hop {f0_hop_ms or "frame"}: '
          f'{secs / total:7.2f}x realtime '
          f'(analysis {secs / analysis:.2f}x, synthesis {secs / synthesis:.1f}x)',
          file=sys.stderr, flush=True)
    return {'preset': preset, 'crepe_capacity': capacity, 'crepe_precision': precision,
            'f0_hop_ms': f0_hop_ms, 'audio_secs': secs,
            'median_secs': total, 'realtime_factor': secs / total,
            'analysis_secs': analysis, 'analysis_realtime_factor': secs / analysis,
            'synthesis_secs': synthesis, 'synthesis_realtime_factor': secs / synthesis,
            'repeats': repeats}


def bench_analysis(capacity: str, secs: float, repeats: int, crepe_precision: str = 'auto',
                   f0_hop_ms=None) -> dict:
    from trainer.serving.transfer_analysis import analyze

    with tempfile.TemporaryDirectory(prefix='bench-analysis-') as tmp:
        source = os.path.join(tmp, 'in.wav')
        write_input(source, secs)
        kwargs = {'crepe_capacity': capacity, 'crepe_precision': crepe_precision,
                  'f0_hop_ms': f0_hop_ms}
        analyze(source, 16000, 250, **kwargs)  # loads CREPE, traces
        runs = []
        for _ in range(repeats):
            load = os.getloadavg()[0]
            wall, cpu = time.perf_counter(), time.process_time()
            analyze(source, 16000, 250, **kwargs)
            runs.append({'wall_secs': round(time.perf_counter() - wall, 3),
                         'cpu_secs': round(time.process_time() - cpu, 3),
                         'load_average': round(load, 2)})
    wall = statistics.median(r['wall_secs'] for r in runs)
    print(f'analysis CREPE {capacity:5s} hop {f0_hop_ms or "frame"}: {secs / wall:.2f}x realtime '
          f'({statistics.median(r["cpu_secs"] for r in runs) / secs:.2f} CPU-s per audio-s)',
          file=sys.stderr, flush=True)
    return {'crepe_capacity': capacity, 'crepe_precision': crepe_precision,
            'f0_hop_ms': f0_hop_ms, 'audio_secs': secs, 'median_wall_secs': wall,
            'realtime_factor': secs / wall, 'runs': runs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--presets', nargs='+', default=['solo_instrument', 'tiny'])
    p.add_argument('--capacities', nargs='+', default=['tiny', 'full'],
                   help='CREPE capacities for the end-to-end runs (none: skip them)')
    p.add_argument('--secs', type=float, default=60.0, help='audio seconds, synthesis alone')
    p.add_argument('--e2e_secs', type=float, default=20.0, help='audio seconds, end to end')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--chunk_secs', type=float, default=4.0)
    p.add_argument('--crepe_precision', default='auto', choices=('auto', 'bfloat16', 'float32'),
                   help="CREPE's number format, end to end")
    p.add_argument('--f0_hop_ms', type=float, default=None,
                   help="CREPE's analysis hop, end to end (default: every frame)")
    p.add_argument('--analysis_only', action='store_true',
                   help='only the analysis (CREPE, loudness) of an --e2e_secs input, per capacity')
    p.add_argument('--out', default=None, help='also write the JSON here')
    args = p.parse_args(argv)

    from ddsp_core import runtime

    tf = runtime.import_tensorflow()
    result = {
        'benchmark': 'bench_transfer',
        'command': ' '.join([os.path.basename(sys.executable), *sys.argv]),
        'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                    'cpu_count': os.cpu_count(), 'devices': runtime.describe_devices(),
                    'tensorflow': tf.__version__},
        'synthesis': [], 'end_to_end': [],
    }
    if args.analysis_only:
        result['analysis'] = [bench_analysis(c, args.e2e_secs, args.repeats, args.crepe_precision,
                                             args.f0_hop_ms)
                              for c in args.capacities if c != 'none']
        return common.emit(result, args.out)
    for preset in args.presets:
        result['synthesis'] += bench_synthesis(preset, args.secs, args.repeats, args.chunk_secs)
    for capacity in [c for c in args.capacities if c != 'none']:
        result['end_to_end'].append(bench_end_to_end(args.presets[0], capacity, args.e2e_secs,
                                                     max(1, args.repeats - 2),
                                                     args.crepe_precision, args.f0_hop_ms))
    return common.emit(result, args.out)


if __name__ == '__main__':
    sys.exit(main())
