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

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402 - after the path insert

SKIP_S = 0.05


def main(argv=None) -> int:
    p = common.quality_data_parser('bench_extrapolation.py', __doc__, 'working folder',
                                   'extrapolation.json')
    args = p.parse_args(argv)
    data, out = Path(args.data), Path(args.out).resolve()
    truth = common.read_truth('bench_extrapolation.py', data)
    if truth is None:
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
    from trainer.serving.inference import TrainedModel
    from trainer.serving.streaming import synth_processors
    from trainer.serving.transfer import transfer
    from trainer.tracking.store import make_client, quiet_mlflow_logging

    quiet_mlflow_logging()
    trained = common.train_on_clips(data, train_clips[:args.train_clips], out, args,
                                    'extrapolation')
    result, tracking_uri = trained['result'], trained['tracking_uri']
    train_s = trained['prepare_s'] + trained['train_s']  # preparation included, as before
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
        **common.report_header('bench_extrapolation', args, result['step']),
        'training_range': [low, high], 'train_s': train_s,
        'in_range_centroid_trend': {'slope_per_semitone': float(slope),
                                    'intercept': float(intercept)},
        'summary': {'below': summary([r for r in rows if r['midi'] < low]),
                    'in_range': summary(inside),
                    'above': summary([r for r in rows if r['midi'] > high])},
        'notes': rows,
    }
    json_path = common.write_json(args.json, report)
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
