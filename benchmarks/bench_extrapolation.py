"""Pitch extrapolation, measured: train within a pitch range, play a chromatic scale an octave
beyond both ends, and see per note what the model does with pitches it never heard.

Data: ``render_quality_data.py``'s ``extrapolation/train`` (melodies within ``truth.json``'s
``range``) and ``extrapolation/scale/chromatic_scale.wav`` (every note from an octave below
the range to an octave above it, with its truth). Steps:

1. ``ddsp-prepare`` of the first --train_clips training clips, training of --preset (--set
   overrides) for --steps, tracked in MLflow (SQLite in --out); or, with --model, a model
   trained before (its own MLflow run gets the results);
2. the scale through the model: with ``--f0 crepe`` (default) ``ddsp-transfer`` with
   ``--no-auto_adjust`` (no octave shift into the training range: the model plays the scale's
   own pitches, as CREPE tracks them); with ``--f0 truth`` the same loudness and synthesis, but
   the f0 is each note's true pitch from truth.json (held through the rest after it), so notes
   beyond CREPE's top bin (2,005.5 Hz) reach the model at their pitch;
3. per note (after a 50 ms attack): the output's pitch accuracy (CREPE --crepe_capacity on the
   output; ``ddsp_core.analysis.note_pitch_accuracy``, median cents and the fraction within 50
   cents; for a note within a semitone of CREPE's top bin or above it, the note's spectral
   pitch, ``note_spectral_pitch``, one reading per note: accuracy 1 or 0), the output's
   loudness (median dB) and the spectral centroid of the decoder's harmonic distribution
   (``harmonic_centroid``, in harmonic numbers), with a straight line fitted to the in-range
   notes' centroids and each note's distance from it. Notes truth.json lists as silent (the
   sound font played nothing) are reported but left out of the summaries and the trend;
4. the JSON to --json, a plot (the three against MIDI note, the training range shaded) beside
   it, metrics and plot on the training run.

Run::

    python benchmarks/bench_extrapolation.py --data runs/quality_data --out runs/extrapolation \\
        --preset tiny --set data.example_secs=4 --steps 300
    python benchmarks/bench_extrapolation.py --data runs/quality_data --out runs/extrapolation \\
        --model runs/extrapolation/model --f0 truth   # the same model, true pitches in
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
    p.add_argument('--f0', choices=('crepe', 'truth'), default='crepe',
                   help="the scale's f0 into the model: CREPE's tracking of the rendered scale, "
                        "or each note's true pitch from truth.json")
    p.add_argument('--model', default=None,
                   help='measure this trained model directory (no preparation or training; '
                        '--preset, --set, --steps, --train_clips unused)')
    args = p.parse_args(argv)
    data, out = Path(args.data), Path(args.out).resolve()
    truth = common.read_truth('bench_extrapolation.py', data)
    if truth is None:
        return 2
    train_clips = sorted(n for n, f in truth['files'].items()
                         if f['set'] == 'extrapolation' and f['split'] == 'train')
    scale_name = 'extrapolation/scale/chromatic_scale.wav'
    if scale_name not in truth['files'] or (not args.model
                                            and len(train_clips) < args.train_clips):
        print(f'bench_extrapolation.py: error: --data {data} lacks the extrapolation set',
              file=sys.stderr)
        return 2
    if args.model and not (Path(args.model) / 'config.json').is_file():
        print(f'bench_extrapolation.py: error: --model {args.model}: not a trained model '
              'directory (no config.json)', file=sys.stderr)
        return 2
    from ddsp_core import runtime

    runtime.import_tensorflow()
    from ddsp_core import spectral_ops
    from ddsp_core.analysis import harmonic_centroid
    from ddsp_core.f0 import CREPE_MAX_HZ
    from trainer.model.model_dir import read_run_info
    from trainer.serving.inference import TrainedModel
    from trainer.serving.streaming import StreamingSynth, synth_processors
    from trainer.serving.transfer import transfer
    from trainer.serving.transfer_audio import write_audio
    from trainer.tracking.store import make_client, quiet_mlflow_logging

    quiet_mlflow_logging()
    if args.model:
        model_dir = Path(args.model).resolve()
        run = read_run_info(model_dir)
        run_id, tracking_uri, train_s = run.get('run_id'), run.get('tracking_uri'), None
    else:
        trained = common.train_on_clips(data, train_clips[:args.train_clips], out, args,
                                        'extrapolation')
        model_dir = out / 'model'
        run_id, tracking_uri = trained['result']['run_id'], trained['tracking_uri']
        train_s = trained['prepare_s'] + trained['train_s']  # preparation included, as before
    out.mkdir(parents=True, exist_ok=True)
    trained = TrainedModel.load(model_dir)
    fr = trained.frame_rate
    notes = truth['files'][scale_name]['notes']
    output = out / f'scale_out_{args.f0}.wav'
    rendered = transfer(trained, data / scale_name, output, auto_adjust=False,
                        subtype='FLOAT', crepe_capacity=args.crepe_capacity)
    loud_in = rendered.loudness_db.astype(np.float32)
    if args.f0 == 'truth':  # the same loudness and synthesis, the true pitches
        f0_in = truth_f0_track(notes, len(loud_in), fr)
        synth = StreamingSynth(trained.model, noise_seed=(trained.config.train.seed, 0))
        write_audio(synth.render(f0_in, loud_in, None), output, trained.sample_rate,
                    rendered.features.n_samples, subtype='FLOAT')
    else:
        f0_in = rendered.f0_hz.astype(np.float32)
    model = TrainedModel.load(model_dir, example_secs=len(f0_in) / fr)
    outputs = model({'f0_hz': f0_in[None], 'loudness_db': loud_in[None]})
    harmonic = synth_processors(model.model)[0]
    dist = harmonic.get_controls(outputs['amps'], outputs['harmonic_distribution'],
                                 outputs['f0_hz'])['harmonic_distribution'].numpy()[0]
    import soundfile as sf

    audio, rate = sf.read(str(output), dtype='float32')
    f0_out, _ = spectral_ops.compute_f0(audio, fr, viterbi=True,
                                        model_capacity=args.crepe_capacity)
    loud_out = np.asarray(spectral_ops.compute_loudness(audio, rate, fr, use_tf=False,
                                                        padding='center')).reshape(-1)
    low, high = truth['range']['low'], truth['range']['high']
    silent = {n['onset_s'] for n in truth.get('silent_notes', []) if n['file'] == scale_name}
    rows = measure_notes(notes, audio, rate, np.asarray(f0_out).reshape(-1), loud_out,
                         harmonic_centroid(dist), fr, low, high, silent)
    measured = [r for r in rows if not r['input_silent']]
    inside = [r for r in measured if r['in_range']]
    slope, intercept = np.polyfit([r['midi'] for r in inside],
                                  [r['centroid_harmonics'] for r in inside], 1)
    for r in rows:
        r['centroid_vs_trend'] = r['centroid_harmonics'] - (slope * r['midi'] + intercept)

    def summary(selected):
        return {k: float(np.nanmean([r[k] for r in selected]))
                for k in ('pitch_accuracy', 'loudness_db', 'centroid_harmonics')}

    report = {
        **common.report_header('bench_extrapolation', args, trained.step),
        'model': str(model_dir), 'f0_input': args.f0,
        'training_range': [low, high], 'train_s': train_s,
        'crepe_max_hz': CREPE_MAX_HZ,
        'silent_input_notes': [r['midi'] for r in rows if r['input_silent']],
        'in_range_centroid_trend': {'slope_per_semitone': float(slope),
                                    'intercept': float(intercept)},
        'summary': {'below': summary([r for r in measured if r['midi'] < low]),
                    'in_range': summary(inside),
                    'above': summary([r for r in measured if r['midi'] > high])},
        'notes': rows,
    }
    json_path = common.write_json(args.json, report)
    png = json_path.with_suffix('.png')
    _plot(rows, low, high, slope, intercept, png, args.f0)
    if run_id and tracking_uri:
        client = make_client(tracking_uri)
        prefix = 'extrapolation' if args.f0 == 'crepe' else f'extrapolation_{args.f0}_f0'
        for part, values in report['summary'].items():
            for key, value in values.items():
                client.log_metric(run_id, f'{prefix}/{part}/{key}', value)
        for path in (png, json_path, output):
            client.log_artifact(run_id, str(path), prefix)
    else:
        print(f'bench_extrapolation.py: {model_dir} names no MLflow run (trained without '
              'tracking): the results are in the JSON only', file=sys.stderr)
    print(json.dumps(report['summary'], indent=1))
    return 0


def truth_f0_track(notes: list[dict], n_frames: int, frame_rate: float) -> np.ndarray:
    """An f0 track [n_frames] (float32 Hz) from truth.json's notes: each note's true pitch from
    its onset to the next note's onset (the rest after a note keeps its pitch, as a player's
    release would; the loudness silences it), the first note's pitch before it."""
    if not notes:
        raise ValueError('no notes')
    track = np.full(n_frames, notes[0]['f0_hz'], dtype=np.float32)
    for note in sorted(notes, key=lambda n: n['onset_s']):
        track[min(n_frames, int(round(note['onset_s'] * frame_rate))):] = note['f0_hz']
    return track


