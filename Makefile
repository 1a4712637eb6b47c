# Choreo: `make demo` runs the whole pipeline on a local Kafka; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test chromium soak unit integration lint check bench bench-short kafka-start kafka-stop kafka-status clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

# The whole suite; the integration tests start (and stop) their own broker unless
# CHOREO_BROKER names one.
test: $(STAMP) chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q tests

# Debian's chromium and chromium-driver for the web page test; a no-op when installed.
chromium:
	@scripts/ensure-chromium

# Long runs (100,000 fuzzed records, ...); not part of `make test`.
soak: $(STAMP)
	$(VENV)/bin/pytest -q -s -m soak tests

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit tests/agents

integration: $(STAMP)
	$(VENV)/bin/pytest -q -m integration tests/integration

# The benchmark (bench/README.md): starts its own broker on port 29092 (BENCH_KAFKA_PORT),
# stops it after; results in bench/results/. Not part of `make test`.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench

bench-short: $(BENCH_STAMP)
	$(PY) -m bench --short

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

check: $(STAMP)
	$(VENV)/bin/choreo check

kafka-start:
	scripts/kafka-local start

kafka-stop:
	scripts/kafka-local stop

kafka-status:
	scripts/kafka-local status

clean:
	-scripts/kafka-local stop --purge
	rm -rf $(VENV) .kafka choreo-data .pytest_cache .ruff_cache
