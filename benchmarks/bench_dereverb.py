"""Blind dereverberation, measured: train on reverberant renders, resynthesise held-out
reverberant melodies with and without the learned reverb, compare with the dry truth.

Data: ``render_quality_data.py``'s ``dereverb/wet/{train,eval}`` (the violin renders convolved
with a synthetic room of known RT60) and their dry truth (``violin/{train,eval}``, named in
``truth.json``). Steps:

1. ``ddsp-prepare`` of the first --train_clips wet training clips (CREPE --crepe_capacity);
2. training of --preset (with --set overrides; the reverb must be long enough for the room:
   ``model.reverb_length`` samples; ``model.reverb_type=exp_decay`` learns a room of a gain and
   a decay instead of a free impulse response) for --steps, tracked in MLflow (SQLite in
   --out);
3. for the first --eval_clips wet evaluation clips: ``ddsp-transfer`` with the learned reverb
   (the wet resynthesis) and ``--dry``; against the dry truth, for the wet input, the wet
   resynthesis and the dry resynthesis: the multi-scale spectral distance
   (``trainer.evaluation.metrics.spectral_distance``, over the dry truth's length) and the
   energy in the --tail_ms after each note offset (``ddsp_core.analysis.tail_energy_db``,
   windows cut at the next onset, against the dry truth's mean power);
4. the learned impulse response: its RT60 (``rt60_from_ir``) against the known one, a plot of
   its Schroeder decay (dB over time) and the IR as audio, logged to the training run with the
   metrics; the JSON to --json.

Targets (issue 18): the dry resynthesis closer to the dry truth than the wet input is, with at
least 6 dB less tail energy than the wet input.

Run::

    python benchmarks/bench_dereverb.py --data runs/quality_data --out runs/dereverb \\
        --preset tiny --set data.example_secs=4 --set model.reverb_length=24000 \\
        --set model.reverb_type=exp_decay --steps 3000 --train_clips 10 --eval_clips 2
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402 - after the path insert


def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype='float64')
    if rate != 16000:
        sys.exit(f'bench_dereverb: error: {path} is at {rate} Hz, not 16000')
    return audio


def measures(audio: np.ndarray, dry: np.ndarray, notes: list[dict], tail_s: float) -> dict:
    """Spectral distance to the dry truth (over its length) and tail energy after the note
    offsets (against the dry truth's mean power)."""
    from ddsp_core.analysis import tail_energy_db
    from trainer.evaluation.metrics import spectral_distance

    n = min(len(audio), len(dry))
    onsets = [x['onset_s'] for x in notes]
    offsets = [x['offset_s'] for x in notes]
    return {'spectral_distance': spectral_distance(dry[:n], audio[:n]),
            'tail_energy_db': tail_energy_db(audio, 16000, offsets, tail_s, onsets,
                                             reference=dry)}


def main(argv=None) -> int:
    p = common.quality_data_parser('bench_dereverb.py', __doc__,
                                   'working folder (datasets, model, outputs)', 'dereverb.json')
    p.add_argument('--eval_clips', type=int, default=1,
                   help='how many wet evaluation clips are resynthesised and measured')
    p.add_argument('--tail_ms', type=float, default=300.0,
                   help='the window after each note offset whose energy is measured (ms)')
    args = p.parse_args(argv)
    data, out = Path(args.data), Path(args.out).resolve()
    truth = common.read_truth('bench_dereverb.py', data)
    if truth is None:
        return 2
    wet = {split: sorted(n for n, f in truth['files'].items()
                         if f['set'] == 'dereverb' and f['split'] == split)
           for split in ('train', 'eval')}
    if len(wet['train']) < args.train_clips or len(wet['eval']) < args.eval_clips:
        print(f'bench_dereverb.py: error: --data {data} has {len(wet["train"])} wet training '
              f'and {len(wet["eval"])} wet evaluation clips', file=sys.stderr)
        return 2
    from ddsp_core import runtime

    runtime.import_tensorflow()
    from ddsp_core.analysis import rt60_from_ir, schroeder_decay_db
    from trainer.serving.inference import TrainedModel
    from trainer.serving.streaming import learned_ir, room_of
    from trainer.serving.transfer import transfer
    from trainer.tracking.store import make_client, quiet_mlflow_logging

    quiet_mlflow_logging()
    trained = common.train_on_clips(data, wet['train'][:args.train_clips], out, args,
                                    'dereverb')
    result, tracking_uri = trained['result'], trained['tracking_uri']
    model = TrainedModel.load(out / 'model')
    rows = []
    for name in wet['eval'][:args.eval_clips]:
        info = truth['files'][name]
        dry_truth = _read(data / info['dry_truth'])
        row = {'clip': name, 'dry_truth': measures(dry_truth, dry_truth, info['notes'],
                                                   args.tail_ms / 1000),
               'wet_input': measures(_read(data / name), dry_truth, info['notes'],
                                     args.tail_ms / 1000)}
        for label, dry in (('wet_resynthesis', False), ('dry_resynthesis', True)):
            target = out / f'{Path(name).stem}_{label}.wav'
            transfer(model, data / name, target, dry=dry, subtype='FLOAT')
            row[label] = measures(_read(target), dry_truth, info['notes'], args.tail_ms / 1000)
        rows.append(row)
    ir = learned_ir(room_of(model.model))
    known = truth['ir']['rt60_s']
    try:
        learned_rt60 = rt60_from_ir(ir, 16000)
    except ValueError:
        learned_rt60 = None
    report = {
        **common.report_header('bench_dereverb', args, result['step']),
        'train_clips': wet['train'][:args.train_clips], 'tail_ms': args.tail_ms,
        'room': {'known_rt60_s': known, 'learned_rt60_s': learned_rt60,
                 'learned_ir_samples': len(ir)},
        'clips': rows,
        'timings': {k: trained[k] for k in ('prepare_s', 'train_s')},
    }
    for key in ('spectral_distance', 'tail_energy_db'):
        for label in ('dry_truth', 'wet_input', 'wet_resynthesis', 'dry_resynthesis'):
            report.setdefault('mean', {}).setdefault(label, {})[key] = float(
                np.mean([r[label][key] for r in rows]))
    mean = report['mean']
    report['targets'] = {
        'dry_closer_than_wet_input': (mean['dry_resynthesis']['spectral_distance']
                                      < mean['wet_input']['spectral_distance']),
        'tail_6db_below_wet_input': (mean['dry_resynthesis']['tail_energy_db']
                                     <= mean['wet_input']['tail_energy_db'] - 6.0)}
    json_path = common.write_json(args.json, report)
    _log(make_client(tracking_uri), result['run_id'], report, ir, schroeder_decay_db(ir), out,
         json_path, known, learned_rt60)
    print(json.dumps({k: report[k] for k in ('room', 'mean', 'targets', 'timings')}, indent=1))
    return 0


def _log(client, run_id, report, ir, edc, out: Path, json_path: Path, known, learned) -> None:
    """The measures as metrics, the learned IR as audio and its decay plot, on the run."""
    import soundfile as sf

    for label, values in report['mean'].items():
        for key, value in values.items():
            client.log_metric(run_id, f'dereverb/{label}/{key}', value)
    if learned is not None:
        client.log_metric(run_id, 'dereverb/learned_rt60_s', learned)
    sf.write(str(out / 'learned_ir.wav'), ir / (np.max(np.abs(ir)) + 1e-12), 16000,
             subtype='FLOAT')
    fig, ax = common.figure((7, 3.5))
    t = np.arange(len(edc)) / 16000
    ax.plot(t, edc, label='learned IR (Schroeder decay)')
    ax.plot(t, -60.0 * t / known, '--', label=f'known room: RT60 {known:g} s')
    ax.set_ylim(-80, 2)
    ax.set_xlabel('time (s)')
    ax.set_ylabel('energy decay (dB)')
    ax.set_title('learned RT60: ' + (f'{learned:.2f} s' if learned is not None else
                                     'does not decay 25 dB'))
    ax.legend()
    ax.grid(alpha=0.3)
    png = json_path.with_suffix('.png')
    fig.savefig(png)
    for path in (out / 'learned_ir.wav', png, json_path):
        client.log_artifact(run_id, str(path), 'dereverb')


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.exit(main())
