# Every target wraps the `mlops` CLI (or docker compose). `make demo` and `make test` set
# themselves up: they create .venv and install the package when it is missing or stale.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
MLOPS  := $(BIN)/mlops
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# The suite runs in parallel (pytest-xdist): a worker per core, at most 4, each with its own
# embedded PostgreSQL, a test file at a time (its module fixtures are built once).
# PYTEST_WORKERS=0 runs it in this one process.
PYTEST_WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --maxprocesses 4 --dist loadfile)
USER ?= $(shell id -un 2>/dev/null || echo unknown)

.PHONY: install demo test test-fast test-pipeline test-integration bench clean help ui serve \
        trigger-auto-train trigger-auto-promote check-drift view-alerts clear-alerts \
        up down start-orchestrator stop-orchestrator logs-orchestrator
COMPOSE ?= docker compose

help:
	@echo "make demo | test | install | bench | clean   (see README.md)"
	@echo "make trigger-auto-train | trigger-auto-promote | check-drift | view-alerts | clear-alerts"
	@echo "make ui | serve | up | down | start-orchestrator | stop-orchestrator | logs-orchestrator"

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(MLOPS) demo

# The UI browser test needs Debian's chromium; installed here when missing (as root, via apt).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "the UI browser test needs chromium: sudo apt-get install chromium"; exit 1; fi

test: $(STAMP) $(CHROMIUM)
	$(PYTEST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# The integration suite: full pipelines, serving, drift, UI (the slow tests); make test runs all.
test-pipeline: $(STAMP)
	$(PYTEST) tests/test_pipeline.py tests/test_load.py tests/test_train.py $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(PYTEST) -m slow $(PYTEST_ARGS)

# Train -> evaluate -> promote now, as the UI's "force retrain" does.
trigger-auto-train: $(STAMP)
	$(MLOPS) pipeline retrain --by $(USER)

ui: $(STAMP)
	$(MLOPS) ui

serve: $(STAMP)
	$(MLOPS) serve

# The Docker Compose stack (needs a Docker engine; copy .env.example to .env first).
up:
	$(COMPOSE) up -d --build

down:
	$(COMPOSE) down

start-orchestrator:
	$(COMPOSE) up -d --build cron

stop-orchestrator:
	$(COMPOSE) stop cron

logs-orchestrator:
	$(COMPOSE) logs -f --tail=200 cron

# Decide on the newest evaluated challenger now (promote / archive / needs approval).
trigger-auto-promote: $(STAMP)
	$(MLOPS) promote

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	-$(MLOPS) db stop
	-DATABASE_URL= MLOPS_HOME=.mlops-demo $(MLOPS) db stop
	rm -rf .mlops .mlops-demo demo-data

# The daily pipeline now (drift over the 7 and 30 days ending at 00:00 UTC today, then alerting);
# `mlops drift && mlops alert` checks up to this moment.
check-drift: $(STAMP)
	$(MLOPS) pipeline daily

view-alerts: $(STAMP)
	$(MLOPS) alerts list

clear-alerts: $(STAMP)
	$(MLOPS) alerts clear --by $(USER)
