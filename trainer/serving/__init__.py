"""Serving a trained model: loading it back (``inference``), chunked streaming synthesis
(``streaming``), timbre transfer (``transfer``, ``ddsp-transfer``: its steps, MLflow logging and
CLI; ``transfer_audio``: reading the input and writing the output; ``transfer_analysis``: the
input's features with CREPE overlapped; ``transfer_adjust``: the adjustment to the training data)
and export (``export``, the ``ddsp-export`` CLI, over ``saved_model``: the TensorFlow SavedModel,
``mlflow_model``: the MLflow pyfunc around it, and ``vst``: the DDSP-VST ``.tflite`` with its
metadata).
"""
