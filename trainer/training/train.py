"""Train the DDSP autoencoder: library function :func:`train` and the ``ddsp-train`` CLI.

Example::

    ddsp-train --preset solo_instrument --data data/violin --steps 30000 \\
        --model_dir runs/violin --set train.batch_size=16

The dataset's manifest gives the data layout (sample rate, frame rate, example length); the
model is built for it. A model directory (see :mod:`trainer.training.loop`) is locked while a run
uses it; running again with a model directory that holds a checkpoint resumes from it exactly: same
step, weights and optimizer state; the same data order too with
``train.checkpoint_data_iterator`` on one device (distributed iterators cannot be checkpointed:
there a resumed run reshuffles with a step-derived seed). The MLflow run is resumed too, and
steps its history already holds are not logged again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from trainer.model import model_dir as model_dir_lib
from trainer.model.config import Config, ConfigError, available_presets, load_preset, resolve_data
from trainer.model.model_dir import ModelDirError, ModelDirLock, ModelDirLocked
from trainer.tracking.store import KIND_TAG
from trainer.training.loop import (
    CheckpointError,
    Trainer,
    TrainingDivergedError,
    _adam_for_reduced_gradients,  # noqa: F401 - re-exported for tests
    build_model,
    check_resume_config,
    make_train_step,
)

logger = logging.getLogger(__name__)

#: Artifact folders of the summaries: one per summary step, and the latest at a path every run
#: shares (so MLflow's compare view lines runs up).
SUMMARY_HISTORY_DIR = 'summaries/step_{step:06d}'
#: The latest summary sits at the artifact root (MLflow's compare view lists the files at the root
#: that every run has): latest_original.wav, latest_resynthesis.wav, latest_spectrogram.png.
SUMMARY_LATEST_PREFIX = 'latest_'
#: Artifact folder of the model directory (checkpoints, config.json, dataset manifest).
CHECKPOINTS_ARTIFACT = 'checkpoints'

__all__ = ['NullTracker', 'TrainingDivergedError', 'TrainingInterrupted', 'build_model',
           'main', 'make_train_step', 'train']


class EarlyStop(Exception):
    """Raised by an ``on_log`` callback to end training at the current step (a pruned sweep
    trial): the checkpoint is saved and the run ends FINISHED."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C / SIGINT / SIGTERM); a checkpoint was saved."""


class NullTracker:
    """A tracker that records nothing (non-chief workers, ``track=False``): the
    :class:`~trainer.tracking.tracker.Tracker` interface, every ``log_*`` and ``end`` a no-op."""

    fallback_events: list = []
    run_id: str | None = None
    tracking_uri: str | None = None

    def start(self, params, tags, run_id=None, run_name=None, description=None):
        return run_id or ''

    def logged_through(self, key):
        return 0

    def _nothing(self, *args, **kwargs) -> None:
        return None

    log_metrics = log_audio = log_spectrogram_comparison = log_file = log_dir = log_dict = \
        log_dataset = end = _nothing


def _log_model_dir(tracker, model_dir: Path) -> None:
    """Log the model dir's files as artifacts under ``checkpoints/`` (not the fallback MLflow
    store or the lock); the name ``model`` is left to the MLflow Model of ``ddsp-export``."""
    for entry in sorted(model_dir.iterdir()):
        if not model_dir_lib.is_model_file(entry.name):
            continue
        if entry.is_dir():
            tracker.log_dir(str(entry), f'{CHECKPOINTS_ARTIFACT}/{entry.name}')
        else:
            tracker.log_file(str(entry), CHECKPOINTS_ARTIFACT)


