"""``ddsp-export``: a trained model as a TensorFlow SavedModel (and an MLflow Model), or as the
``.tflite`` the DDSP-VST plugin loads.

``--format saved_model`` (default) writes a SavedModel that plain TensorFlow reloads
(``tf.saved_model.load``, nothing of this project imported). Its ``serving_default`` signature
takes the model's frame-rate features, float32 [batch, n_frames] of any length, and an int64
``seed`` (of the filtered noise), and returns ``audio`` (with the reverb) and ``audio_dry``
(without), float32 [batch, n_frames * hop]; its ``controls`` signature returns the synthesizer
controls. The features are ``f0_hz`` (Hz) and ``loudness_db`` (dB), or ``f0_hz`` and
``power_db`` (:func:`trainer.model.autoencoder.frame_power_db`) for a model whose decoder takes
power (the ``vst`` preset). The same numbers as the in-process model
(:class:`trainer.serving.inference.TrainedModel` with the same seed), computed in float32, checked
before anything is written. The export is logged into the model's MLflow run as an MLflow Model
named ``model`` (a pyfunc around the SavedModel:
``mlflow.pyfunc.load_model('runs:/RUN_ID/model').predict({'f0_hz': ..., 'loudness_db': ...},
params={'seed': 0})``), optionally registered (``--register NAME``).

``--format vst`` writes the per-frame decoder that DDSP-VST runs (``docs/vst.md``): inputs
``call_f0_scaled:0`` [1], ``call_pw_scaled:0`` [1], ``call_state:0`` [512]; outputs
``StatefulPartitionedCall:0..3``: amplitude [1], harmonic distribution [60], noise magnitudes
[65], new GRU state [512], float32, TFLite builtin ops only, with ``metadata.json`` (the
training data's note ranges) appended as a zip. Only a model of the plugin's shape (the ``vst``
preset) can be exported so; the error names what differs.

Both are computed by the trained model's own Keras layers and processors, with their weights:
the decoder's inference paths (:meth:`trainer.model.autoencoder.RnnFcDecoder.call_with_state` for a
whole sequence, :meth:`~trainer.model.autoencoder.RnnFcDecoder.step` for the plugin's single frame,
loop-free so that TFLite's converter turns it into builtin ops), and the synthesizers' any-length
rendering (``get_signal_chunk`` of ``ddsp_core``'s ``Harmonic``, ``FilteredNoise`` and ``Reverb``,
one chunk the whole sequence). The exports are traced graphs: running them needs TensorFlow only,
neither Keras nor this project.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from trainer.serving.mlflow_model import MLFLOW_MODEL_NAME, log_mlflow_model
from trainer.serving.saved_model import ExportError, check_exportable, export_saved_model
from trainer.serving.vst import (
    dataset_note_statistics,
    export_vst,
    manifest_note_statistics,
    vst_differences,
    vst_warnings,
)

logger = logging.getLogger(__name__)

FORMATS = ('saved_model', 'vst')


def build_arg_parser() -> argparse.ArgumentParser:
    from ddsp_core import runtime
    from trainer.serving.inference import add_model_argument

    p = runtime.command_parser(
        'ddsp-export',
        description='Export a trained model: a TensorFlow SavedModel (features of any length '
                    '-> audio, with and without the reverb) logged to the model\'s MLflow run as '
                    'an MLflow Model, or the .tflite the DDSP-VST plugin loads (with its '
                    'metadata.json).',
        epilog='Exit codes: 0 done, 1 failed, 2 bad usage (no checkpoint, a model that is not '
               'vst-shaped for --format vst, an existing --out, ...). See docs/training.md, '
               '"Export", and docs/vst.md.')
    add_model_argument(p)
    p.add_argument('--format', default='saved_model', choices=FORMATS, help='what to write')
    p.add_argument('--out', required=True,
                   help='saved_model: the SavedModel directory to create; vst: the .tflite '
                        'file, or a directory to write <model name>.tflite into')
    p.add_argument('--data', default=None,
                   help="vst: the model's training data, for metadata.json's statistics "
                        "(default: the dataset path the model's MLflow run records)")
    p.add_argument('--log_to_mlflow', action=argparse.BooleanOptionalAction, default=None,
                   help="log the export to the model's MLflow run (saved_model: as the MLflow "
                        "Model 'model'; vst: the .tflite under vst/) (default: on when the "
                        'model has a run)')
    p.add_argument('--register', default=None, metavar='NAME',
                   help='also register the MLflow Model under this name (saved_model)')
    p.add_argument('--tracking_uri', default=None,
                   help="MLflow tracking URI (default: the model's run's, from mlflow_run.json)")
    p.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    p.add_argument('--verbose', action='store_true', help="TensorFlow's and MLflow's own logs")
    return p


def _fail(message: object) -> int:
    from ddsp_core import runtime

    return runtime.usage_error('ddsp-export', message)


def _vst_out_path(out: str, trained) -> Path:
    path = Path(out)
    if path.suffix == '.tflite':
        return path
    name = trained.model_dir.name if trained.model_dir.name not in ('', 'checkpoints') else \
        f'ddsp-{trained.run_info.get("run_id", "model")[:8]}'
    return path / f'{name}.tflite'


def _training_statistics(args, trained, run_id, tracking_uri) -> tuple[dict, str]:
    """(note statistics, where they came from) for the metadata."""
    from trainer.training.data import DataError, open_source

    found = manifest_note_statistics(trained.manifest)
    if found is not None and args.data is None:
        return found, "the model's dataset manifest"
    data, from_run = args.data, False
    if data is None and run_id:
        try:
            from trainer.tracking.store import make_client, resolve_tracking_uri

            run = make_client(resolve_tracking_uri(tracking_uri)).get_run(run_id)
            data = run.data.tags.get('ddsp.dataset_path')
            from_run = bool(data)
        except Exception as e:  # noqa: BLE001 - MLflow raises several kinds
            logger.warning('could not read the dataset path from the MLflow run: %s', e)
    if not data:
        raise ExportError('--format vst needs the training data for metadata.json (the '
                          "manifest has no note statistics and the model's run names no "
                          'dataset): pass --data DIR, the dataset the model was trained on')
    try:
        source = open_source(str(data), split='train')
    except DataError as e:
        if not from_run:
            raise
        raise DataError(f"the model's training data, {data} (its MLflow run's "
                        f'ddsp.dataset_path), cannot be read ({e}); pass --data DIR') from None
    layout = source.layout
    if (layout.sample_rate, layout.frame_rate) != (trained.config.data.sample_rate,
                                                   trained.config.data.frame_rate):
        raise ExportError(f'--data {data}: {layout.describe()}; the model was trained at '
                          f'{trained.config.data.sample_rate} Hz, '
                          f'{trained.config.data.frame_rate} frames/s')
    trained_on = trained.manifest.statistic('fingerprint') if trained.manifest else None
    if trained_on and source.fingerprint != trained_on:
        print(f'ddsp-export: warning: --data {data} has fingerprint {source.fingerprint}, the '
              f'model was trained on {trained_on}; metadata.json describes --data',
              file=sys.stderr)
    statistics, n = dataset_note_statistics(source, trained.config.model.power_frame_size,
                                            progress=sys.stderr.isatty())
    return statistics, f'{n} training examples of {source.where}'


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``ddsp-export``."""
    from ddsp_core import runtime

    args = runtime.open_cli(build_arg_parser(), argv)
    if isinstance(args, int):
        return args
    if not args.verbose:
        os.environ.setdefault('MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR', 'false')
    runtime.import_tensorflow()
    from trainer.model.config import ConfigError
    from trainer.serving.inference import RUNS_PREFIX, ModelDirError, TrainedModel
    from trainer.tracking.store import print_run_link, quiet_mlflow_logging
    from trainer.training.data import DataError

    quiet_mlflow_logging(args.verbose)
    if args.register and args.format != 'saved_model':
        return _fail('--register registers the MLflow Model of --format saved_model')
    if args.register and args.log_to_mlflow is False:
        return _fail('--register needs --log_to_mlflow')
    try:
        trained = TrainedModel.load(args.model, tracking_uri=args.tracking_uri)
    except (ModelDirError, ConfigError) as e:
        return _fail(str(e))
    run_id = trained.run_info.get('run_id')
    if str(args.model).startswith(RUNS_PREFIX):
        run_id = str(args.model)[len(RUNS_PREFIX):].strip('/').split('/')[0]
    tracking_uri = args.tracking_uri or trained.run_info.get('tracking_uri')
    log_to_mlflow = bool(run_id) if args.log_to_mlflow is None else args.log_to_mlflow
    if log_to_mlflow and not run_id:
        return _fail(f'--log_to_mlflow: {args.model} has no MLflow run (no mlflow_run.json)')
    out = _vst_out_path(args.out, trained) if args.format == 'vst' else Path(args.out)
    if out.exists() and (out.is_file() or any(out.iterdir())):
        if not args.overwrite:
            return _fail(f'--out {out} exists; choose another path or pass --overwrite')
    try:
        if args.format == 'vst':
            differences = vst_differences(trained.config)
            if differences:
                raise ExportError('--format vst: the model is not what the DDSP-VST plugin '
                                  'runs: ' + '; '.join(differences)
                                  + ' (train it with --preset vst)')
            for warning in vst_warnings(trained.config):
                print(f'ddsp-export: warning: {warning}', file=sys.stderr)
            statistics, where = _training_statistics(args, trained, run_id, tracking_uri)
        else:
            check_exportable(trained.config)
    except (ExportError, DataError, ConfigError) as e:
        return _fail(str(e))
    print(f'ddsp-export: {args.format} of {args.model} at step {trained.step}', file=sys.stderr,
          flush=True)
    try:
        if args.format == 'vst':
            out.parent.mkdir(parents=True, exist_ok=True)
            result = export_vst(trained, out, statistics)
            meta, check = result['metadata'], result['check']
            print(f'ddsp-export: wrote {out} ({check["size_bytes"]} bytes, builtin ops: '
                  f'{", ".join(check["ops"])}; op versions <= {check["max_op_version"]}, '
                  f'min runtime {check["min_runtime_version"]}); '
                  f'metadata from {where}: pitch {meta["mean_min_pitch_note_hz"]:.1f}-'
                  f'{meta["mean_max_pitch_note_hz"]:.1f} Hz, power '
                  f'{meta["mean_min_power_note"]:.1f} to {meta["mean_max_power_note"]:.1f} dB',
                  file=sys.stderr)
            if log_to_mlflow:
                from trainer.tracking.store import make_client, resolve_tracking_uri

                make_client(resolve_tracking_uri(tracking_uri)).log_artifact(
                    run_id, str(out), 'vst')
                print(f'ddsp-export: logged {out.name} to MLflow run {run_id} under vst/',
                      file=sys.stderr)
                print_run_link('ddsp-export', tracking_uri, run_id, f'vst/{out.name}')
            return 0
        info = export_saved_model(trained, out)  # replaces an existing --out when done
        worst = max(info['check_max_abs_error'].values())
        print(f'ddsp-export: wrote the SavedModel {out} (features '
              f'{", ".join(info["features"])} -> audio, audio_dry; matches the trained model to '
              f'{worst:.2g})', file=sys.stderr)
        if log_to_mlflow:
            model_info = log_mlflow_model(out, info, run_id, tracking_uri, args.register)
            registered = (f', registered as {args.register} version '
                          f'{model_info.registered_model_version}' if args.register else '')
            print(f'ddsp-export: logged the MLflow Model runs:/{run_id}/{MLFLOW_MODEL_NAME} '
                  f'({model_info.model_uri}){registered}', file=sys.stderr)
            print_run_link('ddsp-export', tracking_uri, run_id, MLFLOW_MODEL_NAME)
    except ExportError as e:
        return _fail(e)
    except Exception as e:  # noqa: BLE001 - report any failure with exit code 1
        return runtime.failure('ddsp-export', e, log=logger, what='export',
                               level=logging.DEBUG)
    return 0


if __name__ == '__main__':
    sys.exit(main())
