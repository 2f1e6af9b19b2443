# Drill Progress pipeline. The documented commands are targets here.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) -m devtools.devstack
# EXECUTOR=celery (in the environment, on the command line or in .env) runs the local stack on
# CeleryExecutor: Redis and two Celery workers (docs/celery.md). Unset: LocalExecutor.
ifdef EXECUTOR
export EXECUTOR
endif

.DEFAULT_GOAL := help
.PHONY: help install up down status simulate test test-fast lint bench chaos lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed ## create .venv with everything pinned
	@echo ".venv ready: $$($(VENV)/bin/airflow version 2>/dev/null | tail -1)"

up: install ## start PostgreSQL, the AWS emulator, Airflow and the simulator; serve the UI (EXECUTOR=celery: on Celery)
	$(STACK) up

down: ## stop exactly what `make up` started
	@test -x $(PY) && $(STACK) down || echo "nothing to stop (no .venv)"

status: install ## show what the local stack is running
	$(STACK) status

simulate: install ## publish simulated Dialog Context traffic to the running stack (Ctrl-C stops)
	@if [ -f .local/env.sh ]; then source .local/env.sh; fi; $(PY) -m devtools.simulator --follow $(ARGS)

test: install lint ## run the whole test suite (starts its own PostgreSQL and AWS emulator)
	$(PY) -m pytest

lint: install ## ruff lint (with the Airflow rules) and format check: fails on either
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install ## benchmarks: one JSON line per metric, then a table
	$(PY) -m bench

chaos: install ## fault-injection scenarios against real services
	$(PY) -m pytest tests/chaos -m "chaos" -s

lock: ## refresh constraints.txt from the current .venv
	$(PY) -m pip freeze --exclude-editable | grep -v '^drill-progress' > constraints.txt

clean: down ## remove local state (.local) but keep .venv
	rm -rf .local
