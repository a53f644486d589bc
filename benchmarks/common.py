"""What the benchmarks share: their results as JSON (:func:`emit`, :func:`write_json`), the
machine they ran on (:func:`machine`), the figure of their plots (:func:`figure`), the CREPE
flag of those that track pitch, and the orchestration of the ones that train on
``render_quality_data.py``'s data (:func:`quality_data_parser`, :func:`read_truth`,
:func:`train_on_clips`, :func:`report_header`).

A benchmark puts the repository root on ``sys.path`` and then imports this module as
``benchmarks.common``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from ddsp_core.f0 import CREPE_CAPACITIES

ROOT = Path(__file__).resolve().parents[1]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help with the docstring as written and every flag's default."""


def machine() -> dict:
    """The cores and the architecture a benchmark ran on."""
    return {'cpu_count': os.cpu_count(), 'machine': platform.machine()}


def emit(result: dict, out: str | os.PathLike | None) -> int:
    """Print ``result`` as JSON, also to the file ``out`` when given; returns 0."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + '\n')
    return 0


def finite(value):
    """``value`` with every NaN or infinite float (nested in dicts, lists, tuples) as None, so
    that it is strict JSON (Python's json writes NaN, which other readers refuse)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json(path: str | os.PathLike, report: dict) -> Path:
    """``report`` as strict JSON at ``path`` (its folder created; NaN and infinities as null);
    returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(report), indent=2, allow_nan=False) + '\n')
    return path


def figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **subplots):
    """``(figure, axes)`` for a benchmark's plot: a bare matplotlib ``Figure`` (rendered by the
    Agg canvas on ``savefig``, no pyplot state to select or close), laid out tight at 100 dpi;
    ``subplots`` go to ``Figure.subplots`` (e.g. ``sharex=True``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100, layout='tight')
    return fig, fig.subplots(nrows, ncols, **subplots)


def add_crepe_capacity(parser: argparse.ArgumentParser, help: str) -> None:
    """``--crepe_capacity``, one of CREPE's model sizes (default tiny)."""
    parser.add_argument('--crepe_capacity', default='tiny', choices=CREPE_CAPACITIES, help=help)


# ---- benchmarks that train on render_quality_data.py's renders ---------------------------------
def quality_data_parser(prog: str, description: str, out_help: str,
                        json_name: str) -> argparse.ArgumentParser:
    """The flags of a benchmark that trains on a few clips of ``render_quality_data.py``'s
    data: --data, --out, --preset, --set, --steps, --train_clips, --crepe_capacity, --json."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument('--data', required=True, help='render_quality_data.py --out')
    p.add_argument('--out', required=True, help=out_help)
    p.add_argument('--preset', default='tiny',
                   help='ddsp-train preset of the model trained')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='config overrides, as ddsp-train --set (repeatable)')
    p.add_argument('--steps', type=int, default=300,
                   help='training steps')
    p.add_argument('--train_clips', type=int, default=2,
                   help='how many of the training clips, in name order')
    add_crepe_capacity(p, "CREPE model of the preparation and the analysis ('full' for real "
                          'measurements)')
    p.add_argument('--json', default=str(ROOT / 'benchmarks' / 'results' / json_name),
                   help='where the JSON report goes')
    return p


def read_truth(prog: str, data: Path) -> dict | None:
    """``data``'s truth.json, or None after one error line naming --data."""
    try:
        return json.loads((data / 'truth.json').read_text())
    except (OSError, ValueError) as e:
        print(f'{prog}: error: --data {data}: no readable truth.json ({e})', file=sys.stderr)
        return None


def train_on_clips(data: Path, names: list[str], out: Path, args, benchmark: str) -> dict:
    """Copy the clips ``names`` of ``data`` to ``out``/train_clips, prepare them (no eval
    split) into ``out``/data and train ``args.preset`` (with ``args.set``) for ``args.steps``
    into ``out``/model, tracked in ``out``/mlflow.db (experiment ``ddsp-bench-BENCHMARK``,
    run ``BENCHMARK PRESET``).

    Returns ``{'result': train()'s result, 'tracking_uri', 'prepare_s', 'train_s'}``."""
    from pipelines.prepare_dataset import prepare_dataset
    from trainer.model.config import load_preset
    from trainer.training.train import train

    t0 = time.perf_counter()
    clips = out / 'train_clips'
    if clips.exists():
        shutil.rmtree(clips)
    clips.mkdir(parents=True)
    for name in names:
        shutil.copy(data / name, clips / Path(name).name)
    prepare_dataset([str(clips / '*.wav')], str(out / 'data'), crepe_capacity=args.crepe_capacity,
                    eval_fraction=0.0, overwrite=True)
    prepare_s = time.perf_counter() - t0
    config = load_preset(args.preset).with_overrides(args.set)
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    t0 = time.perf_counter()
    result = train(config, str(out / 'data'), str(out / 'model'), steps=args.steps,
                   tracking_uri=tracking_uri, experiment=f'ddsp-bench-{benchmark}',
                   run_name=f'{benchmark} {args.preset}', progress=False)
    return {'result': result, 'tracking_uri': tracking_uri, 'prepare_s': prepare_s,
            'train_s': time.perf_counter() - t0}


def report_header(benchmark: str, args, steps: int) -> dict:
    """The first fields of a quality benchmark's report: what ran, when, where, and the model
    (preset, overrides, steps trained)."""
    from ddsp_core import runtime

    return {'benchmark': benchmark, 'date': time.strftime('%Y-%m-%d %H:%M:%S %z'),
            'command': ' '.join([Path(sys.executable).name, *sys.argv]),
            'machine': {'cpu_count': os.cpu_count(), 'devices': runtime.describe_devices()},
            'preset': args.preset, 'overrides': args.set, 'steps': steps}
