"""The project's import graph, read from the source (every ``import`` anywhere in a file, top
level or inside functions), for the structure tests."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('ddsp_core', 'pipelines', 'trainer')


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def is_module(name: str) -> bool:
    relative = pathlib.Path(*name.split('.'))
    return ((ROOT / relative).with_suffix('.py').is_file()
            or (ROOT / relative / '__init__.py').is_file())


def source_files(packages=PACKAGES):
    for package in packages:
        yield from sorted((ROOT / package).rglob('*.py'))


def imports(path: pathlib.Path):
    """Every module an import in the file names; ``from a.b import c`` names ``a.b.c`` when that
    is a module, else ``a.b``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named = [f'{node.module}.{alias.name}' for alias in node.names]
            modules = [name for name in named if is_module(name)]
            yield from modules
            if len(modules) < len(named):  # some names are attributes of node.module
                yield node.module
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f'{path}: relative import (the project imports absolutely)')


def graph(packages=PACKAGES):
    """module -> the project modules it imports (packages' __init__ included)."""
    result = {}
    for path in source_files(packages):
        name = module_name(path)
        result[name] = {dep for dep in imports(path)
                        if dep.split('.')[0] in PACKAGES and dep != name and is_module(dep)
                        and not name.startswith(dep + '.')}
    return result


def find_cycle(edges):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}

    def visit(name, path):
        state[name] = 'open'
        for dep in sorted(edges.get(name, ())):
            if state.get(dep) == 'open':
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep, path + [dep])
                if found:
                    return found
        state[name] = 'done'
        return None

    for name in sorted(edges):
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return None
