"""Serving a trained model: loading it back (``inference``), chunked streaming synthesis
(``streaming``), timbre transfer (``transfer``, ``ddsp-transfer``) and export (``export``,
``ddsp-export``: SavedModel, MLflow Model, DDSP-VST).
"""
