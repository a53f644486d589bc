"""Directed acyclic graphs (DAGs) of Keras layers, run in order over a growing dict of tensors.

A DAG is a list of nodes, run first to last. Each node names a module and the keys of its
inputs, in one of three forms:

```python
(module, ['input_key', ...])                      # tuple or list of length 2
(module, ['input_key', ...], ['output_key', ...])  # tuple or list of length 3
{'module': module, 'inputs': ['input_key', ...], 'outputs': ['output_key', ...]}  # 'outputs'
                                                                                  # optional
```

- `module` is a `keras.layers.Layer` (or any callable), or a string naming one of the modules
  passed to the `DAGLayer` as keyword arguments (`DAGLayer(dag, harmonic=Harmonic())` lets a
  node say `('harmonic', [...])`).
- Input keys are looked up in the outputs dict, which starts as the inputs (each at the top
  level, and all of them again under `'inputs'`, so `'f0_hz'` and `'inputs/f0_hz'` are the same
  tensor) and gains an entry per node under the module's `name`. Nested keys use '/':
  `'harmonic/signal'` is `outputs['harmonic']['signal']`. A single string is accepted as a
  one-key list.
- How a module is called depends on what it is (duck typing, as the reference does): a
  processor (it has `get_controls` and `get_signal`) is called with `return_outputs_dict=True`
  and so stores `{'signal': ..., 'controls': {...}}` (keys `'harmonic/signal'`,
  `'harmonic/controls/amplitudes'`); a loss (it has `get_losses_dict`) stores
  `get_losses_dict(...)`, `{loss name: scalar}`; anything else is called plainly.
- A node's result is stored under `outputs[module.name]`: a dict result as it is (so later nodes
  can reach inside it); with output keys, a tensor (one key) or a tuple/list (one key per item)
  becomes `{output_key: value}`; otherwise the result itself. The last node's stored result is
  also `outputs['out']` (so `'out/signal'` is a processor DAG's final signal).

The DAG is validated when the layer is built, so a malformed node, an unknown module name, two
modules with the same name or a module named after a reserved key ('inputs', 'out') fail at
construction with an error naming the node.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Text, Tuple, Union

import keras
import tensorflow as tf

from ddsp_core import core

TensorDict = Dict[Text, Any]
Module = Union[keras.layers.Layer, Callable, Text]
DAGNode = Union[Tuple, List, Dict[Text, Any]]
DAG = Sequence[DAGNode]

__all__ = ['DAG', 'DAGLayer', 'DAGNode', 'RESERVED_KEYS', 'TensorDict', 'format_keys',
           'is_loss', 'is_processor', 'parse_dag_node']

# Keys of the outputs dict that DAGLayer fills itself: the inputs, and the last node's outputs.
INPUTS_KEY = 'inputs'
OUT_KEY = 'out'
RESERVED_KEYS = (INPUTS_KEY, OUT_KEY)


def is_processor(module: Any) -> bool:
    """Whether a DAG calls `module` as a processor (it has `get_controls` and `get_signal`)."""
    return hasattr(module, 'get_controls') and hasattr(module, 'get_signal')


def is_loss(module: Any) -> bool:
    """Whether a DAG calls `module` as a loss (it has `get_losses_dict`)."""
    return hasattr(module, 'get_losses_dict')


def format_keys(keys: Union[Text, Sequence[Text], None], what: Text, node_index: int) -> List[str]:
    """Validates a node's input or output keys and returns them as a list of strings.

    Args:
      keys: A key, a list/tuple of keys, or None (no keys).
      what: 'inputs' or 'outputs', for the error message.
      node_index: Position of the node in the DAG, for the error message.
    """
    if keys is None:
        return []
    if isinstance(keys, str):
        return [keys]
    if not isinstance(keys, (list, tuple)):
        raise TypeError(f'DAG node {node_index}: {what} must be a list of string keys, got '
                        f'{type(keys).__name__} {keys!r}.')
    for key in keys:
        if not isinstance(key, str) or not key:
            raise TypeError(f'DAG node {node_index}: every key in {what} must be a non-empty '
                            f'string, got {key!r} in {list(keys)!r}.')
    return list(keys)


def parse_dag_node(node: DAGNode, node_index: int = 0) -> Tuple[Module, List[str], List[str]]:
    """Splits a DAG node into (module, input_keys, output_keys).

    Args:
      node: `(module, inputs)`, `(module, inputs, outputs)` or
        `{'module': ..., 'inputs': [...], 'outputs': [...]}` (see the module docstring).
      node_index: Position of the node in the DAG, for error messages.

    Returns:
      The module (still possibly a string name), the input keys and the output keys (empty
      when not given).
    """
    if isinstance(node, dict):
        unknown = set(node) - {'module', 'inputs', 'outputs'}
        if unknown or 'module' not in node or 'inputs' not in node:
            raise ValueError(f"DAG node {node_index}: a dict node needs keys 'module' and "
                             f"'inputs' (and optionally 'outputs'), got keys {sorted(node)}.")
        module, inputs, outputs = node['module'], node['inputs'], node.get('outputs')
    elif isinstance(node, (list, tuple)) and len(node) in (2, 3):
        module, inputs = node[0], node[1]
        outputs = node[2] if len(node) == 3 else None
    else:
        raise ValueError(f"DAG node {node_index}: expected (module, [input keys]) or "
                         f"(module, [input keys], [output keys]) or a dict with 'module' and "
                         f"'inputs', got {node!r}.")
    return (module, format_keys(inputs, 'inputs', node_index),
            format_keys(outputs, 'outputs', node_index))


def _module_name(module: Any) -> str:
    """Name under which a module's outputs are stored."""
    name = getattr(module, 'name', None)
    if isinstance(name, str) and name:
        return name
    return getattr(module, '__name__', type(module).__name__)


