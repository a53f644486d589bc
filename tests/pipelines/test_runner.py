"""pipelines.runner: Beam options in any spelling for every command that takes them, the one
local-runner check and the local default."""

import pytest
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
)

from pipelines import evaluate, runner, sweep
from pipelines import prepare_dataset as prep

# The command's own flags, for each command that takes Beam options.
OWN = {
    'ddsp-prepare': (prep.build_arg_parser, ['--input', 'a.wav', '--output_dir', 'out',
                                             '--num_shards', '2']),
    'ddsp-eval': (evaluate.build_arg_parser, ['--model', 'm', '--data', 'd', '--batch_size',
                                              '3']),
    'ddsp-sweep': (sweep.build_arg_parser, ['--name', 'x', '--data', 'd', '--steps', '3',
                                            '--experiment', 'mine']),
}
# The same Beam options, spelled with and without '=' (a flag without a value, an appended one).
BEAM_SPACED = ['--runner', 'PortableRunner', '--job_endpoint', 'localhost:8099',
               '--environment_type', 'LOOPBACK', '--save_main_session',
               '--experiments', 'a', '--direct_num_workers', '2']
BEAM_EQUALS = ['--runner=PortableRunner', '--job_endpoint=localhost:8099',
               '--environment_type=LOOPBACK', '--save_main_session', '--experiments=a',
               '--direct_num_workers=2']


def _check_beam(beam_args):
    options = PipelineOptions(beam_args)
    assert options.view_as(StandardOptions).runner == 'PortableRunner'
    assert options.view_as(PortableOptions).job_endpoint == 'localhost:8099'
    assert options.view_as(PortableOptions).environment_type == 'LOOPBACK'
    assert options.view_as(SetupOptions).save_main_session is True
    assert options.view_as(DebugOptions).experiments == ['a']
    assert options.view_as(DirectOptions).direct_num_workers == 2


@pytest.mark.parametrize('command', sorted(OWN))
@pytest.mark.parametrize('beam', [BEAM_SPACED, BEAM_EQUALS], ids=['spaced', 'equals'])
@pytest.mark.parametrize('where', ['after', 'before', 'between'])
def test_beam_options_in_any_spelling_and_place(command, beam, where):
    build, own = OWN[command]
    argv = {'after': own + beam, 'before': beam + own,
            'between': own[:2] + beam + own[2:]}[where]
    opened = runner.open_beam_cli(build(), argv, configure=False)
    assert not isinstance(opened, int), opened
    args, beam_args = opened
    _check_beam(beam_args)
    if command == 'ddsp-prepare':
        assert (args.input, args.output_dir, args.num_shards) == (['a.wav'], 'out', 2)
    elif command == 'ddsp-eval':
        assert (args.model, args.data, args.batch_size) == ('m', 'd', 3)
    else:  # the reported bug: PortableRunner was taken for the sweep file
        assert args.spec is None and (args.name, args.data, args.steps) == ('x', 'd', 3)
        assert args.experiment == 'mine'  # the command's own flag wins over Beam's --experiment


@pytest.mark.parametrize('where', [0, 1, 3, 5])
def test_sweep_spec_file_anywhere_among_beam_options(where):
    beam = ['--runner', 'DataflowRunner', '--project', 'p', '--region', 'r']
    argv = beam[:where] + ['sweep.yaml'] + beam[where:] + ['--parallel', '4']
    if where % 2:  # between an option and its value is not a place for it
        argv = beam[:where - 1] + ['sweep.yaml'] + beam[where - 1:] + ['--parallel', '4']
    args, beam_args = runner.open_beam_cli(sweep.build_arg_parser(), argv, configure=False)
    assert args.spec == 'sweep.yaml' and args.parallel == 4
    assert beam_args == beam


def test_sweep_main_takes_a_spaced_runner_for_a_runner(monkeypatch, tmp_path):
    """ddsp-sweep --name x --data d ... --runner PortableRunner --job_endpoint ... reaches
    run_sweep with the spec of its flags and the Beam options (was "PortableRunner: no such
    sweep file")."""
    seen = {}

    def fake_run_sweep(spec, pipeline_args):
        seen.update(spec=spec, args=list(pipeline_args))
        raise KeyboardInterrupt  # main's exit code 130, nothing run

    monkeypatch.setattr(sweep, 'run_sweep', fake_run_sweep)
    code = sweep.main(['--name', 'x', '--data', str(tmp_path), '--steps', '2',
                       '--space', 'model.rnn_channels=[16, 32]', '--runner', 'PortableRunner',
                       '--job_endpoint', 'localhost:8099'])
    assert code == 130
    assert seen['spec'].name == 'x' and seen['spec'].steps == 2
    assert seen['args'] == ['--runner', 'PortableRunner', '--job_endpoint', 'localhost:8099']


@pytest.mark.parametrize('command', sorted(OWN))
def test_an_option_neither_knows_is_a_usage_error_naming_it(command, capsys):
    build, own = OWN[command]
    assert runner.open_beam_cli(build(), own + ['--runer', 'DirectRunner'],
                                configure=False) == 2
    err = capsys.readouterr().err
    assert f'{command}: error: unknown option(s) --runer' in err
    assert f'neither a {command} flag nor a Beam pipeline option' in err


