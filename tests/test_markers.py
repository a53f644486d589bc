"""The markers that split `make test` from `make test-fast` (tests/markers.py): the Makefile's
selections, the markers fixtures give, and the guards that fail unmarked work."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

from tests import markers
from tests.conftest import COLLECTED

MAKEFILE = Path(__file__).resolve().parents[1] / 'Makefile'


def _selection(target: str) -> str:
    """The ``-m`` expression of a Makefile target's pytest command."""
    recipe = re.search(rf'(?m)^{re.escape(target)}:.*\n((?:\t.*\n)+)', MAKEFILE.read_text())
    assert recipe, f'no target {target!r} in {MAKEFILE}'
    expression = re.search(r'pytest -m "([^"]+)"', recipe.group(1))
    assert expression, f'{target}: no pytest -m "..." in its recipe'
    return expression.group(1)


def _selected(expression: str, items) -> list[str]:
    compiled = Expression.compile(expression)

    def marked(item):
        return compiled.evaluate(lambda name, **kw: item.get_closest_marker(name) is not None)

    return [item.nodeid for item in items if marked(item)]


def _every_collected(request):
    items = request.config.stash[COLLECTED]
    assert request.node in items
    return items


def test_make_test_runs_every_collected_test_but_the_worker_env_ones(request):
    assert '-m' not in request.config.getini('addopts')  # no selection hidden in pyproject.toml
    items = _every_collected(request)
    assert _selected(_selection('test'), items) == [
        item.nodeid for item in items if item.get_closest_marker('worker_env') is None]


def test_make_test_fast_leaves_out_exactly_the_marked_tests(request):
    expression = _selection('test-fast')
    assert set(re.findall(r'not (\w+)', expression)) == set(markers.FAST_DESELECTS)
    items = _every_collected(request)
    assert _selected(expression, items) == [
        item.nodeid for item in items
        if not any(item.get_closest_marker(name) for name in markers.FAST_DESELECTS)]
    assert request.node.nodeid in _selected(expression, items)  # this test is a fast one


def test_every_marker_is_registered(request):
    registered = {line.split(':')[0] for line in request.config.getini('markers')}
    assert set(markers.FAST_DESELECTS) <= registered
    assert request.config.getoption('strict_markers') or '--strict-markers' in \
        request.config.getini('addopts')


@pytest.fixture
@markers.gives('converts', 'server')
def _gives_markers():
    return 'given'


def test_a_fixture_gives_its_markers_to_the_tests_that_use_it(request, _gives_markers):
    assert request.node.get_closest_marker('converts') is not None
    assert request.node.get_closest_marker('server') is not None
    assert request.node.get_closest_marker('trains') is None


@pytest.mark.parametrize('module, path, marker, what', markers.GUARDS,
                         ids=[f'{m}.{p}' for m, p, _, _ in markers.GUARDS])
def test_unmarked_work_fails_the_test_before_it_starts(module, path, marker, what):
    owner = importlib.import_module(module)
    for part in path.split('.'):
        owner = getattr(owner, part)
    assert hasattr(owner, 'unguarded'), f'{module}.{path} is not guarded'
    with pytest.raises(markers.UnmarkedWork, match=f"{what} but is not marked '{marker}'"):
        owner(object())


@pytest.mark.server
def test_marked_work_passes_the_guard():
    markers.require('server', 'starts an mlflow server')
    with pytest.raises(markers.UnmarkedWork, match="not marked 'trains'"):
        markers.require('trains', 'runs a training step')