class DAGLayer(keras.layers.Layer):
    """A Keras layer that runs a DAG of modules (see the module docstring for the DAG format).

    The modules are tracked as sub-layers, so their variables appear in this layer's (and any
    enclosing model's) `trainable_variables` and checkpoints.
    """

    def __init__(self, dag: DAG, **kwarg_modules):
        """Builds the DAG.

        Args:
          dag: A list of nodes (see the module docstring).
          **kwarg_modules: Modules that nodes may name by string. Keys that are not modules
            (`name`, `trainable`, `dtype`) are passed to `keras.layers.Layer`.
        """
        layer_kwargs = {k: kwarg_modules.pop(k) for k in ('name', 'trainable', 'dtype')
                        if k in kwarg_modules}
        super().__init__(**layer_kwargs)
        if isinstance(dag, (str, bytes, dict)) or not isinstance(dag, (list, tuple)):
            raise TypeError(f'{type(self).__name__}: dag must be a list of nodes, got '
                            f'{type(dag).__name__}.')
        if not dag:
            raise ValueError(f'{type(self).__name__}: dag is empty; give at least one node.')
        for key, module in kwarg_modules.items():
            if not callable(module):
                raise TypeError(f'{type(self).__name__}: keyword module {key!r} must be a Keras '
                                f'layer or callable, got {type(module).__name__}.')

        nodes = []
        names = {}
        for index, node in enumerate(dag):
            module, input_keys, output_keys = parse_dag_node(node, index)
            if isinstance(module, str):
                if module not in kwarg_modules:
                    raise ValueError(f'DAG node {index}: module {module!r} is a string but no '
                                     f'module of that name was passed as a keyword argument '
                                     f'(got {sorted(kwarg_modules)}).')
                module = kwarg_modules[module]
            if not callable(module):
                raise TypeError(f'DAG node {index}: module must be a Keras layer, a callable or '
                                f'the name of a keyword module, got {type(module).__name__} '
                                f'{module!r}.')
            if not input_keys:
                raise ValueError(f'DAG node {index} ({_module_name(module)!r}) has no input keys.')
            name = _module_name(module)
            if name in RESERVED_KEYS:
                raise ValueError(f"DAG node {index}: module name {name!r} is reserved (the "
                                 f"outputs dict keeps the inputs under {INPUTS_KEY!r} and the "
                                 f"last node's outputs under {OUT_KEY!r}); rename the module.")
            if name in names:
                raise ValueError(f'DAG node {index}: module name {name!r} is already used by '
                                 f'node {names[name]}; outputs are stored by module name, so '
                                 f'give each module a distinct `name`.')
            names[name] = index
            nodes.append((module, name, input_keys, output_keys))

        # Plain Python containers of (module, keys) tuples are not tracked by Keras; keep the
        # layers in a list attribute so that Keras tracks their variables.
        self._dag_nodes = tuple(nodes)
        self.dag_modules = [m for m, _, _, _ in nodes if isinstance(m, keras.layers.Layer)]

    @property
    def modules(self) -> List[Any]:
        """The DAG's modules, in node order."""
        return [module for module, _, _, _ in self._dag_nodes]

    @property
    def module_names(self) -> List[str]:
        """Names under which each node's outputs are stored, in node order."""
        return [name for _, name, _, _ in self._dag_nodes]

    @property
    def dag(self) -> List[Tuple[Any, List[str], List[str]]]:
        """The resolved DAG as (module, input_keys, output_keys) tuples."""
        return [(m, list(i), list(o)) for m, _, i, o in self._dag_nodes]

    def __call__(self, inputs, *args, **kwargs):
        # Keras rejects nested arguments that mix tensors and Python numbers; convert the
        # numbers (e.g. a constant control in the inputs dict) to tensors first.
        if isinstance(inputs, dict):
            inputs = _numbers_to_tensors(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def build(self, inputs_shape=None):
        """Nothing to build here; each module builds itself on its first call."""
        del inputs_shape

    def call_module(self, module: Any, *inputs, **kwargs):
        """Calls one node's module: a processor with `return_outputs_dict=True`, a loss through
        `get_losses_dict`, anything else plainly (see the module docstring)."""
        if is_processor(module):
            return module(*inputs, return_outputs_dict=True, **kwargs)
        if is_loss(module):
            return module.get_losses_dict(*inputs, **kwargs)
        return module(*inputs, **kwargs)

    def run_dag(self, inputs: TensorDict, verbose: bool = False, **kwargs) -> TensorDict:
        """Runs every node in order.

        Args:
          inputs: Dict of tensors (may be nested) that the first nodes read.
          verbose: Log each node's input and output shapes.
          **kwargs: Passed to every module call.

        Returns:
          A new dict: the inputs (also under 'inputs'), for each node `outputs[module name]`
          (see the module docstring for how results are stored), and the last node's entry
          again under 'out'.
        """
        if not isinstance(inputs, dict):
            raise TypeError(f'{type(self).__name__} ({self.name!r}): inputs must be a dict of '
                            f'tensors keyed by name, got {type(inputs).__name__}.')
        outputs = {INPUTS_KEY: inputs}
        outputs.update(inputs)
        for index, (module, name, input_keys, output_keys) in enumerate(self._dag_nodes):
            if name in inputs:
                raise ValueError(f"{type(self).__name__} ({self.name!r}): input key {name!r} "
                                 f"clashes with the name of DAG node {index}'s module.")
            values = []
            for key in input_keys:
                try:
                    values.append(core.nested_lookup(key, outputs))
                except KeyError as error:
                    raise KeyError(f'{type(self).__name__} ({self.name!r}), DAG node {index} '
                                   f'({name!r}): {error.args[0]}') from None
            result = self.call_module(module, *values, **kwargs)
            outputs[name] = _store_result(result, output_keys, name, index)
            if verbose:
                print(f'DAG node {index} {name!r}: inputs {input_keys} -> '
                      f'{_shapes(outputs[name])}')
        outputs[OUT_KEY] = outputs[name]
        return outputs

    def call(self, inputs: TensorDict, **kwargs) -> TensorDict:
        """Runs the DAG and returns the outputs dict (see `run_dag`)."""
        return self.run_dag(inputs, **kwargs)


def _numbers_to_tensors(structure):
    if isinstance(structure, dict):
        return {k: _numbers_to_tensors(v) for k, v in structure.items()}
    if isinstance(structure, bool):
        return structure
    if isinstance(structure, (int, float)):
        return tf.convert_to_tensor(structure, dtype=tf.float32)
    return structure


def _store_result(result: Any, output_keys: List[str], name: str, index: int) -> Any:
    if isinstance(result, dict):
        if output_keys:
            missing = [k for k in output_keys if k not in result]
            if missing:
                raise KeyError(f"DAG node {index} ({name!r}): output keys {missing} are not in "
                               f"the module's output dict (keys {sorted(result)}).")
            return {k: result[k] for k in output_keys}
        return result
    if not output_keys:
        return result
    if isinstance(result, (list, tuple)):
        if len(result) != len(output_keys):
            raise ValueError(f'DAG node {index} ({name!r}): the module returned {len(result)} '
                             f'values but {len(output_keys)} output keys were given '
                             f'({output_keys}).')
        return dict(zip(output_keys, result, strict=True))
    if len(output_keys) != 1:
        raise ValueError(f'DAG node {index} ({name!r}): the module returned one value but '
                         f'{len(output_keys)} output keys were given ({output_keys}).')
    return {output_keys[0]: result}


def _shapes(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shapes(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shapes(v) for v in value]
    return tuple(value.shape) if hasattr(value, 'shape') else type(value).__name__
