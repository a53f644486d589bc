"""Every public name, argument name and default of the reference API exists in ddsp_core.

The listing in data/ddsp_api.md is the contract (a copy of the project's reference API file):
each `def` / `class` / method line there is parsed and compared with `inspect.signature`.
"""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

API = Path(__file__).parent / 'data' / 'ddsp_api.md'


def _sections():
    """Yields (module_name, code) for each ```python block under a '## ddsp_core.x' heading."""
    text = API.read_text()
    for match in re.finditer(r'## (ddsp_core\.\w+)\n```python\n(.*?)```', text, re.S):
        yield match.group(1), match.group(2)


def _entries():
    entries = []
    for module_name, code in _sections():
        owner = None
        for line in code.splitlines():
            stripped = line.strip()
            if line.startswith('class '):
                owner = re.match(r'class (\w+)', line).group(1)
                entries.append((module_name, owner, None, None))
            elif stripped.startswith('def '):
                source = stripped + ': pass'
                source = source.replace('tfkl.Layer', 'object')
                fn = ast.parse(source).body[0]
                if line.startswith('def '):
                    owner = None
                entries.append((module_name, owner, fn.name, fn.args))
            elif re.match(r'^[A-Z_]+ = ', line):
                entries.append((module_name, None, line.split(' = ')[0], 'constant'))
    return entries


ENTRIES = _entries()


def _expected_params(args: ast.arguments):
    names = [a.arg for a in args.args]
    defaults = [None] * (len(args.args) - len(args.defaults)) + list(args.defaults)
    params = []
    for name, default in zip(names, defaults, strict=True):
        if name == 'self':
            continue
        params.append((name, default))
    return params, args.vararg is not None, args.kwarg is not None


def test_listing_was_parsed():
    assert len(ENTRIES) > 120
    assert {m for m, *_ in ENTRIES} == {
        'ddsp_core.core', 'ddsp_core.synths', 'ddsp_core.effects', 'ddsp_core.processors',
        'ddsp_core.spectral_ops', 'ddsp_core.losses'}


@pytest.mark.parametrize('module_name,owner,name,args', ENTRIES,
                         ids=['.'.join(filter(None, (m.split('.')[1], o, n)))
                              for m, o, n, _ in ENTRIES])
def test_reference_name_and_signature(module_name, owner, name, args):
    module = importlib.import_module(module_name)
    target = module
    if owner is not None:
        assert hasattr(module, owner), f'{module_name}.{owner} is missing'
        target = getattr(module, owner)
    if name is None:
        return
    assert hasattr(target, name), f"{module_name}.{owner or ''}.{name} is missing"
    obj = getattr(target, name)
    if args == 'constant':
        assert isinstance(obj, (int, float))
        return
    signature = inspect.signature(obj)
    actual = list(signature.parameters.values())
    if actual and actual[0].name == 'self':
        actual = actual[1:]
    expected, has_varargs, has_kwargs = _expected_params(args)
    positional = [p for p in actual if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    # The reference's parameters come first, in order, with the same names and defaults;
    # ddsp_core may add keyword parameters after them.
    assert [p.name for p in positional[:len(expected)]] == [n for n, _ in expected]
    for param, (pname, default) in zip(positional, expected, strict=False):
        if default is None:
            continue
        want = ast.unparse(default)
        if param.default is inspect.Parameter.empty:
            pytest.fail(f'{name}({pname}) has no default; reference has {want}')
        got = param.default
        if callable(got):
            assert want.split('.')[-1] == got.__name__, f'{name}({pname}) default {got}'
        else:
            expect = (getattr(module, want) if isinstance(default, ast.Name)
                      else ast.literal_eval(want))
            assert got == expect, f'{name}({pname}): {got!r} != {want}'
    for extra in positional[len(expected):]:
        assert extra.default is not inspect.Parameter.empty or extra.kind == extra.KEYWORD_ONLY, (
            f'{name}: extra parameter {extra.name} must have a default')
    kinds = {p.kind for p in actual}
    if has_varargs:
        assert inspect.Parameter.VAR_POSITIONAL in kinds
    if has_kwargs:
        assert inspect.Parameter.VAR_KEYWORD in kinds
