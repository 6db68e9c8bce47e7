# headway — the two README commands (`make demo`, `make test`) set everything up themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean schemas chaos postgres kafka services postgres kafka

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/headway demo

# what the suite needs and no machine starts by itself: PostgreSQL on 127.0.0.1:5432 (Debian's
# packages) and Apache Kafka's jars (Maven Central → build/kafka/libs). `make test` tries both;
# where one cannot be had, its tests say so and skip (under CI=true they fail instead).
postgres:
	deploy/dev/postgres.sh
kafka:
	deploy/dev/kafka.sh fetch
services:
	-@deploy/dev/postgres.sh
	-@deploy/dev/kafka.sh fetch

# The suite in two tiers, each in two pytest processes (tests are isolated by topic prefix,
# database and port), then its chaos scenarios on their own (they time kills and outages):
#   fast tier    — the embedded broker (Tansu): everything but the Apache-only scenarios
#   Apache tier  — Apache Kafka 4.x (KRaft): the integration and hostile suites again on one broker, then
#                  the chaos scenarios of APACHE_CHAOS on three
# `make test PYTEST_ARGS="tests/unit -x"` runs just what it names, in one process.
TEST_PROCESSES ?= 2
APACHE_CHAOS := tests/chaos/test_sigkill.py tests/chaos/test_broker_failure.py \
	tests/chaos/test_rolling_restart.py
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider
test: $(STAMP) services
ifdef PYTEST_ARGS
	$(PYTEST) $(PYTEST_ARGS)
else
	$(PYTEST) -n $(TEST_PROCESSES) -m "not chaos and not apache"
	$(PYTEST) -m "chaos and not apache" tests/chaos
	HEADWAY_TEST_KAFKA=apache $(PYTEST) -n $(TEST_PROCESSES) -m "not chaos" tests/integration \
		tests/hostile
	HEADWAY_TEST_KAFKA=apache HEADWAY_TEST_KAFKA_BROKERS=3 $(PYTEST) -m chaos $(APACHE_CHAOS)
endif

# the chaos scenarios at full size (docs/reliability.md), on the embedded broker and then on
# Apache Kafka; figures to build/chaos-report.jsonl
chaos: $(STAMP) services
	mkdir -p build && rm -f build/chaos-report.jsonl
	HEADWAY_CHAOS_FULL=1 HEADWAY_CHAOS_REPORT=build/chaos-report.jsonl \
		$(PYTEST) -s -m "chaos and not apache" tests/chaos $(PYTEST_ARGS)
	HEADWAY_TEST_KAFKA=apache HEADWAY_TEST_KAFKA_BROKERS=3 HEADWAY_CHAOS_FULL=1 \
		HEADWAY_CHAOS_REPORT=build/chaos-report.jsonl \
		$(PYTEST) -s -m chaos $(APACHE_CHAOS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check broker workers schemas tests bench migrations
	$(BIN)/ruff format --check broker workers schemas tests bench migrations
	$(BIN)/mypy broker workers schemas

schemas: $(STAMP)
	$(BIN)/python -m schemas.generate
	$(BIN)/python -m broker.asyncapi

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) headway.db headway.db-* .pytest_cache .mypy_cache .ruff_cache
