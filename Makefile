# Two entry points: `make run` (the walkthrough on the embedded default: SQLite in ./pkiq-data)
# and `make test` (lint + the whole suite on SQLite and PostgreSQL). Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" ./examples/walkthrough.sh

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: $(BIN)/.installed
	./bench/run

clean:
	rm -rf $(VENV) pkiq-data
