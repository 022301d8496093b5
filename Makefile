# oncofed: every target creates .venv when it is missing and installs the pinned lock first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check bench docs install clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/oncofed demo

check: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
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
	$(BIN)/python bench/private_analyses.py
	$(BIN)/python bench/membership.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis
