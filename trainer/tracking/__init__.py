"""Tracking: MLflow runs with a local fallback store (``tracker``), copying a fallback store to
the tracking server (``sync``, ``ddsp-sync``) and the audio and spectrogram files runs log
(``artifacts``).
"""
