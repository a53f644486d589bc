"""A ddsp-export SavedModel as an MLflow Model in the trained model's run: a pyfunc logged as
code ("models from code"), so that loading it needs MLflow, NumPy and TensorFlow only.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from trainer.serving.saved_model import SEED_NAME, tensorflow

logger = logging.getLogger(__name__)

#: Name of the MLflow Model in the model's run (``runs:/RUN_ID/model``).
MLFLOW_MODEL_NAME = 'model'

# ================================================================================================
# MLflow Model
# ================================================================================================
#: The pyfunc's code, logged with the model ("models from code"), so that loading it needs
#: MLflow, NumPy and TensorFlow but nothing of this project.
PYFUNC_SOURCE = '''\
"""MLflow pyfunc around a ddsp-export SavedModel: frame-rate features -> audio."""

import mlflow
import numpy as np


class DDSPSynthesizer(mlflow.pyfunc.PythonModel):
    """predict({'f0_hz': [batch, n_frames], 'loudness_db' (or 'power_db'): [batch, n_frames]},
    params={'seed': 0}) -> {'audio': [batch, n_frames * hop], 'audio_dry': same} (float32; audio
    with the reverb, audio_dry without). A 1-D feature is one example; a DataFrame has one row
    per example with a list per feature."""

    # The inputs are checked against the logged signature (named float32 tensors), not against
    # type hints (MLflow's type hints cannot say "a dict of named arrays").
    _skip_type_hint_validation = True

    def load_context(self, context):
        import tensorflow as tf

        self._tf = tf
        self._model = tf.saved_model.load(context.artifacts['saved_model'])
        self._serve = self._model.signatures['serving_default']
        self._names = sorted(k for k in self._serve.structured_input_signature[1] if k != 'seed')

    def predict(self, context, model_input, params=None):
        tf = self._tf
        if hasattr(model_input, 'columns'):
            model_input = {k: np.stack([np.asarray(v, np.float32) for v in model_input[k]])
                           for k in model_input.columns}
        missing = [k for k in self._names if k not in model_input]
        if missing:
            raise ValueError(f'missing feature(s) {missing}; the model takes {self._names}')
        feeds = {}
        for name in self._names:
            x = np.asarray(model_input[name], np.float32)
            feeds[name] = tf.constant(x[np.newaxis] if x.ndim == 1 else x)
        seed = int((params or {}).get('seed', 0))
        out = self._serve(**feeds, seed=tf.constant(seed, tf.int64))
        return {k: v.numpy() for k, v in out.items()}


mlflow.models.set_model(DDSPSynthesizer())
'''


def _restore_run_status(client, run_id: str, status: str, end_time) -> None:
    if status == 'RUNNING':
        client.update_run(run_id, status='RUNNING')
    else:
        client.set_terminated(run_id, status=status, end_time=end_time)


def log_mlflow_model(saved_model: str | os.PathLike, info: dict, run_id: str,
                     tracking_uri: Optional[str], register: Optional[str] = None):
    """Log the SavedModel as an MLflow Model named ``model`` in the run (its status and end
    time are kept), optionally registered as ``register``. Returns MLflow's ``ModelInfo``."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    from trainer.tracking.store import make_client, resolve_tracking_uri

    tf = tensorflow()
    uri = resolve_tracking_uri(tracking_uri)
    client = make_client(uri)
    run = client.get_run(run_id)
    f32 = np.dtype('float32')
    signature = ModelSignature(
        inputs=Schema([TensorSpec(f32, (-1, -1), name) for name in info['features']]),
        outputs=Schema([TensorSpec(f32, (-1, -1), 'audio'), TensorSpec(f32, (-1, -1),
                                                                       'audio_dry')]),
        params=ParamSchema([ParamSpec(SEED_NAME, 'long', 0)]))
    n_frames = max(2, int(info['frame_rate']) // 10)
    example = {name: np.full((1, n_frames), 220.0 if name == 'f0_hz' else -30.0, np.float32)
               for name in info['features']}
    requirements = [f'tensorflow=={tf.__version__}', f'numpy=={np.__version__}',
                    f'mlflow=={mlflow.__version__}']
    # mlflow.pyfunc.log_model logs to the process-wide tracking URI: set it for this call and
    # put back exactly what was there (set_tracking_uri also exports MLFLOW_TRACKING_URI).
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous_global = tracking_utils._tracking_uri
    previous_env = os.environ.get('MLFLOW_TRACKING_URI')
    mlflow.set_tracking_uri(uri)
    try:
        with tempfile.TemporaryDirectory(prefix='ddsp-pyfunc-') as tmp:
            code = Path(tmp) / 'ddsp_synthesizer.py'
            code.write_text(PYFUNC_SOURCE)
            try:
                with mlflow.start_run(run_id=run_id):
                    model_info = mlflow.pyfunc.log_model(
                        name=MLFLOW_MODEL_NAME, python_model=str(code),
                        artifacts={'saved_model': str(saved_model)}, signature=signature,
                        input_example=(example, {SEED_NAME: 0}), pip_requirements=requirements,
                        registered_model_name=register, step=int(info['step']),
                        tags={'ddsp.format': 'saved_model', 'ddsp.step': str(info['step']),
                              'ddsp.features': ','.join(info['features'])})
            finally:
                _restore_run_status(client, run_id, run.info.status, run.info.end_time)
    finally:
        mlflow.set_tracking_uri(previous_global)
        if previous_env is None:
            os.environ.pop('MLFLOW_TRACKING_URI', None)
        else:
            os.environ['MLFLOW_TRACKING_URI'] = previous_env
    return model_info


# ================================================================================================
# DDSP-VST
# ================================================================================================
