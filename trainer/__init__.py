"""trainer: the DDSP autoencoder, its typed configs, tf.data input, the tf.distribute training
loop with checkpoints (``ddsp-train``) and MLflow tracking.

Modules: ``config`` (presets, overrides, the data layout from the dataset), ``data`` (prepared
datasets, TFRecords, TFDS), ``layers`` (fast GRU and MLP), ``model`` (Autoencoder), ``strategy``
(tf.distribute by name), ``trainer`` (the pieces of a run: build, restore, step, save,
summaries), ``train`` (``train()`` and the ``ddsp-train`` CLI), ``lock`` (one run per model
directory), ``testing`` (synthetic datasets), ``tracking`` (MLflow with a local fallback),
``tracking_sync`` (copying a fallback store to the server, ``ddsp-sync``), ``artifacts`` (wav and
spectrogram files), ``inference`` (a trained model loaded back), ``metrics`` and ``evaluate``
(resynthesis metrics, ``ddsp-eval``'s evaluation), ``transfer`` / ``streaming``
(``ddsp-transfer``), ``export`` (``ddsp-export``: SavedModel, MLflow Model, DDSP-VST), ``sweep``
(a sweep's spec and trials) and ``compare`` (``ddsp-compare``). ``import trainer`` itself imports
none of them.
"""

__all__ = ['artifacts', 'compare', 'config', 'data', 'evaluate', 'export', 'inference', 'layers',
           'lock', 'metrics', 'model', 'strategy', 'streaming', 'sweep', 'testing', 'tracking',
           'tracking_sync', 'train', 'trainer', 'transfer']
