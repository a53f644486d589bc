"""Fixtures for the trainer tests: the tiny config and small synthetic prepared datasets."""

from __future__ import annotations

import pytest

from trainer.config import load_preset


@pytest.fixture(scope='session')
def tiny_config():
    """The tiny preset with summaries off (tests that want them turn them on)."""
    return load_preset('tiny').with_overrides(['train.summary_every=0'])


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory, tiny_config):
    """A prepared-dataset dir with 8 tiny-layout examples in 2 shards (+ manifest.json)."""
    from trainer import testing

    directory = tmp_path_factory.mktemp('tiny_dataset')
    testing.write_dataset(directory, tiny_config.data, n_examples=8, n_shards=2, seed=0)
    return directory


@pytest.fixture(scope='session')
def one_batch_dataset(tmp_path_factory, tiny_config):
    """Exactly one batch of examples (batch_size of the tiny preset), one shard."""
    from trainer import testing

    directory = tmp_path_factory.mktemp('one_batch')
    testing.write_dataset(directory, tiny_config.data, n_examples=tiny_config.train.batch_size,
                          n_shards=1, seed=3)
    return directory


class RecordingTracker:
    """Stands in for trainer.tracking.Tracker: records calls; can raise at a given step."""

    def __init__(self, interrupt_at_step: int | None = None):
        self.metrics: list[tuple[int, dict]] = []
        self.calls: list[tuple] = []
        self.status = None
        self.interrupt_at_step = interrupt_at_step

    def start(self, params, tags, run_id=None, run_name=None):
        self.params, self.tags = params, tags
        return run_id or 'recorded-run'

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))
        if self.interrupt_at_step is not None and step >= self.interrupt_at_step:
            raise KeyboardInterrupt

    def end(self, status='FINISHED'):
        self.status = status

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def losses(self):
        return [m['total_loss'] for _, m in self.metrics]
