# reloadtrace — the two set-up commands are `make demo` and `make test`; the rest are parts of them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KAFKA_PORT ?= 9092
KAFKA_DATA_DIR ?= .kafka
PARTITIONS ?= 4
PYTEST_ARGS ?=
BENCH ?=
DEMO_ARGS ?=

.PHONY: help venv jars interop up down status test demo bench fuzz clean

help:
	@echo "make demo    run the pipeline end to end on the embedded defaults"
	@echo "make test    run the whole test suite against a real Kafka it starts and stops"
	@echo "make up|down|status   the local Kafka broker (port $(KAFKA_PORT), data in $(KAFKA_DATA_DIR))"
	@echo "make bench   measure throughput and latency, writing BENCHMARKS.md"
	@echo "make fuzz    hostile-producer soak (FUZZ_MESSAGES=50000 bad messages into a running worker)"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml schemas/_avro_walk.pyx schemas/_avro_write.pyx schemas/_avro_ops.pxd
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

jars: venv
	$(BIN)/python -m infra.kafka jars

# What tests/interop needs beyond Python: the OpenTelemetry Collector built from infra/otelcol with the
# machine's Go (reused while its sources are unchanged), and the JavaScript SDK from npm. Without Go or
# npm this says so and the tests that need them skip.
NODE_SDK := tests/interop/node/node_modules/.installed
interop: venv $(NODE_SDK)
	$(BIN)/python -m infra.otelcol build --if-go

$(NODE_SDK): tests/interop/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/interop/node --no-audit --no-fund --prefer-offline --loglevel=error && touch $@; \
	else echo "interop: npm is not on PATH; the second-SDK (Node) test will skip"; fi

up: jars
	$(BIN)/python -m infra.kafka up --port $(KAFKA_PORT) --data-dir $(KAFKA_DATA_DIR) --partitions $(PARTITIONS)

down: venv
	$(BIN)/python -m infra.kafka down --port $(KAFKA_PORT) --data-dir $(KAFKA_DATA_DIR)

status: venv
	$(BIN)/python -m infra.kafka status --port $(KAFKA_PORT) --data-dir $(KAFKA_DATA_DIR)

# A fresh broker on a free port just for the tests, stopped afterwards even when tests fail.
test: jars interop
	$(BIN)/python -m infra.kafka run --port 0 --data-dir .kafka-test --fresh -- \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks need a quiet machine; they get their own broker like the tests.
bench: jars
	$(BIN)/python -m infra.kafka run --port 0 --data-dir .kafka-bench --fresh -- \
		$(BIN)/python -m tests.benchmarks $(BENCH)

# The hostile-producer soak: make bench BENCH=fuzz (FUZZ_MESSAGES bad messages, default 50000).
fuzz:
	$(MAKE) bench BENCH=fuzz

# Its own broker (free port, .kafka-demo), a worker with the embedded ClickHouse (data/demo), traffic, report.
demo: jars
	$(BIN)/python -m infra.demo $(DEMO_ARGS)

clean:
	rm -rf .kafka-test .kafka-bench .kafka-demo data/demo out/demo .pytest_cache build *.egg-info infra/otelcol/build
