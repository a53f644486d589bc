"""DSP throughput benchmark: prints JSON.

Workloads (batch 8, 4 s at 16 kHz, 1000 frames, as in the foundation issue):
  forward   Harmonic(100 harmonics) + FilteredNoise(65 bands)
  gradient  one gradient step through that + Reverb(48000, trainable) + SpectralLoss(six FFT
            sizes 2048..64, mag + logmag)

Each is timed for ddsp_core and for a "straightforward" rendering that follows the reference
library's algorithm (every harmonic's amplitude upsampled to audio rate with Hann windows and
every harmonic's phase accumulated separately), built from the same ddsp_core primitives, on the
same machine in the same process. The outputs of the two are compared.

Usage: python benchmarks/bench_dsp.py [--repeats 7] [--batch 8] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ddsp_core import core, effects, losses, synths  # noqa: E402

SR = 16000
N_SAMPLES = 64000
N_FRAMES = 1000
N_HARMONICS = 100
N_NOISE = 65
# Reference implementation of DDSP, run from current TensorFlow on the 2-core development
# machine (figures from the foundation issue), seconds per call.
REFERENCE_S = {'forward': 0.455, 'gradient': 1.18}


class StraightforwardHarmonic(synths.Harmonic):
    """Harmonic synth rendered the reference's way: audio-rate envelopes for every harmonic."""

    def get_signal(self, amplitudes, harmonic_distribution, f0_hz):
        harmonic_amps = amplitudes * harmonic_distribution
        n_harmonics = int(harmonic_amps.shape[-1])
        freqs = core.resample(core.get_harmonic_frequencies(f0_hz, n_harmonics), self.n_samples)
        amps = core.resample(harmonic_amps, self.n_samples, method=self.amp_resample_method)
        return core.oscillator_bank(freqs, amps, sample_rate=self.sample_rate)


def make_inputs(batch: int):
    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 1.0, N_FRAMES, dtype=np.float32)
    f0 = 220.0 * 2.0 ** (0.5 * np.sin(2 * np.pi * 2 * t))  # vibrato between ~155 and 311 Hz
    f0 = np.tile(f0[None, :, None], (batch, 1, 1)).astype(np.float32)
    return {
        'amps': tf.constant(rng.normal(size=(batch, N_FRAMES, 1)).astype(np.float32)),
        'harm_dist': tf.constant(rng.normal(size=(batch, N_FRAMES, N_HARMONICS))
                                 .astype(np.float32)),
        'noise_mags': tf.constant(rng.normal(size=(batch, N_FRAMES, N_NOISE)).astype(np.float32)),
        'f0_hz': tf.constant(f0),
        'target': tf.constant(rng.uniform(-0.5, 0.5, (batch, N_SAMPLES)).astype(np.float32)),
    }


def build(harmonic_cls):
    harmonic = harmonic_cls(n_samples=N_SAMPLES, sample_rate=SR, name='harmonic')
    noise = synths.FilteredNoise(n_samples=N_SAMPLES, window_size=257, name='filtered_noise')
    reverb = effects.Reverb(trainable=True, reverb_length=48000, name='reverb')
    loss = losses.SpectralLoss(fft_sizes=(2048, 1024, 512, 256, 128, 64), loss_type='L1',
                               mag_weight=1.0, logmag_weight=1.0)
    return harmonic, noise, reverb, loss


def timed(fn, repeats: int):
    fn()  # trace / warm up
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        tf.nest.map_structure(lambda x: x.numpy(), out)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def run(harmonic_cls, inputs, repeats: int):
    harmonic, noise, reverb, loss = build(harmonic_cls)
    tf.random.set_seed(0)
    controls = [tf.Variable(inputs[k]) for k in ('amps', 'harm_dist', 'noise_mags')]

    @tf.function
    def forward():
        h = harmonic(controls[0], controls[1], inputs['f0_hz'])
        return h, h + noise(controls[2])

    @tf.function
    def gradient():
        with tf.GradientTape() as tape:
            audio = harmonic(controls[0], controls[1], inputs['f0_hz']) + noise(controls[2])
            audio = reverb(audio)
            value = loss(inputs['target'], audio)
        variables = controls + list(reverb.trainable_variables)
        return value, tape.gradient(value, variables)

    fwd_s, fwd_all = timed(forward, repeats)
    grad_s, grad_all = timed(gradient, repeats)
    return {
        'forward_s': fwd_s, 'forward_all_s': fwd_all,
        'gradient_s': grad_s, 'gradient_all_s': grad_all,
    }


def harmonic_outputs(harmonic_cls, inputs):
    """Harmonic audio, the workload's spectral loss, and gradients w.r.t. the harmonic controls.

    Noise and the randomly initialised reverb are left out so that the two renderings can be
    compared exactly. Gradients are compared through the magnitude term of the spectral loss:
    the log-magnitude term's gradient, d log(|X| + 1e-7), is ~1e7 in bins above the highest
    harmonic where both renderings are silent up to float round-off (~1e-5), so it amplifies
    round-off rather than measuring the synthesis (both renderings give the same loss value).
    """
    harmonic, _, _, loss = build(harmonic_cls)
    mag_loss = losses.SpectralLoss(fft_sizes=(2048, 1024, 512, 256, 128, 64), loss_type='L1',
                                   mag_weight=1.0, logmag_weight=0.0)
    controls = [tf.Variable(inputs[k]) for k in ('amps', 'harm_dist')]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            audio = harmonic(controls[0], controls[1], inputs['f0_hz'])
            value = loss(inputs['target'], audio)
            mag_value = mag_loss(inputs['target'], audio)
        return audio, value, tape.gradient(mag_value, controls)

    audio, value, grads = step()
    return audio.numpy(), float(value), [g.numpy() for g in grads]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--out', help='also write the JSON here')
    args = parser.parse_args(argv)

    inputs = make_inputs(args.batch)
    ours = run(synths.Harmonic, inputs, args.repeats)
    base = run(StraightforwardHarmonic, inputs, args.repeats)
    audio, loss_ours, grads_ours = harmonic_outputs(synths.Harmonic, inputs)
    audio_base, loss_base, grads_base = harmonic_outputs(StraightforwardHarmonic, inputs)
    peak = float(np.max(np.abs(audio_base)))
    result = {
        'device': [d.name for d in tf.config.list_logical_devices()],
        'machine': {'cpus': os.cpu_count(), 'platform': platform.platform()},
        'tensorflow': tf.__version__,
        'batch': args.batch, 'n_samples': N_SAMPLES, 'n_frames': N_FRAMES,
        'repeats': args.repeats,
        'ddsp_core': {k: v for k, v in ours.items() if not k.endswith('_all_s')},
        'straightforward': {k: v for k, v in base.items() if not k.endswith('_all_s')},
        'speedup_vs_straightforward': {
            'forward': base['forward_s'] / ours['forward_s'],
            'gradient': base['gradient_s'] / ours['gradient_s'],
        },
        'speedup_vs_reference_figures': {
            k: REFERENCE_S[k] / ours[f'{k}_s'] for k in REFERENCE_S
        },
        'agreement': {
            'harmonic_max_abs_diff': float(np.max(np.abs(audio - audio_base))),
            'harmonic_peak_abs': peak,
            'harmonic_loss_ours': loss_ours, 'harmonic_loss_straightforward': loss_base,
            'harmonic_mag_loss_grad_rel_diff_amps_dist': [
                float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))
                for a, b in zip(grads_ours, grads_base, strict=True)],
        },
        'timings_all_s': {'ddsp_core': {k: v for k, v in ours.items() if k.endswith('_all_s')},
                          'straightforward': {k: v for k, v in base.items()
                                              if k.endswith('_all_s')}},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')


if __name__ == '__main__':
    main()
