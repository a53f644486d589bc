"""Serving a trained model: loading it back (``inference``), chunked streaming synthesis
(``streaming``), timbre transfer (``transfer``, ``ddsp-transfer``) and export (``export``, the
``ddsp-export`` CLI, over ``saved_model``: the TensorFlow SavedModel, ``mlflow_model``: the MLflow
pyfunc around it, and ``vst``: the DDSP-VST ``.tflite`` with its metadata).
"""
