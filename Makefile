# Yidi developer entry points. `make` (or `make help`) lists the targets.
# Local infrastructure (Kafka, PostgreSQL, Redis without Docker) lives in deploy/local/;
# see deploy/local/README.md. Add new targets with a `## description` so `help` lists them.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

STACK  := deploy/local/stack.sh
PYTHON := .venv/bin/python
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-k clearing -x"
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2} /^##@/ {printf "\n%s\n", substr($$0, 5)}' $(MAKEFILE_LIST)

##@ Environment and local infrastructure

.PHONY: venv stack stack-stop stack-status stack-reset
venv: ## create/refresh .venv (Python 3.11, pip install -e ".[dev]" when pyproject.toml changed)
	@deploy/local/python.sh

stack: ## install if needed and start Kafka :19092, PostgreSQL :15432, Redis :16379
	@$(STACK) start all

stack-stop: ## stop the local Kafka, PostgreSQL and Redis
	@$(STACK) stop all

stack-status: ## show which local services are running
	@$(STACK) status

stack-reset: ## stop the stack and delete all its data (.local/; keeps downloaded jars)
	@$(STACK) reset

##@ Application (placeholders: owned by the application engineer)

.PHONY: run test bench stop
run: ## TODO: start the services
	@echo "TODO: make run"

test: venv stack ## run the test suite against the local stack
	@source deploy/local/env.sh && $(PYTHON) -m pytest -q $(PYTEST_ARGS)

bench: ## TODO: load test
	@echo "TODO: make bench"

stop: ## TODO: stop the services started by `make run`
	@echo "TODO: make stop"
