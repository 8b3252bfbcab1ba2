# The two commands of the README: `make demo` runs the product, `make test` runs every check.
# Each installs what it needs into .venv first (Python 3.11+).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint types unit install docs clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tallygate needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,fast]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tallygate demo

test: check

check: lint types unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n 2 -q

docs: $(STAMP)
	$(BIN)/tallygate config docs > docs/configuration.md
	$(BIN)/tallygate config cli-docs > docs/cli.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
