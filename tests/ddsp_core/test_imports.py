"""The package's import structure: no cycles between ddsp_core modules, no upper layers."""

import ast
import pathlib
import subprocess
import sys

import ddsp_core

PACKAGE_DIR = pathlib.Path(ddsp_core.__file__).parent
FORBIDDEN = ('apache_beam', 'mlflow', 'trainer', 'pipelines')


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _is_module(name: str) -> bool:
    relative = pathlib.Path(*name.split('.')[1:])
    return ((PACKAGE_DIR / relative).with_suffix('.py').is_file()
            or (PACKAGE_DIR / relative / '__init__.py').is_file())


def _imports(path: pathlib.Path):
    """Every module an `import` anywhere in the file names (top level or inside functions)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:  # `from ddsp_core import core` names a module
                if _is_module(f'{node.module}.{alias.name}'):
                    yield f'{node.module}.{alias.name}'


def _graph():
    graph = {}
    for path in sorted(PACKAGE_DIR.rglob('*.py')):
        name = _module_name(path)
        graph[name] = {dep for dep in _imports(path)
                       if dep.startswith('ddsp_core.') and dep != name and _is_module(dep)}
    return graph


def test_no_import_cycles_between_ddsp_core_modules():
    graph = _graph()
    assert {'ddsp_core.f0', 'ddsp_core.spectral_ops', 'ddsp_core.dsp.framing'} <= set(graph)
    # f0 and spectral_ops used to import each other; the framing rules now live below both.
    assert 'ddsp_core.spectral_ops' not in graph['ddsp_core.f0']
    assert 'ddsp_core.dsp.framing' in graph['ddsp_core.f0']
    state = {}

    def visit(name, path):
        state[name] = 'open'
        for dep in sorted(graph.get(name, ())):
            assert state.get(dep) != 'open', f'import cycle: {" -> ".join(path + [dep])}'
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = 'done'

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_ddsp_core_imports_no_upper_layer():
    for path in sorted(PACKAGE_DIR.rglob('*.py')):
        for dep in _imports(path):
            assert dep.split('.')[0] not in FORBIDDEN, f'{path.name} imports {dep}'


def test_importing_f0_loads_neither_spectral_ops_nor_tensorflow():
    code = ('import sys, ddsp_core.f0; '
            'print(sorted(m for m in ("ddsp_core.spectral_ops", "tensorflow") '
            'if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE_DIR.parent)
    assert out.stdout.strip() == '[]'
    # And the public names stay where the reference has them.
    from ddsp_core import f0, spectral_ops
    assert spectral_ops.CREPE_SAMPLE_RATE == f0.CREPE_SAMPLE_RATE == 16000
    assert spectral_ops.CREPE_FRAME_SIZE == f0.CREPE_FRAME_SIZE == 1024
    assert spectral_ops.get_framed_lengths(64000, 1024, 64, 'center') == (1001, 65024)
