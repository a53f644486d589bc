# The project's entry points. `make demo` and `make test` are all a newcomer needs; both create
# .venv and install everything (crepe included, see tools/install_crepe.sh) on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test test-fast lint bench bench-train bench-prepare clean

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml tools/install_crepe.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools<81" wheel
	bash tools/install_crepe.sh $(PY)
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

demo: venv
	$(PY) -m tools.demo --out $(DEMO_DIR)

test: venv
	bash tools/install_browser.sh
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(PY) benchmarks/bench_dsp.py

bench-train: venv
	$(PY) benchmarks/bench_train.py

bench-prepare: venv
	$(PY) benchmarks/bench_prepare.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache build *.egg-info
