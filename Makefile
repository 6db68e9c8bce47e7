# headway — the two README commands (`make demo`, `make test`) set everything up themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean schemas chaos

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/headway demo

# the suite in two pytest processes (tests are isolated by topic prefix, database and port),
# then the bounded chaos scenarios on their own: they time kills and outages.
# `make test PYTEST_ARGS="tests/unit -x"` runs just what it names, in one process.
TEST_PROCESSES ?= 2
test: $(STAMP)
ifdef PYTEST_ARGS
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
else
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_PROCESSES) -m "not chaos"
	$(BIN)/python -m pytest -q -p no:cacheprovider -m chaos tests/chaos
endif

# the chaos scenarios at full size (docs/reliability.md); figures to build/chaos-report.jsonl
chaos: $(STAMP)
	mkdir -p build && rm -f build/chaos-report.jsonl
	HEADWAY_CHAOS_FULL=1 HEADWAY_CHAOS_REPORT=build/chaos-report.jsonl \
		$(BIN)/python -m pytest -q -p no:cacheprovider -s -m chaos tests/chaos $(PYTEST_ARGS)

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