def test_a_beam_option_without_its_value_is_a_usage_error(capsys):
    assert runner.open_beam_cli(sweep.build_arg_parser(),
                                ['--name', 'x', '--job_endpoint', '--steps', '2'],
                                configure=False) == 2
    assert '--job_endpoint needs a value' in capsys.readouterr().err


def test_help_is_exit_0(capsys, monkeypatch):
    monkeypatch.delenv('TF_FORCE_GPU_ALLOW_GROWTH', raising=False)
    assert runner.open_beam_cli(sweep.build_arg_parser(), ['--help'], configure=False) == 0
    assert 'ddsp-sweep' in capsys.readouterr().out
    import os

    assert os.environ['TF_FORCE_GPU_ALLOW_GROWTH'] == 'true'  # the launcher's GPU memory too


def test_eval_beam_options_without_a_runner_are_refused(capsys):
    assert evaluate.main(['--model', 'm', '--data', 'd', '--direct_num_workers', '2']) == 2
    assert 'Beam options need a --runner' in capsys.readouterr().err


@pytest.mark.parametrize('args,local', [
    ([], True), (['--runner=DirectRunner'], True), (['--runner', 'PrismRunner'], True),
    (['--runner=PortableRunner'], False), (['--runner=DataflowRunner'], False)])
def test_is_local_runner(args, local):
    assert runner.is_local_runner(PipelineOptions(args)) is local


def test_local_default_and_worker_threads(monkeypatch):
    monkeypatch.setattr('os.cpu_count', lambda: 8)
    default = PipelineOptions(runner.with_local_default([]))
    assert default.view_as(StandardOptions).runner == 'DirectRunner'
    assert default.view_as(DirectOptions).direct_running_mode == 'multi_processing'
    assert runner.local_worker_threads(default) == 1  # one worker per core
    given = runner.with_local_default(['--direct_num_workers', '2'])
    assert runner.local_worker_threads(PipelineOptions(given)) == 4
    many = runner.with_local_default(['--direct_num_workers=16'])
    assert runner.local_worker_threads(PipelineOptions(many)) == 1
    in_process = ['--runner=DirectRunner']  # and remote runners: TensorFlow's own default
    assert runner.local_worker_threads(PipelineOptions(in_process)) is None
    forced = runner.with_local_default(['--direct_num_workers=2'], workers=4)
    assert runner.local_worker_threads(PipelineOptions(forced)) == 2  # --parallel wins
    named = ['--runner', 'PortableRunner']
    assert runner.with_local_default(named) == named
    assert runner.local_worker_threads(PipelineOptions(named)) is None


# ---- the opening every console script shares (ddsp_core.runtime.open_cli) ---------------------
def test_every_console_script_opens_through_open_cli(monkeypatch, capsys):
    """--help is exit 0 and a bad flag exit 2 (usage and one error line) for every command;
    the commands reach open_cli (a broken opening shows in all of them)."""
    import importlib
    import re
    from pathlib import Path

    from ddsp_core import runtime

    setup = (Path(__file__).parents[2] / 'setup.py').read_text()
    scripts = re.findall(r"'(ddsp-[a-z]+) = ([\w.]+):main'", setup)
    assert len(scripts) == 8
    opened = []
    real = runtime.open_cli

    def spy(parser, argv=None, **kwargs):
        opened.append(parser.prog)
        return real(parser, argv, **kwargs)

    monkeypatch.setattr(runtime, 'open_cli', spy)
    for name, module in scripts:
        main = importlib.import_module(module).main
        assert main(['--help']) == 0, name
        assert name in capsys.readouterr().out
        assert main(['--no_such_flag']) == 2, name
        err = capsys.readouterr().err
        assert f'{name}: error:' in err, (name, err)  # the flag, or a required one first
    assert sorted(set(opened)) == sorted(name for name, _ in scripts)


