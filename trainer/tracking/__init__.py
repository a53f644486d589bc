"""Tracking: the MLflow store without a run (``store``: the URI, clients, experiments, our run
tags, links into the UI), one training run with a local fallback store (``tracker``), what a run
logs besides metrics (``media``: audio, spectrogram figures, datasets, files), copying a fallback
store to the tracking server (``sync``, ``ddsp-sync``) and the audio and spectrogram files
themselves (``artifacts``).
"""