class _StopRequest:
    """SIGINT / SIGTERM ask the loop to stop after the current step (checkpoint, metrics and
    MLflow status are then written whole); a second Ctrl-C stops at once."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        print(f'\nddsp-train: {signal.Signals(signum).name} received: stopping after this step '
              '(Ctrl-C again to stop at once)', file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def logged_metrics(values: dict[str, float]) -> dict[str, float]:
    """The step's metrics under the names logged to MLflow: the loss terms only when there are
    several (with one, it is ``total_loss``), and the gradient norm as ``grad_norm_preclip`` (it
    is measured before clipping to ``train.grad_clip_norm``)."""
    terms = {k: v for k, v in values.items() if k not in ('total_loss', 'grad_norm')}
    out = dict(terms) if len(terms) > 1 else {}
    out['total_loss'] = values['total_loss']
    out['grad_norm_preclip'] = values['grad_norm']
    return out


def _log_dataset_input(tracker, source) -> None:
    """The training data as the run's MLflow dataset input (name, fingerprint, size)."""
    if source.manifest is not None:
        uri, name = source.manifest.directory, Path(source.manifest.directory).name
        split = source.split or 'train'
        profile = {'split': split, 'examples': source.manifest.split_examples(split),
                   'hours': source.manifest.statistic('splits', split, 'hours'),
                   'layout': source.layout.describe()}
    else:
        uri, name = str(source.spec), Path(str(source.spec).split(',')[0]).name or 'data'
        profile = {'files': len(source.files), 'layout': source.layout.describe()}
    schema = {k: [n] for k, n in source.layout.feature_lengths().items()}
    tracker.log_dataset(name, uri, source.fingerprint, context='training', schema=schema,
                        profile=profile)


def held_out_data(source) -> str | None:
    """The eval split to watch while training on ``source``: ``DIR:eval`` when ``source`` reads
    the train split of a prepared dataset whose eval split has examples, else None."""
    manifest = source.manifest
    if manifest is None or (source.split or 'train') != 'train' or \
            not (manifest.split_examples('eval') or 0):
        return None
    return f'{manifest.directory}:eval'


def _default_run_name(config: Config, source) -> str:
    if source.manifest is not None:
        name = Path(source.manifest.directory).name
    else:
        name = Path(str(source.spec).split(',')[0].rstrip('/')).name.split('*')[0] or 'data'
    return f'{config.preset}-{name}-{secrets.token_hex(2)}'


