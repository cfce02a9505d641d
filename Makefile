# Two entry points: `make run` (the service -- workers and beat -- on the embedded default:
# SQLite and a filesystem queue in ./pkiq-data) and `make test` (lint + the whole suite on
# SQLite, PostgreSQL and Redis). Both set up .venv first. `make demo` runs the walkthrough.
# run and demo use the same data dir and CA passphrase file, and print the two variables that
# make any later `pkiq` command use them too (`make env` prints them alone).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run demo env test bench clean

DATA := $${PKIQ_DATA_DIR:-$(CURDIR)/pkiq-data}
PASSFILE := $${PKIQ_CA_PASSPHRASE_FILE:-$${PKIQ_DATA_DIR:-$(CURDIR)/pkiq-data}/ca.pass}
PKIQ_ENV := PKIQ_DATA_DIR="$(DATA)" PKIQ_CA_PASSPHRASE_FILE="$(PASSFILE)"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed env
	$(PKIQ_ENV) $(BIN)/pkiq serve

demo: $(BIN)/.installed
	$(PKIQ_ENV) PATH="$(CURDIR)/$(BIN):$$PATH" ./examples/walkthrough.sh
	@$(MAKE) --no-print-directory env

env:
	@echo "# the pkiq commands that follow use this data dir and CA passphrase file once you run:"
	@echo "export $(PKIQ_ENV) PATH=\"$(CURDIR)/$(BIN):\$$PATH\""

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: $(BIN)/.installed
	./bench/run

clean:
	rm -rf $(VENV) pkiq-data