def test_exit_codes_come_with_one_line(capsys, caplog):
    """runtime.usage_error and runtime.failure: the commands' one line and exit code; a full
    disk says so with the command's hint, any other error its type (traceback to the log)."""
    import errno
    import logging

    from ddsp_core import runtime

    assert runtime.usage_error('ddsp-x', ValueError('--steps must be > 0')) == 2
    assert capsys.readouterr().err == 'ddsp-x: error: --steps must be > 0\n'
    log = logging.getLogger('ddsp-x')
    full = OSError(errno.ENOSPC, 'No space left on device', '/out/a.tfrecord')
    with caplog.at_level(logging.DEBUG, logger='ddsp-x'):
        assert runtime.failure('ddsp-x', full, log=log, hint='free some and resume') == 1
        assert capsys.readouterr().err == ('ddsp-x: failed: no space left on device writing '
                                           '/out/a.tfrecord; free some and resume\n')
        assert not caplog.records  # nothing to debug about a full disk
        assert runtime.failure('ddsp-x', KeyError('k'), log=log, what='export') == 1
    assert capsys.readouterr().err == "ddsp-x: failed: KeyError: 'k'\n"
    assert [(r.getMessage(), r.exc_info[0]) for r in caplog.records] == [('export failed',
                                                                         KeyError)]
    assert runtime.failure('ddsp-x', 'cannot reach the server') == 1
    assert capsys.readouterr().err == 'ddsp-x: failed: cannot reach the server\n'
    parser = runtime.command_parser('ddsp-x', 'what it does')
    parser.add_argument('--verbose', action='store_true')
    assert runtime.open_cli(parser, ['--verb']) == 2  # no abbreviations
    assert "unrecognized arguments: --verb" in capsys.readouterr().err
    parser = runtime.command_parser('ddsp-x', 'what it does', allow_abbrev=True)
    parser.add_argument('--verbose', action='store_true')
    assert runtime.open_cli(parser, ['--verb'], configure=False).verbose


# ---- one GPU (or several) per local worker, on a fake device list -------------------------------
def test_gpu_assignment_round_robin():
    assert runner.gpu_assignment(['0', '1', '2', '3'], 2) == [['0', '2'], ['1', '3']]
    assert runner.gpu_assignment(['0', '1', '2', '3'], 4) == [['0'], ['1'], ['2'], ['3']]
    assert runner.gpu_assignment(['0', '1'], 3) == [['0'], ['1'], ['0']]  # shared, one each
    assert runner.gpu_assignment(['GPU-a', 'GPU-b', 'GPU-c'], 2) == [['GPU-a', 'GPU-c'],
                                                                     ['GPU-b']]
    assert runner.gpu_assignment([], 2) == [[], []]


def test_visible_gpus_follow_cuda_visible_devices():
    assert runner.visible_gpus({'CUDA_VISIBLE_DEVICES': '2, 3'}) == ['2', '3']
    assert runner.visible_gpus({'CUDA_VISIBLE_DEVICES': '1,-1,3'}) == ['1']  # CUDA stops at -1
    assert runner.visible_gpus({'CUDA_VISIBLE_DEVICES': ''}) == []


def test_each_worker_claims_its_own_slot(monkeypatch, tmp_path):
    """Three processes' claims (one lock file each) on 4 fake GPUs shared by 3 workers: each
    its own slot, the GPUs round robin, memory growth on; a dead worker's slot is free again."""
    import os

    monkeypatch.setattr(runner, '_held_slots', [])
    claims = []
    for _ in range(3):  # a process each: a fresh claim record, the locks of the others held
        monkeypatch.setattr(runner, '_claimed', {})
        env = {runner.WORKER_SLOTS_ENV: str(tmp_path), runner.WORKER_GPUS_ENV: '0,3;1;2'}
        claims.append((runner.claim_worker_gpus(env), env['CUDA_VISIBLE_DEVICES'],
                       env['TF_FORCE_GPU_ALLOW_GROWTH']))
        assert runner.claim_worker_gpus(env) == claims[-1][0]  # once per process
    assert claims == [(['0', '3'], '0,3', 'true'), (['1'], '1', 'true'), (['2'], '2', 'true')]
    os.close(runner._held_slots.pop(1))  # the second worker dies
    assert runner._claim_slot(str(tmp_path), 3) == 1  # its replacement takes its slot
    for fd in runner._held_slots:
        os.close(fd)
    monkeypatch.setattr(runner, '_claimed', {})
    assert runner.claim_worker_gpus({}) is None  # not a local worker of a split job


@pytest.mark.slow
def test_local_workers_of_a_job_each_see_their_own_gpus(monkeypatch, tmp_path):
    """Two DirectRunner worker processes on a machine showing 4 (fake) GPUs: each process sees
    only its own two (CUDA_VISIBLE_DEVICES), with memory growth; the launcher's environment is
    as before afterwards."""
    import os

    import apache_beam as beam

    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0,1,2,3')
    out = str(tmp_path)

    def report(element):
        gpus = runner.claim_worker_gpus()
        with open(os.path.join(out, f'{os.getpid()}'), 'w') as f:
            f.write(f'{",".join(gpus)} {os.environ["CUDA_VISIBLE_DEVICES"]} '
                    f'{os.environ["TF_FORCE_GPU_ALLOW_GROWTH"]}')
        return element

    pipeline = beam.Pipeline(options=PipelineOptions(runner.with_local_default([], workers=2)))
    _ = pipeline | beam.Create(list(range(8))) | beam.Reshuffle() | beam.Map(report)
    runner.run_and_wait(pipeline)
    seen = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert seen and str(os.getpid()) not in seen  # the work ran in worker processes
    assert set(seen.values()) <= {'0,2 0,2 true', '1,3 1,3 true'}
    assert len(set(seen.values())) == len(seen)  # no two processes share a slot
    assert os.environ['CUDA_VISIBLE_DEVICES'] == '0,1,2,3'
    assert runner.WORKER_GPUS_ENV not in os.environ
