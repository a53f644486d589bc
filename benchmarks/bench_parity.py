"""Training parity with the reference (magenta/ddsp): the same solo-instrument model trained by
its trainer and by ours on the same data, judged the same way at the same checkpoints.

Stages (each its own sub-command; ``all`` runs them in order; every stage reads and writes
``--out``):

1. ``prepare``: ``ddsp-prepare --reference_layout`` of the training clips (all train) and of the
   held-out clips (all eval), e.g. ``render_quality_data.py``'s ``violin/train`` and
   ``violin/eval``;
2. ``train-reference``: the reference's ``ddsp_run --mode=train`` with its
   ``models/solo_instrument.gin`` and ``datasets/tfrecord.gin`` on our training records, in the
   scratch environment (--ref_python, with ``TF_USE_LEGACY_KERAS=1`` and the reference's source
   on --ref_src; nothing of it is in this project), batch --batch_size, learning rate --lr,
   --steps, a checkpoint every --every steps (all kept);
3. ``train-ours``: our ``solo_instrument`` preset with the same batch, learning rate, steps and
   checkpoints (4 s examples, as the reference's); the wall time of every logged step kept;
4. ``resynth``: our model at each checkpoint resynthesises the held-out examples
   (``ours/step_N.npz``, with the RMS of the harmonic and of the noise synthesiser's own output
   per example);
5. ``judge``: in the scratch environment (``parity_reference.py``), the reference's model at each
   checkpoint resynthesises the same examples (``reference/step_N.npz``, the same RMS) and the
   reference's own
   ``SpectralLoss`` judges both models' resynthesis at every checkpoint (``judged.json``);
6. ``report``: ``ddsp-eval``'s metrics (``trainer.evaluation.metrics.resynthesis_metrics``:
   loudness L1, f0 L1 and accuracy with CREPE --crepe_capacity, spectral distance) of both
   models' resynthesis of the first --metric_examples held-out examples at each checkpoint,
   each synthesiser's level against the originals (``harmonic_db``, ``noise_db``; a harmonic
   part 30 dB or more under the originals is ``harmonic_collapsed``, warned about), the
   wall-clock of each checkpoint (the checkpoint files' times from the start of the
   training process, the first step's tracing included for both),
   written to --json (default ``benchmarks/results/parity.json``), a plot (held-out loss
   against steps and against wall-clock; ``parity.png`` beside the JSON), a listening report
   (``listening_report.html`` and ``listen/`` in --out: --listen held-out examples, the
   original and both models' resynthesis at the last checkpoint, with spectrograms) and an
   MLflow run (SQLite store in --out; metrics per step, the plot, the JSON, the report and its
   audio).

The two trainings run one after the other, never side by side (``nice -n 15`` on a shared
machine). The scratch environment, outside the project::

    python3.11 -m venv /tmp/refparity   # or: uv venv --python 3.11 /tmp/refparity
    /tmp/refparity/bin/pip install "tensorflow==2.21.*" "tf-keras==2.21.*" gin-config \\
        "tensorflow-probability[tf]" tensorflow-datasets librosa mir_eval note_seq \\
        cloudml-hypertune google-cloud-storage matplotlib "setuptools<81" soundfile \\
        tensorboard   # the reference's trainer writes tf.summary.text: TF 2.21 does not pull it in
    bash tools/install_crepe.sh /tmp/refparity/bin/python
    git --git-dir=MIRROR/magenta+ddsp/repo archive HEAD | tar -x -C /tmp/refddsp

Run::

    python benchmarks/bench_parity.py all --train 'DATA/violin/train/*.wav' \\
        --eval 'DATA/violin/eval/*.wav' --out runs/parity --steps 1000 --every 250 \\
        --ref_python /tmp/refparity/bin/python --ref_src /tmp/refddsp

The reference's trainer has no seed flag: ``train-reference --ref_seed N`` seeds its process
(:data:`SEEDED_REFERENCE`); unseeded, each of its runs differs. Several seeds of ours against
one run of the reference (it is ~3x slower): for each seed, a fresh --out holding the same
``data_train``/``data_eval``, the stages ``train-ours resynth judge`` with ``--seed N``, then
``report --reference_from REPORT.json``, where REPORT.json is the report of a run that trained
the reference on the same data with the same settings (checked: the settings, and the held-out
originals' fingerprint, or for reports made before it was recorded, their number and CREPE's
count of voiced frames in them).
``bench_parity_summary.py`` pools the reports of several runs per checkpoint.

Every stage appends its command line to ``--out``/stages.jsonl; the report lists them
(``stages``), so the JSON says how it was made.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import common  # noqa: E402 - after the path insert

EXPERIMENT = 'ddsp-bench-parity'
MODELS = ('reference', 'ours')
STAGES = ('prepare', 'train-reference', 'train-ours', 'resynth', 'judge', 'report')


def _step_of(path: str) -> int:
    return int(re.findall(r'(?:ckpt|step)[-_](\d+)', os.path.basename(path))[0])


def checkpoint_times(model_dir: Path, started: float) -> dict[int, float]:
    """``{step: seconds from the training process' start to its checkpoint's index file}``."""
    return {_step_of(f): os.path.getmtime(f) - started
            for f in glob.glob(str(model_dir / 'ckpt-*.index'))}


def reference_log_steps(log: Path) -> list[tuple[int, float]]:
    """``(step, seconds since the epoch)`` of each ``step: N`` line of the reference's log
    (absl's ``I1207 03:22:13.301957 ...`` time stamps, this year, local time)."""
    rows = []
    pattern = re.compile(r'^I(\d{4}) (\d\d:\d\d:\d\d\.\d+) .*\bstep: (\d+)\t')
    year = time.localtime().tm_year
    for line in log.read_text(errors='replace').splitlines():
        found = pattern.match(line)
        if found:
            stamp = time.mktime(time.strptime(f'{year}{found[1]} {found[2][:8]}',
                                              '%Y%m%d %H:%M:%S')) + float('0' + found[2][8:])
            rows.append((int(found[3]), stamp))
    return rows


def seconds_per_step(points: list[tuple[int, float]]) -> float | None:
    """Mean seconds per step between the first and the last logged step (the first step's
    tracing and the start-up before it left out)."""
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return None
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def _record_stage(out: Path, stage: str) -> None:
    """Append the command that ran ``stage`` to ``out/stages.jsonl`` (the report lists them:
    one report comes of several commands)."""
    with open(out / 'stages.jsonl', 'a') as f:
        f.write(json.dumps({'stage': stage, 'date': time.strftime('%Y-%m-%d %H:%M:%S %z'),
                            'command': ' '.join([Path(sys.executable).name, *sys.argv])})
                + '\n')


def _stage_commands(out: Path) -> list[dict]:
    path = out / 'stages.jsonl'
    return ([json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if path.exists() else [])


def stage_prepare(args) -> None:
    from pipelines.prepare_dataset import prepare_dataset

    inputs = {}
    for name, pattern, fraction in (('train', args.train, 0.0), ('eval', args.eval, 1.0)):
        t0 = time.perf_counter()
        manifest = prepare_dataset([pattern], str(args.out / f'data_{name}'),
                                   crepe_capacity=args.crepe_capacity, eval_fraction=fraction,
                                   reference_layout=True, overwrite=True)
        print(f"prepared {name}: {manifest['examples']} examples in "
              f'{time.perf_counter() - t0:.0f} s', flush=True)
        inputs[name] = {'audio': pattern, 'examples': manifest['examples'],
                        'prepare_s': time.perf_counter() - t0}
    (args.out / 'prepared.json').write_text(json.dumps(inputs, indent=1))


#: ``python -c`` program that seeds the reference's process, then runs its ``ddsp_run`` with the
#: rest of the command line: its trainer has no seed flag, and Keras' global seed (Python's,
#: NumPy's and TensorFlow's, whose op seeds follow from it: the initialisers, the data
#: shuffle) is set before any of its code runs.
SEEDED_REFERENCE = ('import sys\n'
                    'import tensorflow as tf\n'
                    'tf.keras.utils.set_random_seed(int(sys.argv.pop(1)))\n'
                    'from ddsp.training import ddsp_run\n'
                    'ddsp_run.console_entry_point()\n')


def reference_launcher(seed: int | None) -> list[str]:
    """The arguments after the scratch python that start the reference's ``ddsp_run``: as its
    module, unseeded (``seed`` None), or seeded by :data:`SEEDED_REFERENCE`."""
    if seed is None:
        return ['-m', 'ddsp.training.ddsp_run']
    return ['-c', SEEDED_REFERENCE, str(seed)]


def stage_train_reference(args) -> None:
    model_dir = args.out / 'reference_model'
    model_dir.mkdir(parents=True, exist_ok=True)
    params = [f"TFRecordProvider.file_pattern='{args.out / 'data_train'}/train-*'",
              'TFRecordProvider.example_secs=4',
              f'train.batch_size={args.batch_size}', f'train.num_steps={args.steps}',
              f'train.steps_per_save={args.every}', f'train.steps_per_summary={args.every}',
              f'Trainer.learning_rate={args.lr}', 'Trainer.checkpoints_to_keep=1000']
    cmd = [args.ref_python, *reference_launcher(args.ref_seed), '--mode=train',
           f'--save_dir={model_dir}', '--gin_file=models/solo_instrument.gin',
           '--gin_file=datasets/tfrecord.gin'] + [f'--gin_param={p}' for p in params]
    env = {**os.environ, 'TF_USE_LEGACY_KERAS': '1', 'PYTHONPATH': str(args.ref_src),
           'TF_CPP_MIN_LOG_LEVEL': '2'}
    started = time.time()
    print('reference:', shlex.join(cmd), flush=True)
    with open(args.out / 'reference_train.log', 'w') as log:
        done = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        if not (model_dir / f'ckpt-{args.steps}.index').exists():
            sys.exit(f'bench_parity: error: the reference trainer failed ({done.returncode}); '
                     f"see {args.out / 'reference_train.log'}")
        # seen on TF 2.21: exit status 1 after "Saved checkpoint ... at step N", nothing logged
        print(f'warning: the reference trainer exited with {done.returncode} after writing its '
              f'last checkpoint (step {args.steps}); continuing', flush=True)
    (args.out / 'reference_timing.json').write_text(json.dumps({
        'started': started, 'finished': time.time(), 'seed': args.ref_seed,
        'checkpoints': checkpoint_times(model_dir, started)}, indent=1))


def stage_train_ours(args) -> None:
    from ddsp_core import runtime

    runtime.import_tensorflow()
    from trainer.model.config import load_preset
    from trainer.training.train import train

    config = load_preset('solo_instrument').with_overrides([
        f'train.batch_size={args.batch_size}', f'train.learning_rate={args.lr}',
        f'train.checkpoint_every={args.every}', 'train.keep_checkpoints=1000',
        *([] if args.seed is None else [f'train.seed={args.seed}']),
        *([] if args.warmup_steps is None else [f'train.warmup_steps={args.warmup_steps}'])])
    model_dir = args.out / 'our_model'
    started = time.time()
    logged = []

    def on_log(step, metrics):
        logged.append((int(step), time.time() - started, float(metrics['total_loss'])))

    train(config, str(args.out / 'data_train'), str(model_dir), steps=args.steps,
          tracking_uri=f"sqlite:///{args.out / 'mlflow.db'}", experiment=EXPERIMENT,
          run_name='parity: ours', progress=sys.stderr.isatty(), on_log=on_log)
    (args.out / 'ours_timing.json').write_text(json.dumps({
        'started': started, 'finished': time.time(), 'logged': logged,
        'checkpoints': checkpoint_times(model_dir, started)}, indent=1))


def _our_train_setting(out: Path, key: str) -> int | None:
    """A ``train`` setting our model was trained with (from its config.json), None before it
    was trained (or for a model from before the setting existed)."""
    try:
        return int(json.loads((out / 'our_model' / 'config.json').read_text())['train'][key])
    except (OSError, ValueError, KeyError):
        return None


def _eval_fingerprint(out: Path) -> str | None:
    """SHA-256 of the held-out originals (float32) as our resynthesis files hold them: two
    reports with the same fingerprint judged the same examples."""
    import hashlib

    npz = sorted(glob.glob(str(out / 'ours' / 'step_*.npz')), key=_step_of)
    if not npz:
        return None
    return hashlib.sha256(np.ascontiguousarray(np.load(npz[0])['audio'], np.float32)
                          .tobytes()).hexdigest()


#: Settings two reports must share for one to lend the other its reference curve.
SHARED_SETTINGS = ('batch_size', 'learning_rate', 'every', 'example_secs', 'crepe_capacity',
                   'metric_examples')


def incomparable(earlier: dict, settings: dict, data: dict, rows: list[dict]) -> str | None:
    """Why the report ``earlier`` was not made like this one (``settings``, ``data``, and this
    run's judged ``rows``), or None: the same :data:`SHARED_SETTINGS`, and the same held-out
    examples: the same fingerprint where both reports have one, else the same number of
    examples and the same count of voiced frames CREPE finds in the originals (a property of the
    audio, not of either model)."""
    theirs_settings = earlier.get('settings') or {}
    differ = [f'{k}: {theirs_settings.get(k)!r} there, {settings.get(k)!r} here'
              for k in SHARED_SETTINGS if theirs_settings.get(k) != settings.get(k)]
    if differ:
        return f'it was made with other settings ({"; ".join(differ)})'

    def held_out(report_data):
        return report_data.get('eval', {}) if isinstance(report_data, dict) else {}

    mine, theirs = held_out(data), held_out(earlier.get('data'))
    if mine.get('sha256') and theirs.get('sha256'):
        if mine['sha256'] != theirs['sha256']:
            return (f'it judged other held-out examples (fingerprint {theirs["sha256"][:12]} '
                    f'there, {mine["sha256"][:12]} here)')
        return None
    if mine.get('examples') != theirs.get('examples'):
        return (f'it judged {theirs.get("examples")} held-out examples, this run '
                f'{mine.get("examples")}')
    their_rows = [r for curve in (earlier.get('curves') or {}).values() for r in curve or []]
    voiced = {r.get('eval_voiced_frames') for r in their_rows + rows}
    if len(voiced) != 1 or None in voiced:
        return ('the held-out originals differ (voiced frames CREPE finds in them: '
                f'{sorted(map(str, voiced))})')
    return None


def borrowed_reference(path: Path, settings: dict, data: dict,
                       ours: list[dict]) -> tuple[list[dict], int | None]:
    """The reference's curve from an earlier report (``--reference_from``) and the seed it was
    trained with (None: unseeded), for a run that trains only ours (the reference is 3x slower:
    one of its runs can stand against several of ours). Refused, naming the difference, unless
    it was made with the same settings on the same held-out examples (:func:`incomparable`)."""
    try:
        earlier = json.loads(Path(path).read_text())
        rows = earlier['curves']['reference']
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f'bench_parity: error: --reference_from {path}: not a bench_parity report '
                 f'with a reference curve ({e})')
    if not rows:
        sys.exit(f'bench_parity: error: --reference_from {path}: its reference curve is empty')
    if not ours:
        sys.exit('bench_parity: error: --reference_from: no checkpoint of ours is judged yet '
                 '(run train-ours, resynth and judge first)')
    problem = incomparable(earlier, settings, data, ours)
    if problem:
        sys.exit(f'bench_parity: error: --reference_from {path}: {problem}')
    return rows, (earlier.get('settings') or {}).get('reference_seed')


def _eval_examples(args) -> dict[str, np.ndarray]:
    from ddsp_core import records
    from trainer.evaluation.evaluate import iter_records

    data = args.out / 'data_eval'
    layout = records.read_manifest(str(data)).layout
    items = list(iter_records(sorted(glob.glob(str(data / 'eval-*.tfrecord'))), layout))
    return {k: np.stack([e[k] for _, e in items]) for k in records.REQUIRED_FEATURES}


def stage_resynth(args) -> None:
    from ddsp_core import runtime

    runtime.import_tensorflow()
    from trainer.model.autoencoder import Autoencoder
    from trainer.model.config import Config
    from trainer.serving.inference import TrainedModel, restore_weights

    model_dir = args.out / 'our_model'
    examples = _eval_examples(args)
    out = args.out / 'ours'
    out.mkdir(exist_ok=True)
    config = Config.load(model_dir / 'config.json')
    for index in sorted(glob.glob(str(model_dir / 'ckpt-*.index')), key=_step_of):
        step = _step_of(index)
        target = out / f'step_{step}.npz'
        if target.exists():
            continue
        net = Autoencoder(config.model, config.data, compute_dtype=config.train.compute_dtype)
        net(net.dummy_features(1))
        restore_weights(net, index[:-len('.index')], config, str(model_dir))
        model = TrainedModel(net, config, step, model_dir, None, {})
        synth, parts = [], {'harmonic': [], 'filtered_noise': []}
        for i in range(0, len(examples['audio']), 8):
            outputs = model({k: v[i:i + 8] for k, v in examples.items()})
            synth.append(np.asarray(outputs['audio_synth']))
            nodes = net.processor_group(outputs, return_outputs_dict=True)['controls']
            for name, values in parts.items():  # each synthesiser's own output, dry
                values.append(np.sqrt(np.mean(np.asarray(nodes[name]['signal']) ** 2, -1)))
        synth = np.concatenate(synth)
        np.savez(target, audio=examples['audio'], resynthesis=synth,
                 harmonic_rms=np.concatenate(parts['harmonic']),
                 noise_rms=np.concatenate(parts['filtered_noise']))
        print(f'ours step {step}: resynthesised {len(synth)} examples', flush=True)


def stage_judge(args) -> None:
    cmd = [args.ref_python, str(ROOT / 'benchmarks' / 'parity_reference.py'),
           '--ref_src', str(args.ref_src), '--model_dir', str(args.out / 'reference_model'),
           '--eval_pattern', str(args.out / 'data_eval' / 'eval-*'), '--out', str(args.out)]
    env = {**os.environ, 'TF_USE_LEGACY_KERAS': '1', 'PYTHONPATH': str(args.ref_src),
           'TF_CPP_MIN_LOG_LEVEL': '2'}
    if subprocess.run(cmd, env=env).returncode != 0:
        sys.exit('bench_parity: error: judging in the scratch environment failed')


def _our_metrics(npz: Path, args) -> dict:
    from trainer.evaluation import metrics

    data = np.load(npz)
    n = args.metric_examples or len(data['audio'])
    rows = [metrics.resynthesis_metrics(a, r, 16000, 250, crepe_capacity=args.crepe_capacity)
            for a, r in zip(data['audio'][:n], data['resynthesis'][:n], strict=True)]
    return {k: float(v) for k, v in metrics.aggregate(rows).items()
            if isinstance(v, (int, float))}


#: A model whose harmonic synthesiser puts out this far below the originals' level (RMS over
#: the held-out examples) has collapsed to noise (the reference's failure mode, docs/quality.md).
COLLAPSED_DB = -30.0


def synth_balance(npz: Path) -> dict:
    """The level of each synthesiser's own (dry) output, RMS over all held-out examples in
    dB relative to the originals' RMS (``harmonic_db``, ``noise_db``), and ``harmonic_collapsed``
    (``harmonic_db`` below :data:`COLLAPSED_DB`); empty for an npz written without them."""
    data = np.load(npz)
    if 'harmonic_rms' not in data:
        return {}
    original = float(np.sqrt(np.mean(np.asarray(data['audio'], np.float64) ** 2)))

    def level(rms):
        power = float(np.mean(np.asarray(rms, np.float64) ** 2))
        return float(10.0 * np.log10(max(power, 1e-20) / max(original ** 2, 1e-20)))

    harmonic = level(data['harmonic_rms'])
    return {'harmonic_db': harmonic, 'noise_db': level(data['noise_rms']),
            'harmonic_collapsed': harmonic < COLLAPSED_DB}


def stage_report(args) -> None:
    from ddsp_core import runtime

    runtime.import_tensorflow()
    judged = json.loads((args.out / 'judged.json').read_text())
    timing = {name: json.loads((args.out / f'{name}_timing.json').read_text())
              for name in ('reference', 'ours') if (args.out / f'{name}_timing.json').exists()}
    curves = {}
    for name in ('reference', 'ours'):
        rows = []
        for step_s, judged_row in sorted(judged.get(name, {}).items(), key=lambda kv: int(kv[0])):
            step = int(step_s)
            wall = timing.get(name, {}).get('checkpoints', {}).get(step_s)
            rows.append({'step': step, 'wall_s': wall,
                         'reference_spectral_loss': judged_row['spectral_loss'],
                         **synth_balance(args.out / name / f'step_{step}.npz'),
                         **{f'eval_{k}': v for k, v in _our_metrics(
                             args.out / name / f'step_{step}.npz', args).items()}})
        curves[name] = rows
    data = (json.loads((args.out / 'prepared.json').read_text())
            if (args.out / 'prepared.json').exists() else {})
    fingerprint = _eval_fingerprint(args.out)
    if fingerprint and isinstance(data.get('eval'), dict):
        data['eval']['sha256'] = fingerprint
    settings = {'batch_size': args.batch_size, 'learning_rate': args.lr,
                'steps': args.steps, 'every': args.every, 'example_secs': 4,
                'crepe_capacity': args.crepe_capacity,
                'metric_examples': args.metric_examples,
                'our_seed': _our_train_setting(args.out, 'seed'),
                'our_warmup_steps': _our_train_setting(args.out, 'warmup_steps'),
                'reference_seed': timing.get('reference', {}).get('seed')}
    if args.reference_from:
        if curves.get('reference'):
            sys.exit(f'bench_parity: error: --reference_from {args.reference_from}: this run '
                     f'has its own reference curve ({args.out / "judged.json"})')
        curves['reference'], settings['reference_seed'] = borrowed_reference(
            args.reference_from, settings, data, curves.get('ours', []))
    both = sorted(set(r['step'] for r in curves.get('reference', []))
                  & set(r['step'] for r in curves.get('ours', [])))
    ratio = {}
    for step in both:
        ref = next(r for r in curves['reference'] if r['step'] == step)
        ours = next(r for r in curves['ours'] if r['step'] == step)
        ratio[step] = ours['reference_spectral_loss'] / ref['reference_spectral_loss']
    cpu = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    model_name = next((line.split(':', 1)[1].strip() for line in cpu.splitlines()
                       if line.startswith('Model name')), platform.processor())
    report = {
        'benchmark': 'bench_parity', 'date': time.strftime('%Y-%m-%d %H:%M:%S %z'),
        'command': ' '.join([Path(sys.executable).name, *sys.argv]),
        'machine': {'cpu': model_name, 'cpu_count': os.cpu_count(),
                    'platform': platform.platform(), 'devices': runtime.describe_devices()},
        'stages': _stage_commands(args.out),
        'settings': settings,
        'reference_from': str(args.reference_from) if args.reference_from else None,
        'data': data or str(args.out),
        'curves': curves,
        'ours_over_reference_loss': {str(k): v for k, v in ratio.items()},
        'within_3_percent_or_better': {str(k): v <= 1.03 for k, v in ratio.items()},
        'training_wall_s': {n: t['finished'] - t['started'] for n, t in timing.items()},
        'seconds_per_step': {
            'reference': seconds_per_step(reference_log_steps(args.out / 'reference_train.log'))
            if (args.out / 'reference_train.log').exists() else None,
            'ours': seconds_per_step([(step, t) for step, t, _ in
                                      timing.get('ours', {}).get('logged', [])])},
    }
    json_path = common.write_json(args.json, report)
    png = json_path.with_suffix('.png')
    _plot(curves, png)
    html = (listening_report(args, judged, both[-1])
            if both and not args.reference_from else None)
    _log_mlflow(args, report, json_path, png, html)
    print(json.dumps({k: report[k] for k in ('ours_over_reference_loss', 'training_wall_s',
                                             'seconds_per_step')}, indent=1))
    for name, rows in curves.items():
        if rows and rows[-1].get('harmonic_collapsed'):
            print(f"warning: {name}'s harmonic synthesiser has collapsed (step {rows[-1]['step']}: "
                  f"{rows[-1]['harmonic_db']:.0f} dB against the originals; its noise "
                  f"{rows[-1]['noise_db']:.0f} dB): the losses compare a noise model",
                  file=sys.stderr)
    print(f'wrote {json_path} and {png}')


def listening_report(args, judged: dict, step: int) -> Path | None:
    """Both models' resynthesis of ``--listen`` held-out examples (spread over the set) at
    checkpoint ``step``, side by side with the original: ``listen/<example>/{original,
    reference,ours}.wav`` and spectrogram PNGs, and ``listening_report.html`` (ddsp-compare's
    page, everything embedded) in ``--out``. None when ``--listen`` is 0."""
    from trainer.experiments.compare import data_uri, render_listening_page
    from trainer.tracking.artifacts import spectrogram_comparison_png, write_wav

    if args.listen <= 0:
        return None
    data = {name: dict(np.load(args.out / name / f'step_{step}.npz')) for name in MODELS}
    original = data['ours']['audio']
    if not np.allclose(original, data['reference']['audio'], atol=1e-6):
        sys.exit('bench_parity: error: the two models\' held-out examples differ '
                 f"(ours/step_{step}.npz, reference/step_{step}.npz)")
    picks = sorted(set(np.linspace(0, len(original) - 1, args.listen).round().astype(int)))
    folder = args.out / 'listen'
    rows = []
    for i in picks:
        name = f'example_{i:03d}'
        write_wav(folder / name / 'original.wav', original[i], 16000)
        cells = []
        for model in MODELS:
            audio = data[model]['resynthesis'][i]
            wav = write_wav(folder / name / f'{model}.wav', audio, 16000)
            png = spectrogram_comparison_png(folder / name / f'{model}.png', original[i], audio,
                                             16000, labels=('original', f'{model}, step {step}'))
            cells.append({'run': f'{model}, step {step}',
                          'value': judged[model][str(step)]['per_example'][i],
                          'audio': data_uri(str(wav), 'audio/wav'),
                          'png': data_uri(str(png), 'image/png')})
        rows.append({'name': f'held-out example {i} of {len(original)}',
                     'original': data_uri(str(folder / name / 'original.wav'), 'audio/wav'),
                     'cells': cells})
    html = args.out / 'listening_report.html'
    html.write_text(render_listening_page(
        f'Training parity: the reference and ours at step {step}', "reference's SpectralLoss",
        rows, f'The same held-out examples resynthesised by the reference\'s solo_instrument '
              f'model and by ours, both after {step} steps of the same data, batch '
              f'{args.batch_size} and learning rate {args.lr}; each cell shows that '
              "example's loss (lower is better) and the original's and the resynthesis' "
              'spectrograms.'))
    return html


def _plot(curves: dict, png: Path) -> None:
    fig, axes = common.figure((10, 4), 1, 2)
    for name, rows in curves.items():
        steps = [r['step'] for r in rows]
        loss = [r['reference_spectral_loss'] for r in rows]
        axes[0].plot(steps, loss, 'o-', label=name)
        walls = [(r['wall_s'], r['reference_spectral_loss']) for r in rows
                 if r['wall_s'] is not None]
        if walls:
            axes[1].plot(*zip(*walls, strict=True), 'o-', label=name)
    axes[0].set_xlabel('training step')
    axes[1].set_xlabel('wall-clock since the training started (s)')
    for ax in axes:
        ax.set_ylabel("held-out loss (reference's SpectralLoss)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle('solo_instrument: ours vs the reference, same data, batch, lr, steps')
    fig.savefig(png)


def _log_mlflow(args, report: dict, json_path: Path, png: Path, html: Path | None) -> None:
    from trainer.tracking.store import ensure_experiment, make_client, quiet_mlflow_logging

    quiet_mlflow_logging()
    client = make_client(f"sqlite:///{args.out / 'mlflow.db'}")
    experiment = ensure_experiment(client, EXPERIMENT, (args.out / 'mlartifacts').as_uri(),
                                   'benchmarks/bench_parity.py')
    run = client.create_run(experiment, run_name='parity report',
                            tags={'ddsp.kind': 'benchmark'})
    run_id = run.info.run_id
    for name, rows in report['curves'].items():
        for r in rows:
            for key, value in r.items():
                if key not in ('step', 'wall_s') and value is not None:
                    client.log_metric(run_id, f'{name}/{key}', value, step=r['step'])
    for key, value in report['settings'].items():
        client.log_param(run_id, key, value)
    client.log_artifact(run_id, str(json_path))
    client.log_artifact(run_id, str(png))
    if html is not None:  # MLflow's artifact viewer plays the .wav files and the page's audio
        client.log_artifact(run_id, str(html))
        client.log_artifacts(run_id, str(args.out / 'listen'), 'listen')
    client.set_terminated(run_id)
    print(f"MLflow: run {run_id} in {args.out / 'mlflow.db'}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='bench_parity.py', description=__doc__,
                                formatter_class=common.HelpFormatter)
    p.add_argument('stage', choices=STAGES + ('all',), help='what to run (all: every stage)')
    p.add_argument('--out', type=Path, default=Path('runs/parity'), help='working folder')
    p.add_argument('--train', default=None, help='training audio (glob), for prepare')
    p.add_argument('--eval', default=None, help='held-out audio (glob), for prepare')
    p.add_argument('--steps', type=int, default=1000, help='training steps of both models')
    p.add_argument('--every', type=int, default=250, help='checkpoint every this many steps')
    p.add_argument('--batch_size', type=int, default=32, help='batch size of both trainings')
    p.add_argument('--lr', type=float, default=3e-4, help='initial learning rate (both decay '
                                                          '0.98 per 10k steps, clip norm 3)')
    p.add_argument('--seed', type=int, default=None,
                   help="our model's train.seed (None: the solo_instrument preset's; the "
                        "reference's: --ref_seed)")
    p.add_argument('--warmup_steps', type=int, default=None,
                   help="our model's train.warmup_steps (None: the solo_instrument preset's, 100; "
                        "the reference's schedule has none)")
    p.add_argument('--ref_seed', type=int, default=None,
                   help="train-reference: seed the reference's process (Keras' global seed, set "
                        'before its code runs; None: unseeded, each run differs)')
    p.add_argument('--reference_from', type=Path, default=None,
                   help="report: take the reference's curve from this earlier report (same "
                        'settings, same held-out examples: checked) instead of training it '
                        'again; for several seeds of ours against one reference run')
    common.add_crepe_capacity(p, 'CREPE of the preparation and of the f0 metrics')
    p.add_argument('--metric_examples', type=int, default=16,
                   help="ddsp-eval's metrics on the first this many held-out examples (CREPE "
                        'tracks the f0 of both the original and the resynthesis); 0: all')
    p.add_argument('--listen', type=int, default=4,
                   help='held-out examples in the listening report (both models at the last '
                        'checkpoint, side by side with the original); 0: none')
    p.add_argument('--ref_python', default='/tmp/refparity/bin/python',
                   help="the scratch environment's python")
    p.add_argument('--ref_src', type=Path, default=Path('/tmp/refddsp'),
                   help="the reference's source tree (a magenta/ddsp checkout)")
    p.add_argument('--json', default=str(ROOT / 'benchmarks' / 'results' / 'parity.json'),
                   help='where the JSON report goes')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage in ('prepare', 'all') and not (args.train and args.eval):
        print('bench_parity.py: error: prepare needs --train and --eval', file=sys.stderr)
        return 2
    if args.steps < 1 or args.every < 1 or args.batch_size < 1:
        print('bench_parity.py: error: --steps, --every, --batch_size must be >= 1',
              file=sys.stderr)
        return 2
    if args.stage in ('train-reference', 'judge', 'all') and not (
            Path(args.ref_python).exists() and (args.ref_src / 'ddsp').is_dir()):
        print(f'bench_parity.py: error: --ref_python {args.ref_python} or --ref_src '
              f'{args.ref_src} (with ddsp/ in it) is missing; see the set-up in --help',
              file=sys.stderr)
        return 2
    stages = STAGES if args.stage == 'all' else (args.stage,)
    for stage in stages:
        print(f'[{stage}]', flush=True)
        _record_stage(args.out, stage)
        globals()[f"stage_{stage.replace('-', '_')}"](args)
    return 0


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.exit(main())
