"""The model: typed configuration and presets (``config``), the fast GRU and MLP (``layers``),
the DDSP ``Autoencoder`` (``autoencoder``) and the model directory (``model_dir``: the names of its
files, its run info and manifest, and the lock that keeps one run per directory).
"""
