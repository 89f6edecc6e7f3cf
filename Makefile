# The two set-up commands: `make run` (embedded demo) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint test-unit bench install clean

$(STAMP): setup.cfg setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

## Start the embedded all-in-one mode (SQLite + in-process worker + sandbox gateway).
## Without BILLING_ENCRYPTION_KEYS, the first command makes a local encryption
## key next to the SQLite file (billing.sqlite3.key, mode 0600) and both use it.
run: $(STAMP)
	$(BIN)/billing db upgrade
	$(BIN)/billing run

## The whole suite, in parallel (pytest-xdist), with in-process coverage and
## the linter. PostgreSQL/RabbitMQ tests run when the services answer and are
## skipped with the reason otherwise; BILLING_REQUIRE_SERVICES=1 (CI) turns a
## missing service into a failure. The fault suite shares one worker (its
## private servers are set up once); COVERAGE_FLOOR fails a run that covers less.
TEST_WORKERS ?= 3
COVERAGE_FLOOR ?= 95
COVERAGE := --cov=billing --cov=web --cov=tasks --cov=scheduler --cov=billing_cli --cov-report=term:skip-covered
test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(COVERAGE) --cov-fail-under=$(COVERAGE_FLOOR) $(PYTEST_ARGS)

## ruff, with the rule set in ruff.toml.
lint: $(STAMP)
	$(BIN)/ruff check .

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

## Benchmarks: print their figures (ingest needs PostgreSQL; pacing needs
## PostgreSQL and RabbitMQ and runs the production stack for about 3 minutes).
bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.pacing

clean:
	rm -rf $(VENV) var .pytest_cache
