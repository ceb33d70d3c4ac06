# headdb: the two README commands are `make demo` (set up, then run the main job) and
# `make test` (every test tier). Both create the virtual environment at .venv when missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.headdb-installed
DEMO_DB ?= demo.db

.PHONY: setup demo test test-fast browser bench clean

setup: $(STAMP)

# torch is installed first and exactly: torch==2.13.0 is the CPU build on this machine's
# disk; a bare `torch` requirement would pull a CUDA build and ~3 GB of nvidia wheels.
# A .venv of a Python older than pyproject's requires-python (a first `make demo` where python3
# is 3.10) is made anew, so that `make demo PYTHON=python3.11` then takes, not the same failure.
$(STAMP): pyproject.toml
	$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || $(PYTHON) -m venv $(VENV) --clear
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/headdb ingest $(DEMO_DB)
	$(BIN)/headdb summary $(DEMO_DB)
	$(BIN)/headdb classify $(DEMO_DB)

# Headless Chromium for the report test (Debian packages; needs root, as on CI).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DB) .pytest_cache .hypothesis *.egg-info
