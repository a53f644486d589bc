"""What the eval split's guard costs in training audio (docs/prepare.md, "The eval split").

Splits files of several lengths by segment at ddsp-prepare's defaults (or the options given) with
pipelines.splitting, for 200 split keys per length (the blocks' place varies with the key), and
prints the mean windows and audio per split as a Markdown table. Pure arithmetic: no audio, no
CREPE; a second or two.

    python benchmarks/split_guard_cost.py [--eval_fraction 0.1 --example_secs 4 --hop_secs 1]
"""

from __future__ import annotations

import argparse
import statistics

from pipelines import splitting
from pipelines.options import PrepareOptions

LENGTHS_SECS = (19, 20, 25, 30, 45, 60, 120, 300, 600)


def row(seconds: float, opts: PrepareOptions, n_keys: int = 200) -> dict:
    """Mean windows and audio per split of files of ``seconds`` over ``n_keys`` split keys."""
    rows = []
    for i in range(n_keys):
        n = int(seconds * opts.sample_rate)
        plan = splitting.plan_file(f'take{i}.wav', n, opts, splitting.SEGMENT)
        counts, info = plan.counts(), splitting.describe(plan, n, opts)
        rows.append({'windows': plan.n_windows, **counts,
                     'share': counts['eval'] / max(1, counts['eval'] + counts['train']),
                     'train_audio': seconds - info['eval_seconds'] - info['guard_seconds'],
                     'guard_audio': info['guard_seconds']})
    return {k: statistics.mean(r[k] for r in rows) for k in rows[0]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = PrepareOptions()
    p.add_argument('--eval_fraction', type=float, default=d.eval_fraction)
    p.add_argument('--example_secs', type=float, default=d.example_secs)
    p.add_argument('--hop_secs', type=float, default=d.hop_secs)
    args = p.parse_args(argv)
    opts = PrepareOptions(eval_fraction=args.eval_fraction, example_secs=args.example_secs,
                          hop_secs=args.hop_secs, chunk_secs=args.hop_secs).validate()
    print('| file | windows | eval windows | train windows | guard windows | eval share | '
          'train audio | guard audio |')
    print('|---|---|---|---|---|---|---|---|')
    for secs in LENGTHS_SECS:
        r = row(secs, opts)
        print(f"| {secs} s | {r['windows']:.0f} | {r['eval']:.1f} | {r['train']:.1f} | "
              f"{r['guard']:.1f} | {100 * r['share']:.1f} % | {r['train_audio']:.1f} s "
              f"({100 * r['train_audio'] / secs:.0f} %) | {r['guard_audio']:.1f} s "
              f"({100 * r['guard_audio'] / secs:.0f} %) |")


if __name__ == '__main__':
    main()
