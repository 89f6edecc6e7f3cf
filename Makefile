# The two set-up commands: `make run` (embedded demo) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-unit bench install clean

$(STAMP): setup.cfg setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

## Start the embedded all-in-one mode (SQLite + in-process worker + sandbox gateway).
run: $(STAMP)
	$(BIN)/billing db upgrade
	$(BIN)/billing run

## The whole suite. PostgreSQL/RabbitMQ tests run when the services answer and
## are skipped with the reason otherwise; BILLING_REQUIRE_SERVICES=1 (CI) turns
## a missing service into a failure.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

## Benchmarks: print their figures (ingest needs PostgreSQL; pacing needs
## PostgreSQL and RabbitMQ and runs the production stack for about 3 minutes).
bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.pacing

clean:
	rm -rf $(VENV) var .pytest_cache
