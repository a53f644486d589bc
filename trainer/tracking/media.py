"""What a run logs besides metrics: audio, spectrogram figures, datasets, JSON and files.

:class:`RunMedia` is a mixin of :class:`trainer.tracking.tracker.Tracker`: every method goes
through the tracker's ``_call(op, what)``, so it lands on the tracking server or, while that is
down, in the local fallback store.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trainer.tracking import artifacts
from trainer.tracking.store import check_artifact_name, check_step, is_store_unavailable

logger = logging.getLogger(__name__)

__all__ = ['RunMedia']



class RunMedia:
    """Artifact and input logging for :class:`~trainer.tracking.tracker.Tracker` (see the module
    docstring); the host class provides ``_call``."""

    def log_audio(self, name: str, audio: np.ndarray, sample_rate: int, step: int,
                  artifact_dir: str | None = None) -> None:
        """Log a 16-bit PCM WAV artifact ``<artifact_dir>/<name>.wav``.

        Args:
            name: File stem (``.wav`` added if missing); no path separators.
            audio: float32 samples, shape [n_samples] or [1, n_samples], amplitude in [-1, 1].
            sample_rate: Sample rate in Hz.
            step: Training step (integer).
            artifact_dir: Artifact folder (default ``audio/step_XXXXXX``; ``'.'``: the root).
        """
        filename = check_artifact_name(name, '.wav')
        step = check_step(step)
        folder = artifact_dir or f'audio/step_{step:06d}'
        with tempfile.TemporaryDirectory(prefix='ddsp-tracker-') as tmp:
            local = artifacts.write_wav(Path(tmp) / filename, audio, sample_rate)
            self._log_artifact_file(local, None if folder == '.' else folder,
                                    f'log_audio {filename}')

    def log_spectrogram_comparison(
        self,
        name: str,
        original: np.ndarray,
        resynthesis: np.ndarray,
        sample_rate: int,
        step: int,
        artifact_dir: str | None = None,
    ) -> None:
        """Log a PNG artifact ``<artifact_dir>/<name>.png`` with the original's and the
        resynthesis' log-magnitude spectrograms stacked (time in s, frequency in Hz).

        Args:
            name: File stem (``.png`` added if missing); no path separators.
            original: float32 samples, shape [n_samples] or [1, n_samples].
            resynthesis: float32 samples, shape [n_samples'] or [1, n_samples'].
            sample_rate: Sample rate in Hz of both.
            step: Training step (integer).
            artifact_dir: Artifact folder (default ``plots/step_XXXXXX``; ``'.'``: the root).
        """
        filename = check_artifact_name(name, '.png')
        step = check_step(step)
        figure = artifacts.spectrogram_comparison_figure(
            original, resynthesis, sample_rate, title=f'{filename[:-4]} — step {step}')
        folder = artifact_dir or f'plots/step_{step:06d}'
        path = filename if folder == '.' else f'{folder}/{filename}'
        self._call(lambda client, run_id: client.log_figure(run_id, figure, path),
                   f'log_spectrogram_comparison {filename}')

    def log_dataset(self, name: str, uri: str, digest: str, context: str = 'training',
                    schema: Mapping[str, Any] | None = None,
                    profile: Mapping[str, Any] | None = None) -> None:
        """Record the data as an MLflow dataset input of the run (MLflow's Datasets).

        Args:
            name: the dataset's name (e.g. its directory's name).
            uri: where it is (local path or ``gs://...``).
            digest: its content fingerprint.
            context: how the run used it (``training``, ``evaluation``).
            schema: feature name -> shape.
            profile: counts worth showing (examples, hours...).
        """
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        scheme = uri.split('://', 1)[0] if '://' in uri else 'local'
        entity = Dataset(name=name, digest=str(digest)[:36], source_type=scheme,
                         source=json.dumps({'uri': uri}),
                         schema=json.dumps(dict(schema)) if schema else None,
                         profile=json.dumps(dict(profile)) if profile else None)
        entry = DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])

        def op(client, run_id):
            for attempt in range(3):
                try:
                    return client.log_inputs(run_id, datasets=[entry])
                except Exception as error:
                    # Runs logging the same new dataset at once race to create its row (the
                    # store answers with a UNIQUE-constraint error); once it exists, log again.
                    if attempt == 2 or 'UNIQUE' not in str(error).upper():
                        raise
                    time.sleep(0.2 * (attempt + 1))

        try:
            self._call(op, f'log_dataset {name}')
        except Exception as error:  # noqa: BLE001 - a missing dataset input must not stop training
            if is_store_unavailable(error):
                raise
            logger.warning('could not record the dataset %s as an MLflow input: %s', name,
                           str(error).splitlines()[0][:300])

    def log_dict(self, payload: Mapping[str, Any], artifact_file: str) -> None:
        """Log a JSON (or YAML, by extension) artifact."""
        self._call(lambda client, run_id: client.log_dict(run_id, dict(payload), artifact_file),
                   f'log_dict {artifact_file}')

    def log_file(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log one local file as an artifact (under ``artifact_path``, default the root)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'log_file: {path} is not an existing file')
        self._log_artifact_file(path, artifact_path, f'log_file {path}')

    def log_dir(self, path: str | os.PathLike, artifact_path: str) -> None:
        """Log a local directory's contents (recursively) as artifacts under ``artifact_path``."""
        path = Path(path)
        if not path.is_dir():
            raise NotADirectoryError(f'log_dir: {path} is not an existing directory')
        self._call(lambda client, run_id: client.log_artifacts(run_id, str(path), artifact_path),
                   f'log_dir {path}')

    def _log_artifact_file(self, local: Path, artifact_path: str | None, what: str) -> None:
        self._call(lambda client, run_id: client.log_artifact(run_id, str(local), artifact_path),
                   what)