def train(config: Config, data, model_dir: str | os.PathLike, steps: int,
          strategy: str = 'default', tracking_uri: str | None = None,
          experiment: str | None = None, run_name: str | None = None, tracker=None,
          track: bool = True, progress: bool = True, eval_data=None, eval_every: int = 0,
          eval_batches: int = 8, on_log=None, tags: dict | None = None,
          parent_run_id: str | None = None) -> dict:
    """Train (or resume training) the autoencoder until the global step reaches ``steps``.

    Args:
        config: Full configuration (see :mod:`trainer.model.config`); its data layout is filled from
            the dataset (:func:`trainer.model.config.resolve_data`).
        data: Data spec (a prepared-dataset dir, TFRecord glob(s), ``tfds:NAME[:SPLIT]``) or a
            :class:`trainer.training.data.DataSource`.
        model_dir: Where checkpoints, ``config.json`` and the run id live; resumes from the
            latest checkpoint there if any. Locked for the run's lifetime.
        steps: Total number of optimizer steps to reach (not additional steps).
        strategy: ``'default'``, ``'mirrored'`` or ``'multi_worker'`` (TF_CONFIG), or a
            strategy from :func:`trainer.training.strategy.make_strategy`.
        tracking_uri: MLflow tracking URI (None: MLFLOW_TRACKING_URI or MLflow's default).
        experiment: MLflow experiment name (None: ``'ddsp'``).
        run_name: MLflow run name for a new run (default: preset, dataset and a short id).
        tracker: An object with the :class:`trainer.tracking.tracker.Tracker` interface to use
        instead
            of creating one.
        track: False: log nothing to MLflow.
        progress: Show a tqdm progress bar.
        eval_data: Data spec (or DataSource) of held-out examples; with ``eval_every``, their
            mean spectral loss is logged as ``eval_loss`` every ``eval_every`` steps and at the
            end (whole records cropped at their start, up to ``eval_batches`` batches).
        on_log: Called as ``on_log(step, metrics)`` after each metric log; raising
            :class:`EarlyStop` ends the run there (checkpoint saved, run FINISHED) - how a
            sweep prunes a trial.
        tags: Extra MLflow tags of the run.
        parent_run_id: Make the run a child of this MLflow run (``mlflow.parentRunId``).

    Returns:
        ``{'step', 'losses' (final loss terms and 'total_loss'), 'run_id', 'model_dir',
        'steps_per_sec', 'resumed_from', 'tracking_events', 'stopped_early'}``.

    Raises:
        TrainingDivergedError: the loss became NaN/inf (nothing saved after the last good step).
        TrainingInterrupted: SIGINT/SIGTERM/KeyboardInterrupt; a checkpoint was saved and the
            run marked KILLED.
        ModelDirLocked: another process holds the model directory.
        ConfigError, trainer.training.data.DataError: bad config or data (message names the cause);
            nothing is left behind in a model directory this call created.
    """
    from trainer.training import data as data_lib
    from trainer.training import strategy as strategy_lib

    if steps <= 0:
        raise ConfigError(f'--steps must be positive, got {steps}')
    model_dir_lib.check_local(model_dir)
    if isinstance(strategy, str):  # before TensorFlow runs anything (multi_worker needs that)
        strategy = strategy_lib.make_strategy(strategy)
    source = data if isinstance(data, data_lib.DataSource) else data_lib.open_source(
        data, sample_rate=config.data.sample_rate)
    config = resolve_data(config, source.layout, source.where)
    model_dir = Path(model_dir)
    check_resume_config(model_dir, config)
    trainer = Trainer(config, source, model_dir, strategy)
    created = trainer.chief and not model_dir.exists()
    lock = None
    if trainer.chief:
        model_dir.mkdir(parents=True, exist_ok=True)
        lock = ModelDirLock(model_dir).acquire()
    eval_source = None
    if eval_data is not None and eval_every:
        eval_source = eval_data if isinstance(eval_data, data_lib.DataSource) else \
            data_lib.open_source(eval_data, split='eval', sample_rate=config.data.sample_rate)
        if (eval_source.layout.sample_rate, eval_source.layout.frame_rate) != (
                source.layout.sample_rate, source.layout.frame_rate) or \
                eval_source.layout.n_frames < config.data.n_frames:
            raise data_lib.DataError(
                f'eval data {eval_source.where} ({eval_source.layout.describe()}) does not '
                f'match the training data ({source.layout.describe()})')
    try:
        return _run(trainer, steps, tracking_uri=tracking_uri, experiment=experiment,
                    run_name=run_name, tracker=tracker, track=track, progress=progress,
                    eval_source=eval_source, eval_every=eval_every, eval_batches=eval_batches,
                    on_log=on_log, extra_tags=tags or {}, parent_run_id=parent_run_id)
    except (ConfigError, data_lib.DataError):
        if created and trainer.latest_checkpoint() is None:
            shutil.rmtree(model_dir, ignore_errors=True)  # leave no half-made model dir
        raise
    finally:
        if lock is not None:
            lock.release()


