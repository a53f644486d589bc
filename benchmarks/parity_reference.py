"""The reference's side of ``bench_parity.py``: runs in the scratch environment that has the
reference (magenta/ddsp, on ``--ref_src``) and its dependencies, never in the project's.

For each checkpoint of the reference's model directory it restores the reference's model (its
operative gin config), resynthesises the held-out examples and writes them as
``<out>/reference/step_N.npz`` (``audio``, ``resynthesis``, and per example the RMS of the
harmonic and of the filtered-noise synthesiser's output, ``harmonic_rms``, ``noise_rms``: a
collapsed harmonic part shows there); then it judges every
``<out>/*/step_N.npz`` (ours included, written by ``bench_parity.py resynth``) with the
reference's own ``ddsp.losses.SpectralLoss`` set as the solo_instrument gin trains with it (L1,
FFT sizes 2048-64, magnitude and log-magnitude weights 1) and writes ``<out>/judged.json``:
``{model: {step: {'spectral_loss': mean over the examples, 'per_example': [...]}}}``.

Run by ``bench_parity.py judge`` as::

    TF_USE_LEGACY_KERAS=1 PYTHONPATH=REF_SRC SCRATCH/bin/python benchmarks/parity_reference.py \\
        --ref_src REF_SRC --model_dir OUT/reference_model --eval_pattern 'DATA/eval-*' --out OUT
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--ref_src', required=True, help="the reference's source tree")
    p.add_argument('--model_dir', required=True, help="the reference's save_dir")
    p.add_argument('--eval_pattern', required=True, help='held-out TFRecords (reference layout)')
    p.add_argument('--out', required=True, help='where the step_N.npz folders are')
    p.add_argument('--batch_size', type=int, default=8)
    args = p.parse_args(argv)
    os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
    sys.path.insert(0, args.ref_src)
    import ddsp
    import ddsp.training
    import gin
    import numpy as np
    import tensorflow as tf

    out_ref = os.path.join(args.out, 'reference')
    os.makedirs(out_ref, exist_ok=True)
    indices = sorted(glob.glob(os.path.join(args.model_dir, 'ckpt-*.index')),
                     key=lambda f: int(re.findall(r'ckpt-(\d+)', f)[0]))
    if indices:
        config = ddsp.training.train_util.get_latest_operative_config(args.model_dir)
        with gin.unlock_config():
            gin.parse_config_file(config, skip_unknown=True)
        provider = ddsp.training.data.TFRecordProvider(args.eval_pattern)
        examples = list(provider.get_dataset(shuffle=False).batch(args.batch_size))
        model = ddsp.training.models.get_model()
        for index in indices:
            step = int(re.findall(r'ckpt-(\d+)', index)[0])
            target = os.path.join(out_ref, f'step_{step}.npz')
            if os.path.exists(target):
                continue
            model.restore(index[:-len('.index')], verbose=False)
            audio, synth, parts = [], [], {'harmonic': [], 'filtered_noise': []}
            for batch in examples:
                outputs = model(batch, training=False)
                synth.append(model.get_audio_from_outputs(outputs).numpy())
                audio.append(batch['audio'].numpy())
                for name, values in parts.items():  # each synthesiser's own output, dry
                    values.append(np.sqrt(np.mean(outputs[name]['signal'].numpy() ** 2, -1)))
            np.savez(target, audio=np.concatenate(audio), resynthesis=np.concatenate(synth),
                     harmonic_rms=np.concatenate(parts['harmonic']),
                     noise_rms=np.concatenate(parts['filtered_noise']))
            print(f'reference step {step}: resynthesised {sum(len(a) for a in audio)} examples',
                  flush=True)
    # The solo_instrument gin's training loss (models/ae.gin): gin.register classes take their
    # bindings only when a config names them, so the values are passed here.
    loss = ddsp.losses.SpectralLoss(fft_sizes=(2048, 1024, 512, 256, 128, 64), loss_type='L1',
                                    mag_weight=1.0, logmag_weight=1.0)
    judged: dict = {}
    for path in sorted(glob.glob(os.path.join(args.out, '*', 'step_*.npz'))):
        name = os.path.basename(os.path.dirname(path))
        step = int(re.findall(r'step_(\d+)', path)[0])
        data = np.load(path)
        per = [float(loss(tf.constant(a[None]), tf.constant(r[None])))
               for a, r in zip(data['audio'], data['resynthesis'], strict=True)]
        judged.setdefault(name, {})[str(step)] = {'spectral_loss': float(np.mean(per)),
                                                  'per_example': per}
        print(f'{name} step {step}: reference SpectralLoss {np.mean(per):.4f}', flush=True)
    with open(os.path.join(args.out, 'judged.json'), 'w') as f:
        json.dump(judged, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
