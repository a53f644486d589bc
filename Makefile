# The project's entry points. `make demo` and `make test` are all a newcomer needs; both create
# .venv and install everything (crepe included, see tools/install_crepe.sh) on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=
LOCK := requirements.lock
# How crepe is installed (CI passes ../shared/crepe/install-offline.sh).
CREPE_INSTALL ?= bash tools/install_crepe.sh
LOCK_EXTRAS := --extra test --extra gcp --extra postgres

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv lock demo test test-fast test-workers worker-packages lint bench bench-train bench-prepare quality-data clean

venv: $(STAMP)

# The development set-up installs exactly the versions in requirements.lock (with their hashes),
# then crepe (whose own requirements are in the lock), then this project without resolving again.
$(STAMP): setup.py pyproject.toml $(LOCK) tools/install_crepe.sh tools/lock-constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools<81" wheel
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	sed -n 's/^\([A-Za-z0-9][^ ]*==[^ ]*\).*/\1/p' $(LOCK) > $(VENV)/lock-constraints.txt
	PIP_CONSTRAINT=$(VENV)/lock-constraints.txt $(CREPE_INSTALL) $(PY)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	@touch $(STAMP)

# Re-resolve the newest versions setup.py's ranges allow (Python 3.11, Linux x86-64) into the
# lock; run `make test` afterwards. UPGRADE=0 keeps the pins that still satisfy setup.py.
# (Needs only uv, not an up-to-date .venv: setup.py may name a package the lock lacks yet.)
lock:
	@test -x $(VENV)/bin/uv || { test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install -q "uv>=0.5,<1"; }
	$(VENV)/bin/uv pip compile setup.py $(LOCK_EXTRAS) --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-emit-package crepe -c tools/lock-constraints.txt \
	  $(if $(filter 0,$(UPGRADE)),,--upgrade) --custom-compile-command "make lock" -o $(LOCK)

demo: venv
	$(PY) -m tools.demo --out $(DEMO_DIR)

test: venv
	bash tools/install_browser.sh
	bash tools/install_postgres.sh
	bash tools/install_fluidsynth.sh
	$(PY) -m pytest -m "not worker_env" $(PYTEST_ARGS)

# Beam workers in a virtual environment of their own, made only from what a Dataflow job stages
# (tests/pipelines/test_worker_env.py). The environment holds TensorFlow: it is built once per
# set of locked versions (minutes) and kept under ~/.cache/ddsp-platform/worker-env.
test-workers: venv
	$(PY) -m pytest -m worker_env $(PYTEST_ARGS)

# What to stage for Dataflow workers (docs/scale.md): the workers' requirements, this project's
# sdist and a crepe wheel with its weights ($$CREPE_WEIGHTS_DIR, else the installed crepe's).
WORKER_PACKAGES ?= dist/worker
worker-packages: venv
	$(PY) tools/worker_packages.py build $(WORKER_PACKAGES)

# The library's unit behaviour in a few minutes: `make test` without the tests marked slow (end to
# end), trains (training steps), server (mlflow server, PostgreSQL, GCS emulator, browser) or
# converts (SavedModel/TFLite/MLflow model); tests/markers.py says how the markers are kept true.
# Measured (2026-12-07, 2-core AMD EPYC): 782 of `make test`'s
# 889 tests in 1 min 52 s wall (128 s CPU); the old selection (not slow: 786 tests) took 6 min
# 56 s there at load average 1.6-3.6. Now 803 of 913 (counted, not timed).
test-fast: venv
	bash tools/install_fluidsynth.sh
	$(PY) -m pytest -m "not slow and not worker_env and not trains and not server and not converts" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(PY) benchmarks/bench_dsp.py

bench-train: venv
	$(PY) benchmarks/bench_train.py

bench-prepare: venv
	$(PY) benchmarks/bench_prepare.py

# The quality studies' data (docs/quality.md): FluidSynth renders with their truth.
QUALITY_DATA ?= runs/quality_data
quality-data: venv
	bash tools/install_fluidsynth.sh
	$(PY) benchmarks/render_quality_data.py --out $(QUALITY_DATA)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache build *.egg-info
