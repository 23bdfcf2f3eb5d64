# Yidi developer entry points. `make` (or `make help`) lists the targets.
# Local infrastructure (Kafka, PostgreSQL, Redis without Docker) lives in deploy/local/;
# see deploy/local/README.md. Add new targets with a `## description` so `help` lists them.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

STACK  := deploy/local/stack.sh
# The venv's interpreter (not PYTHON: that one, from the environment, chooses the interpreter
# deploy/local/python.sh builds the venv from, and make would pass this value on instead).
VENV_PY := .venv/bin/python
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-k clearing -x"
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2} /^##@/ {printf "\n%s\n", substr($$0, 5)}' $(MAKEFILE_LIST)

##@ Environment and local infrastructure

.PHONY: venv lock stack stack-stop stack-status stack-reset
venv: ## create/refresh .venv (Python 3.11): deploy/requirements.lock hash-checked, then -e . (when either changed)
	@deploy/local/python.sh

lock: ## renew deploy/requirements*.lock (versions and hashes) after a dependency of pyproject.toml changed (then make venv and the suite)
	@deploy/local/python.sh --renew-lock

stack: ## install if needed and start Kafka :19092, PostgreSQL :15432, Redis :16379
	@$(STACK) start all

stack-stop: ## stop the local Kafka, PostgreSQL and Redis
	@$(STACK) stop all

stack-status: ## show which local services are running
	@$(STACK) status

stack-reset: ## stop the services and the stack and delete all its data (.local/; keeps downloaded jars)
	@$(SERVICES) stop
	@$(STACK) reset

##@ Application

SERVICES := deploy/local/services.sh
DEMO     := deploy/demo

.PHONY: run test fuzz bench stop services-status logs
run: venv stack ## install what is missing, start stack and services, load the demo data, send demo settlements
	@$(SERVICES) start
	@source deploy/local/env.sh && .venv/bin/yidi-load $(DEMO)/refdata.json --wait 120
	@echo "Demo settlements (yidi-gateway --summary send $(DEMO)/requests/*.json):"
	@# Every one answered, none refused but 05 (NOT_FILED, on purpose): deploy/local/demo.sh says why not.
	@deploy/local/demo.sh
	@echo
	@echo "Yidi is running. Send a settlement:  .venv/bin/yidi-gateway send --new-msgid $(DEMO)/requests/01-we1-langfang-retiree-beijing.json"
	@echo "Metrics: http://127.0.0.1:9101/metrics .. :9104 (filing, eligibility, pricing, clearing)"
	@echo "Logs: .local/log/   Stop everything: make stop"

test: ## set up what is missing, start the stack, run the whole suite on the real servers, stop what it started
	@deploy/local/test.sh $(PYTEST_ARGS)

# Random inputs per fuzz test (the suite's are fixed: the same each run).
FUZZ_EXAMPLES ?= 5000
fuzz: venv ## explore the fuzz tests further: FUZZ_EXAMPLES (5000) fresh random inputs each, where the suite tries fixed ones
	@YIDI_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV_PY) -m pytest -q -p no:cacheprovider tests/unit/test_bad_input.py tests/unit/test_outside_input_fuzz.py -k mutated $(PYTEST_ARGS)

bench: venv stack ## replay a bounded day against the services and the bare pipeline; report, docs/BENCHMARKS.md
	@source deploy/local/env.sh && $(VENV_PY) -m loadtest.bench $(BENCH_ARGS)

stop: ## stop the services and the local stack
	@$(SERVICES) stop
	@$(STACK) stop all

services-status: ## show which services run and are ready
	@$(SERVICES) status

logs: ## follow the services' logs
	@tail -F .local/log/filing.log .local/log/eligibility.log .local/log/pricing.log .local/log/clearing.log
