"""The model: typed configuration and presets (``config``), the fast GRU and MLP (``layers``),
the DDSP ``Autoencoder`` (``autoencoder``) and the lock that keeps one run per model directory
(``lock``).
"""
