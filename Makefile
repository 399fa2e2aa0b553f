# Two commands for a fresh machine:  `make demo` (the quickstart)  and  `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The quickstart on the embedded defaults: trains, logs, registers with alias `champion`, prints the cards.
demo: $(STAMP)
	$(BIN)/python notebooks/run.py notebooks/01-quickstart.ipynb

# System packages the tests' real servers need (PostgreSQL, Prometheus), then lint and the whole suite.
test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

system-deps:
	bash scripts/install-system-deps.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/import_time.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