def _run(trainer: Trainer, steps: int, *, tracking_uri, experiment, run_name, tracker, track,
         progress, eval_source=None, eval_every=0, eval_batches=8, on_log=None,
         extra_tags=None, parent_run_id=None) -> dict:
    from tqdm.auto import tqdm

    from trainer.tracking import artifacts

    config, tc, model_dir = trainer.config, trainer.config.train, trainer.model_dir
    start_step = trainer.restore()
    summary_batch = trainer.summary_example() if tc.summary_every > 0 and trainer.chief else None

    # ---- tracking -----------------------------------------------------------------------------
    if not trainer.chief or not track:
        tracker = NullTracker()
    elif tracker is None:
        from trainer.tracking.tracker import Tracker
        tracker = Tracker(tracking_uri=tracking_uri, experiment=experiment or 'ddsp',
                          local_fallback_dir=str(model_dir_lib.fallback_dir(model_dir)),
                          system_metrics_every_s=tc.system_metrics_every_s,
                          experiment_description='DDSP autoencoder training runs (ddsp-train). '
                          'Listen to latest_resynthesis.wav of each run; compare runs on '
                          'total_loss.')
    source = trainer.source
    tags = {
        KIND_TAG: 'train',  # a sweep's trials say 'trial' in extra_tags
        'ddsp.git_commit': artifacts.git_commit(),
        'ddsp.dataset_fingerprint': source.fingerprint,
        'ddsp.dataset_path': str(source.spec),
        'ddsp.dataset_layout': source.layout.describe(),
        'ddsp.preset': config.preset,
        'ddsp.strategy': trainer.strategy_name,
        'ddsp.device': artifacts.device_description(),
        **(extra_tags or {}),
    }
    if parent_run_id:
        tags['mlflow.parentRunId'] = parent_run_id
    run_id = None
    logged_through = 0
    if trainer.chief:
        previous = model_dir_lib.read_run_info(model_dir).get('run_id')
        description = (f'{config.preset} on {source.describe()}; training window '
                       f'{config.data.example_secs:g} s. latest_original.wav, '
                       'latest_resynthesis.wav and latest_spectrogram.png are the newest '
                       'summary (summaries/step_N/ the history).')
        params = {**config.flat(), 'run.steps': str(steps)}
        run_id = tracker.start(params, tags, run_id=previous,
                               run_name=run_name if previous else (
                                   run_name or _default_run_name(config, source)),
                               description=description)
        if previous:
            logged_through = int(tracker.logged_through('total_loss') or 0)
        if run_id:
            model_dir_lib.write_run_info(model_dir, {
                'run_id': run_id,
                'tracking_uri': (tracker.tracking_uri or tracking_uri
                                 or os.environ.get('MLFLOW_TRACKING_URI')),
                'experiment': experiment or 'ddsp'})
        config.save(model_dir)
        _log_dataset_input(tracker, source)
        if source.manifest is not None:
            model_dir_lib.write_manifest(model_dir, source.manifest)

    def write_summaries(step):
        if summary_batch is None or step <= logged_through:
            return
        original = summary_batch['audio'][0].numpy()
        resynth = trainer.resynthesize(summary_batch)[0]
        sr = config.data.sample_rate
        for folder, prefix in ((SUMMARY_HISTORY_DIR.format(step=step), ''),
                               ('.', SUMMARY_LATEST_PREFIX)):
            tracker.log_audio(f'{prefix}original', original, sr, step, artifact_dir=folder)
            tracker.log_audio(f'{prefix}resynthesis', resynth, sr, step, artifact_dir=folder)
            tracker.log_spectrogram_comparison(f'{prefix}spectrogram', original, resynth, sr,
                                               step, artifact_dir=folder)

    window = {'start': time.perf_counter(), 'steps': 0}
    last_logged = {'step': 0}

    def log_step(step, values):
        elapsed = time.perf_counter() - window['start']
        rate = window['steps'] / elapsed if elapsed > 0 and window['steps'] else float('nan')
        window['start'], window['steps'] = time.perf_counter(), 0
        if step <= max(logged_through, last_logged['step']):
            return  # the run's history already holds this step (a replay after a crash)
        last_logged['step'] = step
        metrics = logged_metrics(values)
        metrics['learning_rate'] = trainer.learning_rate(step)
        metrics['steps_per_sec'] = rate
        metrics['examples_per_sec'] = rate * tc.batch_size
        if eval_source is not None and eval_every and (step % eval_every == 0 or step == steps):
            metrics['eval_loss'] = trainer.eval_loss(eval_source, eval_batches)
        tracker.log_metrics(metrics, step=step)
        bar.set_postfix(loss=f'{values["total_loss"]:.4f}', steps_per_sec=f'{rate:.2f}')
        if on_log is not None:
            on_log(step, metrics)

    # ---- loop ---------------------------------------------------------------------------------
    last: dict[str, float] = {}
    status = 'FAILED'
    stopped_early = None
    bar = tqdm(total=steps, initial=start_step, disable=not (progress and trainer.chief),
               unit='step', dynamic_ncols=True)
    loop_start, loop_steps = time.perf_counter(), 0
    try:
        with _StopRequest() as stop:
            try:
                while trainer.step < steps:
                    values = trainer.train_step()
                    step = trainer.step
                    last = values
                    window['steps'] += 1
                    loop_steps += 1
                    bar.update(1)
                    if (tc.log_every and step % tc.log_every == 0) or step == steps:
                        try:
                            log_step(step, values)
                        except EarlyStop as e:
                            stopped_early = str(e) or f'stopped at step {step}'
                            break
                    if tc.checkpoint_every > 0 and step % tc.checkpoint_every == 0:
                        trainer.save()
                    if tc.summary_every > 0 and step % tc.summary_every == 0:
                        write_summaries(step)
                    if stop.signal is not None and step < steps:
                        raise KeyboardInterrupt
                if not trainer.saved_current_step():
                    trainer.save()
                step = trainer.step
                if tc.summary_every > 0 and step % tc.summary_every != 0 and step > start_step:
                    write_summaries(step)
                if trainer.chief:
                    _log_model_dir(tracker, model_dir)
                    if source.manifest is not None:
                        tracker.log_dict(source.manifest.data, 'dataset/manifest.json')
                status = 'FINISHED'
            except KeyboardInterrupt as e:
                status = 'KILLED'
                # The interrupt may land after the step's update ran but before Python saw its
                # loss: the checkpoint holds the optimizer's step, whatever Python last saw.
                step = trainer.step
                if step > start_step and trainer.weights_finite() and \
                        not trainer.saved_current_step():
                    trainer.save()
                if last and step > last_logged['step']:
                    with contextlib.suppress(Exception):
                        log_step(step, last)
                raise TrainingInterrupted(
                    f'interrupted at step {step}; checkpoint saved in {model_dir}; run again '
                    'with the same --model_dir to resume') from e
    finally:
        bar.close()
        tracker.end(status)
        if not trainer.chief:
            shutil.rmtree(trainer.ckpt_dir, ignore_errors=True)

    total_elapsed = time.perf_counter() - loop_start
    final_id = tracker.run_id or run_id
    if trainer.chief and final_id and final_id != run_id:  # a fallback-only run got a server id
        info = model_dir_lib.read_run_info(model_dir)
        info['run_id'] = final_id
        model_dir_lib.write_run_info(model_dir, info)
    return {
        'step': trainer.step,
        'losses': last,
        'run_id': final_id,
        'model_dir': str(model_dir),
        'steps_per_sec': loop_steps / total_elapsed if total_elapsed > 0 else float('nan'),
        'resumed_from': start_step,
        'tracking_events': list(tracker.fallback_events),
        'stopped_early': stopped_early,
    }


