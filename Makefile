# Two commands: `make run` (the platform) and `make test` (the suite but the slow tests, under
# 10 minutes). Both are idempotent. Also: test-slow (only the slow tests; CI runs them too),
# test-all (both), lint, bench, db-start, db-stop, clean-db.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
export DAGSTER_HOME := $(CURDIR)

.PHONY: install run test test-slow test-all lint bench db-start db-stop clean-db

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

# Start PostgreSQL (local unless SR_PLATFORM_DATABASE_URL is set), migrate to head, materialize
# the schema asset, put a sample in the landing zone (the landing sensor loads it), and serve
# Dagster on http://$(HOST):$(PORT) (make run PORT=3100 for another port). Ctrl-C stops Dagster;
# PostgreSQL keeps running until `make db-stop` (or `sr-platform db stop`).
HOST ?= 127.0.0.1
PORT ?= 3000
run: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/sr-platform dev --host $(HOST) --port $(PORT)

# The suite without the tests marked slow (browser, kill -9, dagster dev, PITR, ...).
test: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -m "not slow"

# Only the slow tests (.ci/run runs these, then `make test`).
test-slow: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -m slow

# Everything.
test-all: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest

lint: install
	$(BIN)/ruff check sr_platform sr_platform_tests bench

db-start: install
	$(BIN)/sr-platform db start

db-stop: install
	$(BIN)/sr-platform db stop

# Issue 7's benchmarks in one process against one server (bench/run.py): load baselines and the
# loader, queries at 1 y (~5M events), concurrent writers; prints the tables and writes
# bench/results/latest.md, latest.json and a PNG per comparison (about 20 min on a quiet 2-core
# machine). SIZE=5 adds the queries at 5x (~25M events: 14 min to generate, 39 min in all,
# ~20 GB of disk). BENCH_ARGS passes more flags
# (e.g. BENCH_ARGS="--only queries", "--keep-cluster"). The single benchmarks stay runnable:
# bench/*_bench.py (against the dev cluster).
# Without SR_PLATFORM_DATABASE_URL it runs on a throwaway cluster of its own (.sr_platform-bench/,
# a free port), the dev cluster's settings but archive_mode = off (the dev cluster archives every
# WAL segment: SIZE=5 once put 53 GB there), stopped at the end; its data stays for the next run.
# Delete it: `.venv/bin/python bench/run.py --remove-cluster`, or
# `SR_PLATFORM_HOME=.sr_platform-bench SR_PLATFORM_WAL_ARCHIVE=off make clean-db`.
SIZE ?= 1
BENCH_ARGS ?=
$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

bench: install $(BIN)/.bench-installed
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/run.py --size $(SIZE) $(BENCH_ARGS)

# Stop the project-local PostgreSQL and delete it: every local database (the app's and Dagster's
# run history) is gone, without confirmation. `make run` / `db-start` make a new empty one.
# Only the local cluster: a server named by SR_PLATFORM_DATABASE_URL is never touched.
# LocalCluster.remove() where localpg has it (it also deletes the data kept outside the state
# dir, under /var/lib/sr-platform, and the passfile); else stop and delete the state dir.
clean-db: install
	$(BIN)/python -c 'import shutil; from sr_platform.core import db, settings; \
	  c = db.local_cluster(); c.remove() if hasattr(c, "remove") else \
	  (c.stop(), shutil.rmtree(settings.state_dir(), ignore_errors=True))'