def measure_notes(notes: list[dict], audio: np.ndarray, sample_rate: int, f0_out: np.ndarray,
                  loudness_out: np.ndarray, centroid: np.ndarray, frame_rate: float, low: int,
                  high: int, silent_onsets=frozenset()) -> list[dict]:
    """One row per note of the scale: its pitch in the output (CREPE's track ``f0_out``, or for
    a note within a semitone of CREPE's top bin or above it, ``note_spectral_pitch`` of
    ``audio``: ``pitch_method``), the output's median loudness and the harmonic distribution's
    median centroid over the note after its attack; ``input_silent`` for the notes whose onset
    is in ``silent_onsets`` (the sound font played nothing: truth.json's ``silent_notes``)."""
    from ddsp_core.analysis import note_pitch_accuracy, note_spectral_pitch
    from ddsp_core.f0 import CREPE_MAX_HZ

    truth_hz = [n['f0_hz'] for n in notes]
    onsets, offsets = [n['onset_s'] for n in notes], [n['offset_s'] for n in notes]
    tracked = note_pitch_accuracy(f0_out, frame_rate, truth_hz, onsets, offsets, skip_s=SKIP_S)
    spectral = note_spectral_pitch(audio, sample_rate, onsets, offsets, skip_s=SKIP_S)
    rows = []
    for i, n in enumerate(notes):
        a, b = int(np.ceil((n['onset_s'] + SKIP_S) * frame_rate)), int(n['offset_s'] * frame_rate)
        by_spectrum = n['f0_hz'] > CREPE_MAX_HZ * 2.0 ** (-1.0 / 12.0)
        if by_spectrum:
            cents = float(1200.0 * np.log2(spectral[i] / n['f0_hz']))
            accuracy = float(abs(cents) <= 50.0) if np.isfinite(cents) else 0.0
        else:
            cents, accuracy = float(tracked['median_cents'][i]), float(tracked['accuracy'][i])
        rows.append({'midi': n['midi'], 'f0_hz': n['f0_hz'], 'in_range': low <= n['midi'] <= high,
                     'input_silent': n['onset_s'] in silent_onsets,
                     'pitch_method': 'spectrum' if by_spectrum else 'crepe',
                     'median_cents': cents, 'pitch_accuracy': accuracy,
                     'loudness_db': float(np.median(loudness_out[a:b])),
                     'centroid_harmonics': float(np.nanmedian(centroid[a:b]))})
    return rows


