"""The first steps of training: does the harmonic synthesiser survive them?

For every seed in --seeds and every warm-up in --warmup_steps, a model of --preset (with --set
overrides) is trained on --data for --steps; before the first step and at the steps in --at it
runs on the first --examples held-out examples of --eval (noise seeded, no update) and this
records

- ``harmonic_db``: the level of the harmonic synthesiser's own, dry output against the
  originals (RMS over the examples, dB);
- ``raw_amplitude``: the median of the decoder's harmonic amplitude before ``exp_sigmoid``
  (below about -4 the amplitude is in the sigmoid's floor, where its gradient vanishes);
- ``loss``: the mean training loss of the last 10 steps.

A run whose harmonic part is more than 30 dB under the originals at its last probe is
``collapsed`` (the threshold of ``bench_parity.py``). Without a warm-up, Adam's first updates at
3e-4 throw the amplitudes into that floor for some seeds (docs/quality.md); ``train.warmup_steps``
ramps the learning rate up instead. Output: --json (every probe of every run and a summary per
run) and a plot beside it (harmonic level against step, one line per run).

Run (the parity harness' data; each run takes about a second per step on 2 cores)::

    python benchmarks/bench_start.py --data /tmp/parity_loud/data_train \\
        --eval /tmp/parity_loud/data_eval --preset solo_instrument \\
        --set train.batch_size=8 --seeds 1 2 3 5 --warmup_steps 0 100 --steps 125
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import common  # noqa: E402 - after the path insert

#: A harmonic part this far under the originals is silent (bench_parity.COLLAPSED_DB).
COLLAPSED_DB = -30.0
DEFAULT_AT = (1, 2, 5, 10, 15, 20, 30, 40, 60, 80, 100, 125, 150, 200, 250, 300, 400, 500)


def harmonic_level(model, features: dict, noise_seed=(0, 0)) -> dict:
    """The harmonic synthesiser's own output level and the decoder's raw amplitude for a batch
    of ``features`` (a dict of tensors: audio and frame features), without training.

    Returns:
        {'harmonic_db': dB of the harmonic output's RMS against the originals' RMS,
         'raw_amplitude': median of the decoder's ``amps`` before exp_sigmoid}
    """
    import tensorflow as tf

    from trainer.model.autoencoder import NOISE_SEED_KEY

    features = dict(features)
    features[NOISE_SEED_KEY] = tf.constant(noise_seed, tf.int32)
    outputs = model(features, training=False)
    return level_of(model, outputs)


def level_of(model, outputs: dict) -> dict:
    """:func:`harmonic_level` of the autoencoder's ``outputs`` (its synthesisers run again on
    them, so the decoder's ``amps`` can be set by hand)."""
    nodes = model.processor_group(outputs, return_outputs_dict=True)['controls']
    harmonic = np.asarray(nodes['harmonic']['signal'], np.float64)
    original = np.asarray(outputs['audio'], np.float64)
    power = np.mean(harmonic ** 2) / max(np.mean(original ** 2), 1e-20)
    return {'harmonic_db': float(10 * np.log10(max(power, 1e-20))),
            'raw_amplitude': float(np.median(np.asarray(outputs['amps'])))}


def probe_run(config, source, features: dict, steps: int, at, model_dir: Path,
              progress=None) -> list[dict]:
    """Train ``config`` on ``source`` for ``steps`` steps, probing the harmonic level (with
    ``features``) before the first step and after each step in ``at``. Returns the probes."""
    from trainer.training.loop import Trainer

    trainer = Trainer(config, source, model_dir)
    trainer.build()
    trainer.open_data()
    rows = [{'step': 0, **harmonic_level(trainer.model, features), 'loss': None}]
    losses = []
    started = time.time()
    for step in range(1, steps + 1):
        losses.append(trainer.train_step()['total_loss'])
        if step in at or step == steps:
            rows.append({'step': step, **harmonic_level(trainer.model, features),
                         'loss': float(np.mean(losses[-10:])),
                         'wall_s': time.time() - started})
            if progress:
                progress(rows[-1])
    return rows


def summarise(rows: list[dict]) -> dict:
    """A run's probes in a few numbers: the lowest level after the first step, the last one,
    and whether the harmonic part ended collapsed."""
    after = [r for r in rows if r['step'] > 0]
    lowest = min(after, key=lambda r: r['harmonic_db'])
    return {'start_db': rows[0]['harmonic_db'], 'lowest_db': lowest['harmonic_db'],
            'lowest_at_step': lowest['step'], 'lowest_raw_amplitude': lowest['raw_amplitude'],
            'final_db': after[-1]['harmonic_db'], 'final_step': after[-1]['step'],
            'collapsed': after[-1]['harmonic_db'] < COLLAPSED_DB}


def _plot(runs: list[dict], png: Path) -> None:
    fig, ax = common.figure((8, 4.5))
    warmups = sorted({r['warmup_steps'] for r in runs})
    styles = {w: s for w, s in zip(warmups, ('--', '-', ':', '-.') * 4, strict=False)}
    for run in runs:
        steps = [max(r['step'], 0.5) for r in run['probes']]  # step 0 drawn at 0.5 on a log axis
        ax.plot(steps, [r['harmonic_db'] for r in run['probes']], styles[run['warmup_steps']],
                marker='o', ms=3, label=f"seed {run['seed']}, warm-up {run['warmup_steps']}")
    ax.axhline(COLLAPSED_DB, color='grey', lw=0.8)
    ax.text(0.55, COLLAPSED_DB + 2, 'collapsed below', color='grey', fontsize=8)
    ax.set_xscale('log')
    ax.set_xlabel('training step (0 at 0.5)')
    ax.set_ylabel('harmonic output against the originals (dB)')
    ax.set_title('The first steps: the harmonic synthesiser\'s level, per seed and warm-up')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(png)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='bench_start.py', description=__doc__,
                                formatter_class=common.HelpFormatter)
    p.add_argument('--data', required=True, help='training data (a prepared dataset, as ddsp-train '
                                                 '--data)')
    p.add_argument('--eval', required=True,
                   help='held-out data probed: a prepared dataset (its eval split) or TFRecord '
                        'files')
    p.add_argument('--preset', default='solo_instrument', help='model preset')
    p.add_argument('--set', dest='overrides', action='append', default=[],
                   metavar='KEY=VALUE', help='config override (repeatable)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='train.seed values')
    p.add_argument('--warmup_steps', type=int, nargs='+', default=[0, 100],
                   help='train.warmup_steps values (each with every seed)')
    p.add_argument('--steps', type=int, default=125, help='training steps of each run')
    p.add_argument('--at', type=int, nargs='+', default=list(DEFAULT_AT),
                   help='probe after these steps (and after the last)')
    p.add_argument('--examples', type=int, default=8, help='held-out examples probed')
    p.add_argument('--out', type=Path, default=Path('runs/start'),
                   help='model directories (one per run)')
    p.add_argument('--json', type=Path, default=ROOT / 'benchmarks' / 'results' / 'start.json',
                   help='the report (the plot goes beside it, .png)')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.examples < 1 or any(w < 0 for w in args.warmup_steps):
        print('bench_start.py: error: --steps and --examples must be >= 1, --warmup_steps >= 0',
              file=sys.stderr)
        return 2
    from ddsp_core import runtime

    runtime.import_tensorflow()
    import tensorflow as tf

    from ddsp_core import records
    from trainer.evaluation.evaluate import iter_records
    from trainer.model.config import ConfigError, load_preset, resolve_data
    from trainer.training import data as data_lib

    try:
        source = data_lib.open_source(args.data)
        held_out = data_lib.open_source(args.eval, split='eval')
        base = load_preset(args.preset).with_overrides(args.overrides)
        base = resolve_data(base, source.layout, source.where)
    except (ConfigError, data_lib.DataError) as e:
        print(f'bench_start.py: error: {e}', file=sys.stderr)
        return 2
    if held_out.layout != source.layout:
        print(f'bench_start.py: error: --eval {args.eval} ({held_out.layout.describe()}) and '
              f'--data {args.data} ({source.layout.describe()}) differ in layout',
              file=sys.stderr)
        return 2
    examples = []
    for _, example in iter_records(held_out.files, held_out.layout):
        examples.append(example)
        if len(examples) == args.examples:
            break
    if len(examples) < args.examples:
        print(f'bench_start.py: error: --eval {args.eval} holds {len(examples)} examples, '
              f'--examples asks for {args.examples}', file=sys.stderr)
        return 2
    features = {k: tf.constant(np.stack([e[k] for e in examples]))
                for k in records.REQUIRED_FEATURES}
    runs = []
    for warmup in args.warmup_steps:
        for seed in args.seeds:
            config = base.with_overrides([f'train.seed={seed}', f'train.warmup_steps={warmup}',
                                          'train.checkpoint_every=0'])
            name = f'seed{seed}_warmup{warmup}'
            print(f'[{name}]', flush=True)
            probes = probe_run(config, source, features, args.steps, set(args.at),
                               args.out / name, progress=lambda r, n=name: print(
                                   f"  {n} step {r['step']}: harmonic {r['harmonic_db']:.1f} "
                                   f"dB, raw amplitude {r['raw_amplitude']:.2f}, loss "
                                   f"{r['loss']:.2f}", flush=True))
            runs.append({'seed': seed, 'warmup_steps': warmup, 'summary': summarise(probes),
                         'probes': probes})
    report = {'benchmark': 'bench_start', 'date': time.strftime('%Y-%m-%d %H:%M:%S %z'),
              'command': ' '.join([Path(sys.executable).name, *sys.argv]),
              'machine': {**common.machine(), 'devices': runtime.describe_devices()},
              'settings': {'preset': args.preset, 'overrides': args.overrides,
                           'steps': args.steps, 'examples': args.examples,
                           'data': args.data, 'eval': args.eval,
                           'batch_size': base.train.batch_size,
                           'learning_rate': base.train.learning_rate},
              'runs': runs}
    path = common.write_json(args.json, report)
    _plot(runs, path.with_suffix('.png'))
    for run in runs:
        s = run['summary']
        print(f"seed {run['seed']}, warm-up {run['warmup_steps']}: lowest {s['lowest_db']:.0f} "
              f"dB at step {s['lowest_at_step']}, last {s['final_db']:.0f} dB"
              f"{' (collapsed)' if s['collapsed'] else ''}")
    print(f'wrote {path} and {path.with_suffix(".png")}')
    return 0


if __name__ == '__main__':
    import os

    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.exit(main())