# ---- CLI --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from ddsp_core import runtime

    p = runtime.command_parser(
        'ddsp-train', allow_abbrev=True,
        description='Train the DDSP autoencoder on a prepared dataset (resumes from '
                    "--model_dir). The data layout comes from the dataset's manifest.json.",
        epilog='Exit codes: 0 done, 1 failed (e.g. the loss became NaN, or the disk is full: '
               'free space and run again to resume), 2 bad usage (bad option, config, data - '
               'a missing, truncated or damaged shard included - or a --model_dir in use), '
               '130 interrupted (a checkpoint was saved). See docs/training.md.')
    p.add_argument('--preset', default='solo_instrument',
                   help=f'config preset ({", ".join(available_presets())}) or a .yaml/.json file')
    p.add_argument('--data', default=None,
                   help="a prepared-dataset dir (DIR or DIR:eval), TFRecord glob(s), or "
                        "'tfds:NAME[:SPLIT]' (required unless --sync_tracking)")
    p.add_argument('--steps', type=int, default=None,
                   help='total optimizer steps to reach (required unless --sync_tracking)')
    p.add_argument('--model_dir', required=True, help='checkpoints, config.json, run id')
    p.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                   help='override a config field, e.g. --set model.n_harmonics=100 (repeatable)')
    p.add_argument('--strategy', default='default', choices=('default', 'mirrored',
                                                             'multi_worker'),
                   help='one device, all local GPUs, or a TF_CONFIG cluster')
    p.add_argument('--tracking_uri', default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's "
                        'local store ./mlflow.db + ./mlruns, which `mlflow ui` opens)')
    p.add_argument('--experiment', default='ddsp', help='MLflow experiment')
    p.add_argument('--run_name', default=None,
                   help='MLflow run name of a new run (default: PRESET-DATASET-xxxx)')
    p.add_argument('--eval_every', type=int, default=None, metavar='STEPS',
                   help="log eval_loss, the loss on the dataset's eval split, every STEPS steps "
                        '(at logged steps) and at the end, when the dataset has an eval split '
                        '(default: train.checkpoint_every; 0: never)')
    p.add_argument('--no_tracking', action='store_true', help='do not log to MLflow')
    p.add_argument('--no_system_metrics', action='store_true',
                   help="do not log MLflow's system metrics (CPU, memory, GPU... every "
                        'train.system_metrics_every_s seconds; same as --set '
                        'train.system_metrics_every_s=0)')
    p.add_argument('--sync_tracking', action='store_true',
                   help='only copy what --model_dir/mlruns (the fallback store used while the '
                        'tracking server was unreachable) holds to the server, then exit')
    p.add_argument('--no_progress', action='store_true', help='no progress bar')
    p.add_argument('--verbose', action='store_true',
                   help="show TensorFlow's own start-up and info logs")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ddsp-train``; returns the exit code (0 ok, 1 failed, 2 usage, 130 ^C)."""
    from ddsp_core import runtime

    args = runtime.open_cli(build_parser(), argv)
    if isinstance(args, int):
        return args
    if args.sync_tracking:
        from trainer.tracking.sync import main as sync_main
        return sync_main([args.model_dir] + (['--tracking_uri', args.tracking_uri]
                                             if args.tracking_uri else []))
    missing = [flag for flag, value in (('--data', args.data), ('--steps', args.steps))
               if value is None]
    if missing:
        return runtime.usage_error('ddsp-train', 'the following arguments are required: '
                                                 f'{", ".join(missing)}')
    try:
        model_dir_lib.check_local(args.model_dir)
        config = load_preset(args.preset).with_overrides(
            args.overrides + (['train.system_metrics_every_s=0'] if args.no_system_metrics
                              else []))
    except (ConfigError, ModelDirError) as e:
        return runtime.usage_error('ddsp-train', e)
    runtime.import_tensorflow()
    from trainer.tracking.store import quiet_mlflow_logging, resolve_tracking_uri
    from trainer.training.data import DataError, open_source
    from trainer.training.strategy import make_strategy

    quiet_mlflow_logging(args.verbose)

    try:
        try:
            dist = make_strategy(args.strategy)  # before TensorFlow runs anything
        except ValueError as e:
            raise ConfigError(str(e)) from None
        source = open_source(args.data, sample_rate=config.data.sample_rate)
        resolved = resolve_data(config, source.layout, source.where)
        window = resolved.data.example_secs
        crops = (f'random {window:g} s crops' if resolved.data.crops else
                 f'whole {window:g} s examples')
        print(f'ddsp-train: {config.preset} on {source.describe()}; training on {crops}; '
              f'{runtime.describe_devices()}, --strategy {args.strategy}', file=sys.stderr,
              flush=True)
        eval_every = resolved.train.checkpoint_every if args.eval_every is None else \
            args.eval_every
        if eval_every < 0:
            raise ConfigError(f'--eval_every must be >= 0, got {eval_every}')
        eval_data = held_out_data(source) if eval_every else None
        result = train(config, source, args.model_dir, args.steps, strategy=dist,
                       tracking_uri=args.tracking_uri, experiment=args.experiment,
                       run_name=args.run_name, track=not args.no_tracking,
                       progress=not args.no_progress, eval_data=eval_data,
                       eval_every=eval_every if eval_data else 0)
    except (ConfigError, DataError, ModelDirError, ModelDirLocked) as e:
        return runtime.usage_error('ddsp-train', e)
    except (TrainingDivergedError, CheckpointError) as e:
        print(f'ddsp-train: error: {e}', file=sys.stderr)
        return runtime.EXIT_FAILED
    except Exception as e:
        if runtime.disk_full_message(e) is None:
            raise
        return runtime.failure('ddsp-train', e, hint='free some space and run again with the '
                                                     'same --model_dir to resume')
    except KeyboardInterrupt as e:
        print(f'ddsp-train: {e or "interrupted"}', file=sys.stderr)
        return runtime.EXIT_INTERRUPTED
    for event in result.get('tracking_events', []):
        print(f'ddsp-train: MLflow: {event}', file=sys.stderr)
    if result.get('run_id'):
        from trainer.tracking.store import run_link

        info = model_dir_lib.read_run_info(args.model_dir)
        uri = info.get('tracking_uri') or resolve_tracking_uri(args.tracking_uri)
        for what, table in (('run', False), ('runs of the experiment', True)):
            link = run_link(uri, result['run_id'], runs_table=table)
            if link:
                print(f'ddsp-train: MLflow {what}: {link}', file=sys.stderr)
    print(json.dumps(result, default=_json_default))
    return runtime.EXIT_OK


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


if __name__ == '__main__':
    sys.exit(main())
