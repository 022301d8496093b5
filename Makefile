# oncofed: every target creates .venv when it is missing and installs the pinned lock first.
# The fastest CPython 3.11 found (tools/fastest_python.py) unless PYTHON=... names one.
NO_PYTHON := no CPython 3.11 found: install one, or pass PYTHON=/path/to/python3.11
PYTHON ?= $(or $(shell python3 tools/fastest_python.py),$(error $(NO_PYTHON)))
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check bench bench-peers docs install clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/oncofed demo

check: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy src

test: check
	$(BIN)/pytest -q -n 2 --dist loadfile

docs: $(STAMP)
	$(BIN)/python -m oncofed.cdm.reference docs/data-model.md
	$(BIN)/python -m oncofed.wire.reference docs/spec-reference.md
	$(BIN)/python -m oncofed.orchestrator.reference docs/operations.md

bench: $(STAMP)
	$(BIN)/python bench/cdm_import.py
	$(BIN)/python bench/run.py
	$(BIN)/python bench/many_sites.py
	$(BIN)/python bench/edge_task.py
	$(BIN)/python bench/hot_routes.py
	$(BIN)/python bench/cli_startup.py
	$(BIN)/python bench/edge_memory.py
	$(BIN)/python bench/private_analyses.py
	$(BIN)/python bench/membership.py

# Flower, for bench/peers.py only: a separate environment, never a dependency of oncofed.
# torch 2.13.0 is the CPU wheel already on disk (any other version would download CUDA).
FLOWER_VENV := bench/.venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.installed

$(FLOWER_STAMP): $(STAMP)
	test -x $(FLOWER_VENV)/bin/python || \
		$$($(BIN)/python -c 'import sys; print(sys._base_executable)') -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/pip install --quiet --disable-pip-version-check \
		'flwr[simulation]==1.42.*' torch==2.13.0 scikit-learn numpy
	touch $(FLOWER_STAMP)

bench-peers: $(STAMP) $(FLOWER_STAMP)
	$(BIN)/python bench/peers.py

clean:
	rm -rf $(VENV) $(FLOWER_VENV) build src/*.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis
