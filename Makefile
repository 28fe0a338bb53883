# Perkflow developer entry points. A fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck format serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_RUN)

## make demo: install, migrate ./var/demo.db, replay the demo day, then serve http://127.0.0.1:8000
demo: $(STAMP_RUN)
	mkdir -p var
	PERKFLOW_DATABASE_URL=$${PERKFLOW_DATABASE_URL:-sqlite:///./var/demo.db} $(BIN)/perkflow demo --reset

## make test: install the dev extras and run the whole suite (PostgreSQL too when PERKFLOW_TEST_POSTGRES_URL is set)
test: $(STAMP_DEV)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: $(STAMP_DEV)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

typecheck: $(STAMP_DEV)
	$(BIN)/mypy

serve: $(STAMP_RUN)
	$(BIN)/perkflow serve

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
