# Two entry points: `make run` (the service -- workers and beat -- on the embedded default:
# SQLite and a filesystem queue in ./pkiq-data) and `make test` (lint + the whole suite on
# SQLite, PostgreSQL and Redis). Both set up .venv first. `make demo` runs the walkthrough.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed
	PKIQ_DATA_DIR="$${PKIQ_DATA_DIR:-$(CURDIR)/pkiq-data}" \
	PKIQ_CA_PASSPHRASE_FILE="$${PKIQ_CA_PASSPHRASE_FILE:-$(CURDIR)/pkiq-data/ca.pass}" \
	$(BIN)/pkiq serve

demo: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" ./examples/walkthrough.sh

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: $(BIN)/.installed
	./bench/run

clean:
	rm -rf $(VENV) pkiq-data
