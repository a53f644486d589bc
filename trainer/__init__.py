"""trainer: the DDSP autoencoder, its typed configs, tf.data input, the tf.distribute training
loop with checkpoints (``ddsp-train``) and MLflow tracking.

Modules: ``config`` (presets, overrides, the data layout from the dataset), ``data`` (prepared
datasets, TFRecords, TFDS), ``layers`` (fast GRU and MLP), ``model`` (Autoencoder), ``strategy``
(tf.distribute by name), ``trainer`` (the pieces of a run: build, restore, step, save,
summaries), ``train`` (``train()`` and the ``ddsp-train`` CLI), ``lock`` (one run per model
directory), ``testing`` (synthetic datasets), ``tracking`` (MLflow with a local fallback),
``tracking_sync`` (copying a fallback store to the server, ``ddsp-sync``), ``artifacts`` (wav and
spectrogram files). ``import trainer`` itself imports none of them.
"""

__all__ = ['artifacts', 'config', 'data', 'layers', 'lock', 'model', 'strategy', 'testing',
           'tracking', 'tracking_sync', 'train', 'trainer']
