"""The main job end to end on generated audio: `make demo`.

1. writes a few seconds of instrument-like audio (tools/synth_audio.py),
2. prepares it into a dataset with the Beam pipeline (DirectRunner, tiny CREPE; the defaults
   hold out 10 % of each recording, in blocks with a guard either side, as the eval split),
3. trains the `tiny` DDSP autoencoder on it, tracked in MLflow, with the loss on the eval split
   (`eval_loss`) logged every checkpoint and at the end,
4. evaluates the model on the eval split (`ddsp-eval`: pitch, loudness and spectral metrics,
   best and worst examples' audio),
5. renders a short timbre transfer (`ddsp-transfer`) of a different, breathier melody an octave
   lower at 22.05 kHz in stereo: auto-adjust moves it into the model's range; wet and dry,
6. prints where the dataset, model, evaluation, transfer and MLflow run are, and where to listen.

Everything goes under --out (default demo_out/); run it again to resume training in the same
model directory and MLflow run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np


def _create_experiment(tracking_uri: str, name: str, artifact_dir: Path) -> None:
    """Creates the demo's experiment with its artifacts under --out (not ./mlruns)."""
    from trainer.tracking.store import ensure_experiment, make_client

    ensure_experiment(make_client(tracking_uri), name, artifact_dir.as_uri(),
                      'make demo: the tiny DDSP model trained on generated audio')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='demo_out', help='output directory (default demo_out)')
    parser.add_argument('--steps', type=int, default=300, help='training steps (default 300)')
    parser.add_argument('--seconds', type=float, nargs='+', default=[30.0, 24.0],
                        help='lengths of the generated recordings (a recording shorter than '
                             'about 19 s is too short to hold out a block of: it goes whole '
                             'to one split)')
    parser.add_argument('--transfer_secs', type=float, default=6.0,
                        help='length of the generated transfer input (default 6)')
    parser.add_argument('--crepe_capacity', default='tiny',
                        help='CREPE model for f0 (tiny is fast; full is the default for real use)')
    parser.add_argument('--tracking_uri', default=None,
                        help='MLflow tracking URI (default: a SQLite store in --out)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    for noisy in ('apache_beam', 'root', 'mlflow'):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)

    from ddsp_core import runtime

    runtime.import_tensorflow()  # without TensorFlow's start-up noise
    from trainer.tracking.store import quiet_mlflow_logging

    quiet_mlflow_logging()
    out = Path(args.out).resolve()
    audio_dir, dataset_dir, model_dir = out / 'audio', out / 'dataset', out / 'model'
    tracking_uri = args.tracking_uri or f"sqlite:///{out / 'mlflow.db'}"
    out.mkdir(parents=True, exist_ok=True)

    from tools.synth_audio import write_dataset_audio

    print(f'[1/5] writing {len(args.seconds)} generated recordings to {audio_dir}', flush=True)
    for old in audio_dir.glob('melody_*.wav'):  # an earlier run's, maybe more of them
        old.unlink()
    write_dataset_audio(str(audio_dir), args.seconds)

    from pipelines.prepare_dataset import prepare_dataset

    print(f'[2/5] preparing the dataset with Beam (CREPE {args.crepe_capacity}) -> {dataset_dir}',
          flush=True)
    start = time.time()
    # ddsp-prepare's defaults (4 s examples every 1 s, 10 % held out); the tiny model trains on
    # 0.5 s crops.
    manifest = prepare_dataset([str(audio_dir / '*.wav')], str(dataset_dir),
                               crepe_capacity=args.crepe_capacity, overwrite=True)
    splits = {name: split['examples'] for name, split in manifest['splits'].items()}
    split = manifest['split']
    print(f"      done in {time.time() - start:.0f} s: {manifest['examples']} examples "
          f"{json.dumps(splits)} (split by {split['method']}: "
          f"{split['held_out_seconds']:g} s held out), {manifest['dead_letters']} dead letters",
          flush=True)

    from trainer.model.config import load_preset
    from trainer.training.data import open_source
    from trainer.training.train import held_out_data, train

    if args.tracking_uri is None:
        _create_experiment(tracking_uri, 'ddsp-demo', out / 'mlartifacts')

    config = load_preset('tiny')
    print(f'[3/5] training the tiny model for {args.steps} steps -> {model_dir}', flush=True)
    eval_data = held_out_data(open_source(str(dataset_dir)))
    result = train(config, str(dataset_dir), str(model_dir), steps=args.steps,
                   tracking_uri=tracking_uri, experiment='ddsp-demo', eval_data=eval_data,
                   eval_every=config.train.checkpoint_every if eval_data else 0)
    losses = ', '.join(f'{k} {v:.3f}' for k, v in sorted(result['losses'].items()))
    print(f"      final step {result['step']} ({losses})", flush=True)

    from pipelines import evaluate as ddsp_eval

    eval_dir = out / 'eval'
    print(f'[4/5] evaluating the model on the eval split -> {eval_dir}', flush=True)
    code = ddsp_eval.main(['--model', str(model_dir), '--data', str(dataset_dir),
                           '--out', str(eval_dir), '--tracking_uri', tracking_uri,
                           '--no_progress'])
    if code != 0:
        print(f'ddsp-eval failed (exit {code})', file=sys.stderr)
        return code

    import soundfile as sf

    from tools.synth_audio import render_melody
    from trainer.serving import transfer as ddsp_transfer

    transfer_dir = out / 'transfer'
    transfer_dir.mkdir(exist_ok=True)
    source = transfer_dir / 'input_22k_stereo.wav'
    voice = render_melody(args.transfer_secs, 22050, seed=7, n_harmonics=3, note_secs=0.4,
                          transpose=-12.0)
    sf.write(source, np.stack([voice, 0.7 * voice], axis=1), 22050, subtype='PCM_16')
    print(f'[5/5] timbre transfer of {source.name} ({args.transfer_secs:g} s) -> {transfer_dir}',
          flush=True)
    for name, extra in (('output_wet.wav', ['--log_to_mlflow']), ('output_dry.wav', ['--dry'])):
        code = ddsp_transfer.main(['--model', str(model_dir), '--input', str(source),
                                   '--output', str(transfer_dir / name),
                                   '--tracking_uri', tracking_uri, '--no_progress', *extra])
        if code != 0:
            print(f'ddsp-transfer failed (exit {code})', file=sys.stderr)
            return code

    from trainer.tracking.store import make_client, ui_link

    link = ui_link(tracking_uri, make_client(tracking_uri).get_run(result['run_id'])
                   .info.experiment_id, result['run_id'])
    print(f"""
Done.
  dataset:     {dataset_dir}  (manifest.json, files.jsonl, TFRecord shards, dead_letters.jsonl)
  model:       {model_dir}  (checkpoints, config.json)
  evaluation:  {eval_dir}  (aggregate.json, examples.jsonl, best/ worst/ listen/ audio)
  transfer:    {transfer_dir}  (input_22k_stereo.wav -> output_wet.wav, output_dry.wav)
  MLflow run:  {result['run_id']}  in experiment 'ddsp-demo' at {tracking_uri}

Where to listen:
  {eval_dir / 'best'}/ and {eval_dir / 'worst'}/: original and resynthesis of the best and
  worst eval examples; {transfer_dir}/output_wet.wav: the generated input played by the model.

Open the run in MLflow's UI with:
  .venv/bin/mlflow ui --backend-store-uri {tracking_uri}
and browse to {link}: the run's
artifacts play in the browser: latest_original.wav, latest_resynthesis.wav and
latest_spectrogram.png (the newest training summary; summaries/step_NNNNNN/ keep the history),
eval/ (the evaluation's table and audio) and transfer/ (input, output and a spectrogram).
""", flush=True)
    return 0


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.exit(main())
