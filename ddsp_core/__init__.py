"""ddsp_core: Differentiable Digital Signal Processing on TensorFlow 2 / Keras 3.

Keeps the reference DDSP library's public names, so `import ddsp_core as ddsp` runs code written
for it: `ddsp.core`, `ddsp.synths`, `ddsp.effects`, `ddsp.spectral_ops`, `ddsp.losses`,
`ddsp.processors`, `ddsp.dags`. Submodules are imported on first access, so importing the
package is cheap.
"""

import importlib

__version__ = '0.1.0'

_SUBMODULES = ('analysis', 'core', 'dags', 'effects', 'f0', 'losses', 'processors', 'records',
               'runtime', 'spectral_ops', 'synths')
__all__ = list(_SUBMODULES)


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f'{__name__}.{name}')
        globals()[name] = module
        return module
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