def _plot(rows, low, high, slope, intercept, png: Path, f0_input: str = 'crepe') -> None:
    midi = np.array([r['midi'] for r in rows])
    mute = np.array([r['input_silent'] for r in rows])
    by_spectrum = np.array([r['pitch_method'] == 'spectrum' for r in rows])
    fig, axes = common.figure((8, 8), 3, 1, sharex=True)
    panels = (('median_cents', 'pitch error (cents, median)'),
              ('loudness_db', 'output loudness (dB)'),
              ('centroid_harmonics', 'harmonic centroid (harmonic no.)'))
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.axvspan(low, high, color='0.9', label='training range')
        values = np.array([r[key] for r in rows], dtype=float)
        values[mute] = np.nan  # a gap where the input had no sound
        ax.plot(midi, values, 'o-', ms=3)
        for m in midi[mute]:
            ax.axvline(m, color='tab:red', alpha=0.4, lw=4,
                       label='no sound in the input' if m == midi[mute][0] else None)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if by_spectrum.any():
        axes[0].plot(midi[by_spectrum], [r['median_cents'] for r in np.array(rows)[by_spectrum]],
                     's', mfc='none', ms=7, label="from the spectrum (above CREPE's range)")
    axes[0].legend(fontsize=8)
    axes[2].plot(midi, slope * midi + intercept, '--', label='in-range trend')
    axes[2].legend(fontsize=8)
    axes[2].set_xlabel('MIDI note of the chromatic scale')
    source = 'true pitches' if f0_input == 'truth' else "CREPE's f0"
    fig.suptitle(f'pitch extrapolation ({source} in): an octave beyond the training range on '
                 'both sides', fontsize=10)
    fig.savefig(png)


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.exit(main())
