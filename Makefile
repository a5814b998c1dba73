# Two commands: `make run` (the platform) and `make test` (the suite). Both are idempotent.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
export DAGSTER_HOME := $(CURDIR)

.PHONY: install run test lint db-start db-stop clean-db

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

# Start PostgreSQL (local unless SR_PLATFORM_DATABASE_URL is set), migrate to head, materialize
# the schema asset, load a sample, and serve Dagster on http://127.0.0.1:3000.
run: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/sr-platform dev

test: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest

lint: install
	$(BIN)/ruff check sr_platform sr_platform_tests bench

db-start: install
	$(BIN)/sr-platform db start

db-stop: install
	$(BIN)/sr-platform db stop
