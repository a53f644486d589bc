"""ddsp_core: Differentiable Digital Signal Processing on TensorFlow 2 / Keras 3.

Keeps the reference DDSP library's public names, so `import ddsp_core as ddsp` runs code written
for it. Submodules are imported on first access, so importing the package is cheap:

- ``core``: the core DSP functions under the reference's names (a façade over ``dsp``);
- ``processors`` (the Processor base and groups), ``synths`` (harmonic, filtered noise,
  wavetable...), ``effects`` (reverbs, FIR filter, modulated delay), ``dags`` (DAGs of layers);
- ``spectral_ops`` (STFTs, loudness, power), ``losses`` (multi-scale spectral loss and others),
  ``f0`` (CREPE pitch tracking);
- ``records``: the prepared-dataset contract (layout, examples, manifest) shared by the pipelines
  and the trainer, and ``shards``: the shards checked against the manifest;
- ``runtime``: process set-up shared by the command-line tools (their opening, exit codes and
  error lines); ``audio_stream``: audio files
  decoded, mixed down, resampled and buffered block by block (prepare and transfer);
- ``analysis``: measures of rendered audio for the quality studies (RT60, tails after notes,
  spectral centroid, pitch accuracy per note);
- ``dsp``: the building blocks behind ``core``.
"""

import importlib

__version__ = '0.1.0'

_SUBMODULES = ('analysis', 'audio_stream', 'core', 'dags', 'effects', 'f0', 'losses', 'processors',
               'records', 'runtime', 'shards', 'spectral_ops', 'synths')
__all__ = list(_SUBMODULES)


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f'{__name__}.{name}')
        globals()[name] = module
        return module
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
