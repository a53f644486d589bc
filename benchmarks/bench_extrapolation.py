"""Pitch extrapolation, measured: train within a pitch range, play a chromatic scale an octave
beyond both ends, and see per note what the model does with pitches it never heard.

Data: ``render_quality_data.py``'s ``extrapolation/train`` (melodies within ``truth.json``'s
``range``) and ``extrapolation/scale/chromatic_scale.wav`` (every note from an octave below
the range to an octave above it, with its truth). Steps:

1. ``ddsp-prepare`` of the first --train_clips training clips, training of --preset (--set
   overrides) for --steps, tracked in MLflow (SQLite in --out);
2. ``ddsp-transfer`` of the scale with ``--no-auto_adjust`` (no octave shift into the training
   range: the model plays the scale's own pitches);
3. per note (after a 50 ms attack): the output's pitch accuracy (CREPE --crepe_capacity on the
   output; ``ddsp_core.analysis.note_pitch_accuracy``, median cents and the fraction within 50
   cents), the output's loudness (median dB) and the spectral centroid of the decoder's
   harmonic distribution (``harmonic_centroid``, in harmonic numbers), with a straight line
   fitted to the in-range notes' centroids and each note's distance from it;
4. the JSON to --json, a plot (the three against MIDI note, the training range shaded) beside
   it, metrics and plot on the training run.

Run::

    python benchmarks/bench_extrapolation.py --data runs/quality_data --out runs/extrapolation \\
        --preset tiny --set data.example_secs=4 --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXPERIMENT = 'ddsp-bench-extrapolation'
SKIP_S = 0.05


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='bench_extrapolation.py', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='render_quality_data.py --out')
    p.add_argument('--out', required=True, help='working folder')
    p.add_argument('--preset', default='tiny')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
    p.add_argument('--steps', type=int, default=300)
    p.add_argument('--train_clips', type=int, default=2)
    p.add_argument('--crepe_capacity', default='tiny')
    p.add_argument('--json', default=str(ROOT / 'benchmarks' / 'results' / 'extrapolation.json'))
    args = p.parse_args(argv)
    data, out = Path(args.data), Path(args.out).resolve()
    try:
        truth = json.loads((data / 'truth.json').read_text())
    except (OSError, ValueError) as e:
        print(f'bench_extrapolation.py: error: --data {data}: no readable truth.json ({e})',
              file=sys.stderr)
        return 2
    train_clips = sorted(n for n, f in truth['files'].items()
                         if f['set'] == 'extrapolation' and f['split'] == 'train')
    scale_name = 'extrapolation/scale/chromatic_scale.wav'
    if len(train_clips) < args.train_clips or scale_name not in truth['files']:
        print(f'bench_extrapolation.py: error: --data {data} lacks the extrapolation set',
              file=sys.stderr)
        return 2
    from ddsp_core import runtime

    runtime.import_tensorflow()
    from ddsp_core import spectral_ops
    from ddsp_core.analysis import harmonic_centroid, note_pitch_accuracy
    from pipelines.prepare_dataset import prepare_dataset
    from trainer.model.config import load_preset
    from trainer.serving.inference import TrainedModel
    from trainer.serving.streaming import synth_processors
    from trainer.serving.transfer import transfer
    from trainer.tracking.store import make_client, quiet_mlflow_logging
    from trainer.training.train import train

    quiet_mlflow_logging()
    clips = out / 'train_clips'
    if clips.exists():
        shutil.rmtree(clips)
    clips.mkdir(parents=True)
    for name in train_clips[:args.train_clips]:
        shutil.copy(data / name, clips / Path(name).name)
    t0 = time.perf_counter()
    prepare_dataset([str(clips / '*.wav')], str(out / 'data'), crepe_capacity=args.crepe_capacity,
                    eval_fraction=0.0, overwrite=True)
    config = load_preset(args.preset).with_overrides(args.set)
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    result = train(config, str(out / 'data'), str(out / 'model'), steps=args.steps,
                   tracking_uri=tracking_uri, experiment=EXPERIMENT,
                   run_name=f'extrapolation {args.preset}', progress=False)
    train_s = time.perf_counter() - t0
    trained = TrainedModel.load(out / 'model')
    fr = trained.frame_rate
    rendered = transfer(trained, data / scale_name, out / 'scale_out.wav', auto_adjust=False,
                        subtype='FLOAT', crepe_capacity=args.crepe_capacity)
    f0_in = rendered.f0_hz.astype(np.float32)
    loud_in = rendered.loudness_db.astype(np.float32)
    model = TrainedModel.load(out / 'model', example_secs=len(f0_in) / fr)
    outputs = model({'f0_hz': f0_in[None], 'loudness_db': loud_in[None]})
    harmonic = synth_processors(model.model)[0]
    dist = harmonic.get_controls(outputs['amps'], outputs['harmonic_distribution'],
                                 outputs['f0_hz'])['harmonic_distribution'].numpy()[0]
    import soundfile as sf

    audio, rate = sf.read(str(out / 'scale_out.wav'), dtype='float32')
    f0_out, _ = spectral_ops.compute_f0(audio, fr, viterbi=True,
                                        model_capacity=args.crepe_capacity)
    f0_out = np.asarray(f0_out).reshape(-1)
    loud_out = np.asarray(spectral_ops.compute_loudness(audio, rate, fr, use_tf=False,
                                                        padding='center')).reshape(-1)
    notes = truth['files'][scale_name]['notes']
    low, high = truth['range']['low'], truth['range']['high']
    accuracy = note_pitch_accuracy(f0_out, fr, [n['f0_hz'] for n in notes],
                                   [n['onset_s'] for n in notes], [n['offset_s'] for n in notes],
                                   skip_s=SKIP_S)
    centroid = harmonic_centroid(dist)
    rows = []
    for i, n in enumerate(notes):
        a, b = int(np.ceil((n['onset_s'] + SKIP_S) * fr)), int(n['offset_s'] * fr)
        rows.append({'midi': n['midi'], 'in_range': low <= n['midi'] <= high,
                     'median_cents': float(accuracy['median_cents'][i]),
                     'pitch_accuracy': float(accuracy['accuracy'][i]),
                     'loudness_db': float(np.median(loud_out[a:b])),
                     'centroid_harmonics': float(np.nanmedian(centroid[a:b]))})
    inside = [r for r in rows if r['in_range']]
    slope, intercept = np.polyfit([r['midi'] for r in inside],
                                  [r['centroid_harmonics'] for r in inside], 1)
    for r in rows:
        r['centroid_vs_trend'] = r['centroid_harmonics'] - (slope * r['midi'] + intercept)

    def summary(selected):
        return {k: float(np.nanmean([r[k] for r in selected]))
                for k in ('pitch_accuracy', 'loudness_db', 'centroid_harmonics')}

    report = {
        'benchmark': 'bench_extrapolation', 'date': time.strftime('%Y-%m-%d %H:%M:%S %z'),
        'command': ' '.join([Path(sys.executable).name, *sys.argv]),
        'machine': {'cpu_count': os.cpu_count(), 'devices': runtime.describe_devices()},
        'preset': args.preset, 'overrides': args.set, 'steps': result['step'],
        'training_range': [low, high], 'train_s': train_s,
        'in_range_centroid_trend': {'slope_per_semitone': float(slope),
                                    'intercept': float(intercept)},
        'summary': {'below': summary([r for r in rows if r['midi'] < low]),
                    'in_range': summary(inside),
                    'above': summary([r for r in rows if r['midi'] > high])},
        'notes': rows,
    }
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + '\n')
    png = json_path.with_suffix('.png')
    _plot(rows, low, high, slope, intercept, png)
    client = make_client(tracking_uri)
    for part, values in report['summary'].items():
        for key, value in values.items():
            client.log_metric(result['run_id'], f'extrapolation/{part}/{key}', value)
    for path in (png, json_path):
        client.log_artifact(result['run_id'], str(path), 'extrapolation')
    print(json.dumps(report['summary'], indent=1))
    return 0


def _plot(rows, low, high, slope, intercept, png: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    midi = np.array([r['midi'] for r in rows])
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    panels = (('median_cents', 'pitch error (cents, median)'),
              ('loudness_db', 'output loudness (dB)'),
              ('centroid_harmonics', 'harmonic centroid (harmonic no.)'))
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.axvspan(low, high, color='0.9', label='training range')
        ax.plot(midi, [r[key] for r in rows], 'o-', ms=3)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].plot(midi, slope * midi + intercept, '--', label='in-range trend')
    axes[2].legend()
    axes[2].set_xlabel('MIDI note of the chromatic scale')
    fig.suptitle('pitch extrapolation: an octave beyond the training range on both sides')
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.exit(main())
