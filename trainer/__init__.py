"""trainer: everything after a dataset is prepared, in one sub-package per concern.

- ``model``: the typed configuration and presets (``config``), the fast GRU and MLP (``layers``),
  the ``Autoencoder`` (``autoencoder``) and the one-run-per-directory lock (``lock``).
- ``training``: prepared datasets as tf.data (``data``), tf.distribute by name (``strategy``), the
  pieces of a run: build, restore, step, save (``loop``), and ``train()`` with the ``ddsp-train``
  CLI (``train``).
- ``tracking``: MLflow with a local fallback store (``tracker``), copying a fallback store to the
  server, ``ddsp-sync`` (``sync``), and the wav and spectrogram files runs log (``artifacts``).
- ``serving``: a trained model loaded back (``inference``), chunked streaming synthesis
  (``streaming``), ``ddsp-transfer`` (``transfer``) and ``ddsp-export`` (``export``: SavedModel,
  MLflow Model, DDSP-VST).
- ``evaluation``: resynthesis metrics (``metrics``) and ``ddsp-eval``'s evaluation of a model
  (``evaluate``).
- ``experiments``: sweeps (``sweep``, the trial; ``sweep_spec``, ``sweep_study``, ``sweep_process``,
  ``sweep_report``) and ``ddsp-compare`` (``compare``).
- ``testing``: small synthetic datasets for tests and demos.

``import trainer`` itself imports none of them.
"""

__all__ = ['evaluation', 'experiments', 'model', 'serving', 'testing', 'tracking', 'training']
