# make run   - install into .venv, migrate, add the demo shop if empty, serve http://127.0.0.1:5000
# make test  - install with the dev extras into .venv and run the whole test suite
# make lint  - formatting, lint, type checks and the import rules (docs/ARCHITECTURE.md)
# make bench - page load benchmark against a bare Quart app (needs wrk; see docs/PERFORMANCE.md)

PYTHON3 ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamps are newer than pyproject.toml while the installed packages match it.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint bench

$(BIN)/python:
	$(PYTHON3) -m venv $(VENV)

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(RUNTIME_STAMP)

run: $(RUNTIME_STAMP)
	$(BIN)/storefront db upgrade
	$(BIN)/storefront seed-demo --if-empty
	QUART_AUTH_COOKIE_SECURE=False $(BIN)/python run.py

test: $(DEV_STAMP)
	$(BIN)/python -m pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy storefront
	$(BIN)/lint-imports

bench: $(DEV_STAMP)
	$(BIN)/python bench/pages.py
