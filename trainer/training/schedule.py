"""The learning-rate schedule: the reference's exponential decay (smooth, not staircase:
``learning_rate * decay_rate ** (step / decay_steps)``, as ``ddsp.training.trainers.Trainer``
builds it), with an optional linear warm-up over the first ``train.warmup_steps`` steps.

Why a warm-up: Adam's first updates have about the learning rate's size in every weight, however
small the gradient, and the first gradients of the harmonic synthesiser all say "quieter". At
3e-4 the first steps (for seed 1 the very first: raw amplitude 0.12 to -6.86) threw the
decoder's raw harmonic amplitudes into ``exp_sigmoid``'s floor in four seeds of six
(docs/quality.md), where the gradient vanishes and the harmonic part can stay silent for good.
Keras has a warm-up only in ``CosineDecay``; the reference's decay is exponential, hence this.
Step ``s`` (0-based optimizer iteration) uses
``decay(s) * min(1, (s + 1) / warmup_steps)``.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package='ddsp_platform')
class WarmupExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``ExponentialDecay(learning_rate, decay_steps, decay_rate)`` (smooth) scaled by
    ``min(1, (step + 1) / warmup_steps)``; ``warmup_steps=0`` is the plain decay."""

    def __init__(self, learning_rate: float, decay_steps: int, decay_rate: float,
                 warmup_steps: int = 0):
        super().__init__()
        if warmup_steps < 0:
            raise ValueError(f'warmup_steps must be >= 0, got {warmup_steps}')
        self.learning_rate = float(learning_rate)
        self.decay_steps = int(decay_steps)
        self.decay_rate = float(decay_rate)
        self.warmup_steps = int(warmup_steps)
        self._decay = keras.optimizers.schedules.ExponentialDecay(
            self.learning_rate, decay_steps=self.decay_steps, decay_rate=self.decay_rate)

    def __call__(self, step):
        rate = self._decay(step)
        if not self.warmup_steps:
            return rate
        step = tf.cast(step, rate.dtype)
        return rate * tf.minimum(1.0, (step + 1.0) / float(self.warmup_steps))

    def get_config(self) -> dict:
        return {'learning_rate': self.learning_rate, 'decay_steps': self.decay_steps,
                'decay_rate': self.decay_rate, 'warmup_steps': self.warmup_steps}


def from_config(train_config) -> WarmupExponentialDecay:
    """The schedule a :class:`trainer.model.config.TrainConfig` asks for."""
    return WarmupExponentialDecay(train_config.learning_rate, train_config.decay_steps,
                                  train_config.decay_rate, train_config.warmup_steps)
