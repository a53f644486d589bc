"""Docs that run as written: every shell command of README.md and docs/*.md, in the order a
newcomer reads them, against a real local ``mlflow server`` and small generated recordings.

The code blocks are collected with ``mktestdocs`` (``bash`` blocks; ``yaml`` blocks whose first
line names a file, like ``# sweeps/tiny-lr.yaml``, are written to that file first). Each command
runs in one working directory, so later commands find what earlier ones made (``data/violin``,
``runs/violin``...). What changes between the docs and this test is all in the tables below:

- :data:`SIZES`: the sizes a newcomer would use become tiny ones (the tiny preset, 4 steps,
  CREPE tiny, 2 sweep trials), so the whole walk takes minutes, not days;
- :data:`PLACEHOLDERS`: ``RUN_ID``, ``PARENT_RUN_ID``, ``ID1,ID2,ID3`` and ``...`` become what
  the earlier commands produced (looked up in the MLflow server) or a concrete value;
- :data:`INPUTS`: the recordings the docs assume a user has are generated;
- a command the README repeats from a guide (same text after substitution) runs once;
- :data:`PARSE_ONLY`: commands that need a cloud, a cluster or change the installed environment
  are checked by parsing their arguments with the command's own parser (``ddsp-*``: its
  argparse parser and Beam's pipeline options; ``pip``: ``--help`` after the arguments;
  ``make``: ``make -n``), never skipped.

A command removed or renamed in the code, an option that no longer exists or a placeholder
without a rule fails the test, naming the doc file and the command. Every link into MLflow's UI
the commands print must open its model-training view (``workflowType=machine_learning``).
Takes about 7 minutes on 2 shared cores (see the report of issue 20).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.trainer.mlflow_server import MlflowServer

ROOT = Path(__file__).resolve().parents[1]
#: The reading order: the README, then the guides in the order of the work (prepare, train,
#: evaluate, transfer, sweep); any other docs/*.md afterwards, alphabetically.
READING_ORDER = ['README.md', 'docs/prepare.md', 'docs/training.md', 'docs/evaluation.md',
                 'docs/transfer.md', 'docs/sweeps.md']

#: (pattern, replacement, why), applied in order to every command and every yaml file.
SIZES = [
    (r'--preset solo_instrument\b', '--preset tiny', 'the tiny model'),
    (r'--steps \d+', '--steps 4', '4 training steps (per trial for sweeps)'),
    (r'^((?:ddsp-prepare|python -m pipelines\.prepare_dataset) --input .*)$',
     r'\1 --crepe_capacity tiny', 'CREPE tiny for f0'),
    (r'--trials \d+', '--trials 3', '3 sweep trials (one more than the file asks for)'),
    (r'--parallel \d+', '--parallel 1', 'one trial at a time on a small machine'),
    (r'(?m)^steps: \d+', 'steps: 4', 'sweep file: 4 steps per trial'),
    (r'(?m)^trials: \d+', 'trials: 2', 'sweep file: 2 trials'),
    (r'(?m)^parallel: \d+', 'parallel: 1', 'sweep file: one trial at a time'),
    (r'(?m)^report_every: \d+', 'report_every: 2', 'sweep file: report every 2 steps'),
]

#: Placeholders: (pattern, how to resolve it). A callable gets the test's context.
PLACEHOLDERS = [
    (r'\bPARENT_RUN_ID\b', lambda ctx: ctx.latest_run("tags.`ddsp.kind` = 'sweep'")),
    (r'\bID1,ID2,ID3\b', lambda ctx: ','.join(ctx.training_runs('ddsp')[:3])),
    (r'\bRUN_ID\b', lambda ctx: ctx.run_of('runs/violin')),
    # "ddsp-prepare ... --runner DataflowRunner": the arguments of the command before it
    (r'^ddsp-prepare \.\.\. ',
     lambda ctx: 'ddsp-prepare --input gs://bucket/violin/*.wav '
                 '--output_dir gs://bucket/datasets/violin '),
    (r'--data \.\.\. ', lambda ctx: '--data data/violin '),
    # "--runner DataflowRunner ... --setup_file": the runner's options of the command before it
    (r'--runner DataflowRunner \.\.\. ',
     lambda ctx: '--runner DataflowRunner --project my-project --region us-central1 '
                 '--temp_location gs://bucket/tmp '),
]

#: The recordings the docs assume: (path, seconds, sample rate). ``recordings/`` gets one file
#: that ddsp-prepare's default --eval_fraction puts in the eval split and one in the train split
#: (:func:`recordings`), as a user's many recordings would.
INPUTS = [('voice.wav', 2.0, 22050), ('voice.flac', 2.0, 44100), ('voice.mp3', 2.0, 44100),
          ('song.flac', 2.0, 44100), ('a/one.flac', 5.0, 16000), ('b/two.mp3', 5.0, 22050)]

#: Commands checked by parsing their arguments, and why.
PARSE_ONLY = [
    (r'DataflowRunner', 'runs on Google Cloud Dataflow'),
    (r'^TF_CONFIG=', 'needs a cluster of machines'),
    (r'^(?:\w+=\S+ )*(?:pip|python -m pip) ', 'installs packages (the environment is the lock)'),
    (r'^(?:\w+=\S+ )*make ', 'make demo/test/venv: tests/test_demo.py and make test run them'),
    (r'\b(?:db|mlflow)\.internal\b', "a team's database and tracking servers: "
     'tests/pipelines/test_sweep_postgres.py runs that set-up on loopback'),
]


def doc_files() -> list[Path]:
    others = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'docs').glob('*.md'))
    names = [n for n in READING_ORDER if (ROOT / n).exists()]
    return [ROOT / n for n in names + [o for o in others if o not in names]]


def _strip_comment(line: str) -> str:
    """The line without a trailing shell comment (a # after whitespace, outside quotes)."""
    for match in re.finditer(r'(?:^|\s)#', line):
        head = line[:match.start()]
        try:
            shlex.split(head)
        except ValueError:  # inside quotes
            continue
        return head
    return line


def shell_commands(path: Path) -> list[str]:
    """The commands of a markdown file's bash blocks, continuation lines joined."""
    import mktestdocs

    commands = []
    for block in mktestdocs.grab_code_blocks(path.read_text(), lang='bash'):
        for line in re.sub(r'\\\n\s*', ' ', block).splitlines():
            line = _strip_comment(line).strip()
            if line:
                commands.append(line)
    return commands


def yaml_files(path: Path) -> dict[str, str]:
    """``{file: text}`` of the yaml blocks whose first line is ``# <file>``."""
    import mktestdocs

    out = {}
    for block in mktestdocs.grab_code_blocks(path.read_text(), lang='yaml'):
        first = block.splitlines()[0].strip()
        if re.fullmatch(r'#\s*\S+\.ya?ml', first):
            out[first.lstrip('#').strip()] = block
    return out


def substitute(text: str, ctx) -> str:
    for pattern, replacement, _ in SIZES:
        text = re.sub(pattern, replacement, text)
    for pattern, resolve in PLACEHOLDERS:
        if re.search(pattern, text):
            text = re.sub(pattern, resolve(ctx).replace('\\', r'\\'), text)
    return text


class Context:
    """What the commands share: the working directory, the server, the environment."""

    def __init__(self, workdir: Path, tracking_uri: str):
        self.workdir, self.tracking_uri = workdir, tracking_uri
        self.env = dict(os.environ)
        self.env.update({
            'PATH': os.pathsep.join([str(Path(sys.executable).parent), self.env['PATH']]),
            'PYTHONPATH': os.pathsep.join([str(ROOT), self.env.get('PYTHONPATH', '')]),
            'MLFLOW_TRACKING_URI': tracking_uri, 'MLFLOW_DISABLE_TELEMETRY': 'true',
            'TF_CPP_MIN_LOG_LEVEL': '2'})

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)

    def _search(self, filter_string: str, experiment: str | None = None) -> list:
        client = self.client()
        ids = ([client.get_experiment_by_name(experiment).experiment_id] if experiment else
               [e.experiment_id for e in client.search_experiments()])
        return client.search_runs(ids, filter_string, order_by=['attributes.start_time DESC'])

    def latest_run(self, filter_string: str) -> str:
        runs = self._search(filter_string)
        assert runs, f'no run matches {filter_string} (an earlier command should have made it)'
        return runs[0].info.run_id

    def training_runs(self, experiment: str) -> list[str]:
        from trainer.tracking.store import is_training_run

        return [r.info.run_id for r in self._search('', experiment) if is_training_run(r)]

    def run_of(self, model_dir: str) -> str:
        return json.loads((self.workdir / model_dir / 'mlflow_run.json').read_text())['run_id']


