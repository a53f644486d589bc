"""Fixtures for the trainer tests: the tiny config and small synthetic prepared datasets."""

from __future__ import annotations

import pytest

from ddsp_core import records
from trainer.model.config import load_preset, resolve_data

#: The layout of the synthetic datasets: 1 s records at 16 kHz / 250 fps, so the tiny preset
#: trains on random 0.5 s crops of them.
TINY_LAYOUT = records.Layout(16000, 250, 1.0)


@pytest.fixture(scope='session')
def tiny_layout():
    return TINY_LAYOUT


@pytest.fixture(scope='session')
def tiny_config():
    """The tiny preset with summaries off (tests that want them turn them on)."""
    return load_preset('tiny').with_overrides(['train.summary_every=0'])


@pytest.fixture(scope='session')
def tiny_resolved(tiny_config):
    """The tiny config with its data layout filled from TINY_LAYOUT."""
    return resolve_data(tiny_config, TINY_LAYOUT, 'test layout')


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory):
    """A prepared-dataset dir with 8 one-second examples in 2 shards (+ manifest.json)."""
    from trainer import testing

    directory = tmp_path_factory.mktemp('tiny_dataset')
    testing.write_dataset(directory, TINY_LAYOUT, n_examples=8, n_shards=2, seed=0)
    return directory


@pytest.fixture(scope='session')
def one_batch_dataset(tmp_path_factory, tiny_config):
    """Exactly one batch of 0.5 s examples (batch_size of the tiny preset), one shard: no crops,
    so every step sees the same batch."""
    from trainer import testing

    directory = tmp_path_factory.mktemp('one_batch')
    testing.write_dataset(directory, records.Layout(16000, 250, 0.5),
                          n_examples=tiny_config.train.batch_size, n_shards=1, seed=3)
    return directory


class RecordingTracker:
    """Stands in for trainer.tracking.tracker.Tracker: records calls; can raise at a given step.
    It has the Tracker's attributes (no server: no URI, no events) and its ``log_*`` methods
    (each call recorded in ``calls``)."""

    run_id = tracking_uri = None

    def __init__(self, interrupt_at_step: int | None = None):
        self.fallback_events: list[str] = []
        self.metrics: list[tuple[int, dict]] = []
        self.calls: list[tuple] = []
        self.status = None
        self.interrupt_at_step = interrupt_at_step

    def start(self, params, tags, run_id=None, run_name=None, description=None):
        self.params, self.tags, self.run_name = params, tags, run_name
        return run_id or 'recorded-run'

    def logged_through(self, key):
        return max((s for s, m in self.metrics if key in m), default=0)

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))
        if self.interrupt_at_step is not None and step >= self.interrupt_at_step:
            raise KeyboardInterrupt

    def end(self, status='FINISHED'):
        self.status = status

    def _record(name):
        def record(self, *args, **kwargs):
            self.calls.append((name, args, kwargs))
        return record

    log_audio = _record('log_audio')
    log_spectrogram_comparison = _record('log_spectrogram_comparison')
    log_file = _record('log_file')
    log_dir = _record('log_dir')
    log_dict = _record('log_dict')
    log_dataset = _record('log_dataset')

    def losses(self):
        return [m['total_loss'] for _, m in self.metrics]
