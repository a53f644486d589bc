"""The learning-rate schedule: warm-up, then the reference's exponential decay."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from trainer.model.config import load_preset
from trainer.training import schedule


def test_without_warmup_it_is_the_references_smooth_exponential_decay():
    plain = schedule.WarmupExponentialDecay(3e-4, decay_steps=10, decay_rate=0.5)
    # ddsp.training.trainers.Trainer: ExponentialDecay(lr, decay_steps, decay_rate), no staircase
    keras_decay = keras.optimizers.schedules.ExponentialDecay(3e-4, 10, 0.5)
    steps = [0, 1, 5, 9, 10, 19, 20, 35]
    assert [float(plain(s)) for s in steps] == pytest.approx(
        [float(keras_decay(s)) for s in steps])
    assert [float(plain(s)) for s in (0, 5, 10, 20)] == pytest.approx(
        [3e-4, 3e-4 / 2 ** 0.5, 1.5e-4, 7.5e-5])


def test_warmup_is_linear_from_one_step_and_multiplies_the_decay():
    warm = schedule.WarmupExponentialDecay(1e-3, decay_steps=6, decay_rate=0.5, warmup_steps=8)
    steps = np.arange(14)
    rates = np.array([float(warm(s)) for s in steps])
    expected = 1e-3 * np.minimum(1, (steps + 1) / 8) * 0.5 ** (steps / 6)
    assert rates == pytest.approx(expected)
    assert rates[0] == pytest.approx(1e-3 / 8)
    assert rates[7] == pytest.approx(1e-3 * 0.5 ** (7 / 6))  # the ramp's end: the decay alone


def test_the_schedule_round_trips_through_keras_serialisation_and_follows_the_config():
    config = load_preset('tiny').with_overrides(['train.warmup_steps=50']).train
    made = schedule.from_config(config)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(made))
    assert isinstance(again, schedule.WarmupExponentialDecay)
    assert again.get_config() == {'learning_rate': config.learning_rate,
                                  'decay_steps': config.decay_steps,
                                  'decay_rate': config.decay_rate, 'warmup_steps': 50}
    assert float(again(24)) == pytest.approx(config.learning_rate / 2
                                             * config.decay_rate ** (24 / config.decay_steps))


def test_a_negative_warmup_is_refused():
    with pytest.raises(ValueError, match='warmup_steps'):
        schedule.WarmupExponentialDecay(1e-3, 10, 0.5, warmup_steps=-1)