def _parse_ddsp(tokens: list[str]) -> None:
    """Parse a ddsp-* command's arguments as the command would: its argparse parser, and what
    the parser leaves as Beam pipeline options (for the Beam commands)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    (entry,) = [e for e in entry_points(group='console_scripts') if e.name == tokens[0]]
    module = importlib.import_module(entry.module)
    build = getattr(module, 'build_arg_parser', None) or module.build_parser
    own, beam_args = tokens[1:], []
    if entry.module.startswith('pipelines.'):  # the Beam commands' own opening
        from pipelines.runner import split_beam_args

        own, beam_args = split_beam_args(own, build())
    try:
        _, rest = build().parse_known_args(own)
    except SystemExit as e:
        raise AssertionError(f'{tokens[0]} rejects its arguments (exit {e.code})') from None
    if rest:
        raise AssertionError(f'{tokens[0]}: unknown arguments {rest}')
    if beam_args:  # (split_beam_args kept only Beam's options): their values parse
        try:
            PipelineOptions(beam_args).get_all_options()
        except SystemExit as e:
            raise AssertionError(f'{tokens[0]}: bad pipeline option values {beam_args} '
                                 f'(exit {e.code})') from None


def check_by_parsing(command: str, ctx: Context) -> None:
    tokens = shlex.split(command)
    env = dict(ctx.env)
    while tokens and re.fullmatch(r'\w+=.*', tokens[0]):
        key, value = tokens.pop(0).split('=', 1)
        env[key] = value
    if tokens[0].startswith('ddsp-'):
        _parse_ddsp(tokens)
        return
    if tokens[0] == 'make':
        argv, cwd = ['make', '-n', *tokens[1:]], ROOT
    elif tokens[0] == 'createdb':  # PostgreSQL's tools read --help only as the first argument
        done = subprocess.run(['createdb', '--help'], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, f'createdb --help: exit {done.returncode}'
        for option in (t for t in tokens[1:] if t.startswith('-')):
            assert re.search(rf'(?m)^\s+{re.escape(option)}\b', done.stdout), \
                f'createdb has no option {option}'
        return
    else:  # pip: its own parser reads every option before --help
        argv, cwd = [*tokens, '--help'], ctx.workdir
        if argv[0] == 'python':
            argv[0] = sys.executable
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f'exit {done.returncode}: {done.stderr[-2000:]}'


def recordings() -> list[tuple[str, float, int]]:
    """Two recordings: the first names that ddsp-prepare's default eval fraction puts in the
    eval and in the train split (splits go by a hash of the file name)."""
    from pipelines.inputs import assign_split
    from pipelines.options import PrepareOptions

    names = [f'take_{i:02d}.wav' for i in range(200)]
    fraction = PrepareOptions().eval_fraction
    chosen = [next(n for n in names if assign_split(n, fraction) == split)
              for split in ('eval', 'train')]
    return [(f'recordings/{n}', secs, 16000) for n, secs in zip(chosen, (5.0, 6.0), strict=True)]


def _write_inputs(workdir: Path) -> None:
    import numpy as np
    import soundfile as sf

    from tools.synth_audio import render_melody

    for i, (name, secs, rate) in enumerate(recordings() + INPUTS):
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = render_melody(secs, rate, seed=i)
        sf.write(path, np.stack([audio, 0.8 * audio], axis=1) if i % 2 else audio, rate)


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.trains
@pytest.mark.converts
def test_every_command_of_the_docs_runs_as_written(tmp_path):
    workdir = tmp_path / 'work'
    workdir.mkdir()
    _write_inputs(workdir)
    failures, ran, parsed, linked = [], 0, 0, set()
    with MlflowServer(tmp_path / 'server') as server:
        ctx = Context(workdir, server.uri)
        docs = doc_files()
        for doc in docs:
            for name, text in yaml_files(doc).items():
                target = workdir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(substitute(text, ctx))
        seen, timings = set(), []
        for doc in docs:
            where = doc.relative_to(ROOT)
            for command in shell_commands(doc):
                started = time.monotonic()
                try:
                    actual = substitute(command, ctx)
                    if actual in seen:  # the README repeats the guides' commands: done already
                        continue
                    seen.add(actual)
                    if any(re.search(p, actual) for p, _ in PARSE_ONLY):
                        check_by_parsing(actual, ctx)
                        parsed += 1
                        continue
                    done = subprocess.run(['bash', '-c', actual], cwd=workdir, env=ctx.env,
                                          capture_output=True, text=True, timeout=600)
                    ran += 1
                    assert done.returncode == 0, \
                        f'exit {done.returncode}: {done.stderr[-3000:]}'
                    printed = done.stdout + done.stderr
                    assert 'View run' not in printed, 'MLflow printed its GenAI-view link'
                    for link in re.findall(r'https?://\S+/#/\S*', printed):
                        assert 'workflowType=machine_learning' in link, link
                        linked.add(actual.split()[0])
                except (AssertionError, subprocess.TimeoutExpired, ValueError) as error:
                    failures.append(f'{where}: {command}\n  {error}')
                timings.append((time.monotonic() - started, f'{where}: {command}'))
    report = ROOT / 'test-artifacts' / 'docs_commands.txt'
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(''.join(f'{t:7.1f} s  {c}\n' for t, c in timings))
    assert not failures, f'{len(failures)} doc command(s) fail:\n' + '\n'.join(failures)
    assert ran >= 30 and parsed >= 6, (ran, parsed)  # the blocks were found
    # every command that logs to MLflow printed a link into the UI's model-training view
    assert {'ddsp-train', 'ddsp-eval', 'ddsp-export', 'ddsp-transfer', 'ddsp-sweep',
            'ddsp-compare'} <= linked, linked


def test_the_tables_cover_what_the_docs_use():
    """Without a server: every doc command parses as shell, and every ALL-CAPS placeholder
    (RUN_ID...) has a rule, so the slow test above cannot pass by not running something."""
    commands = [c for doc in doc_files() for c in shell_commands(doc)]
    assert len(commands) >= 40
    for command in commands:
        shlex.split(command)
        left = command
        for pattern, _ in PLACEHOLDERS:
            left = re.sub(pattern, '', left)
        assert not re.findall(r'\b[A-Z][A-Z0-9_]*ID\d*\b', left), command
    assert 'RUN_ID' in ' '.join(commands)  # (the check above sees the placeholders)
