# Two entry points for newcomers and CI: `make demo` and `make test`.
# Each does its own setup from nothing (venv, pinned installs, package install) and is
# safe to rerun: the venv is rebuilt only when the pins or the package metadata change.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export ATWU_CACHE_DIR ?= $(CURDIR)/.cache/atwu

.PHONY: setup demo test test-fast test-slow bench clean

setup: $(STAMP)

# torch is installed first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): requirements/ci.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/ci.txt -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/atwu-demo --output-dir outputs/demo

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

bench: setup
	$(BIN)/python benchmarks/step_time.py

clean:
	rm -rf $(VENV) .cache outputs
