"""trainer: the DDSP autoencoder, its typed configs, tf.data pipelines, the tf.distribute training
loop with checkpoints (``ddsp-train``) and MLflow tracking.

Modules: ``config`` (presets, overrides), ``data`` (TFRecord / TFDS input), ``model``
(Autoencoder), ``strategy`` (tf.distribute by name), ``train`` (``train()`` and the CLI),
``testing`` (synthetic datasets), ``tracking`` / ``artifacts`` (MLflow).
Submodules are imported on first use, so ``import trainer`` does not load TensorFlow.
"""

__all__ = ['artifacts', 'config', 'data', 'model', 'strategy', 'testing', 'tracking', 'train']
