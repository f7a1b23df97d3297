# dbquota: `make help` lists the targets. Every target sets up what it needs itself:
# a virtual environment in .venv/ and the control-plane binaries in ~/.cache/dbquota/.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist, a file per process at a time, each e2e process with a
# control plane of its own): most e2e time is spent waiting for processes, not computing,
# so two halve a run even on two cores. 0 runs everything in one process; a cluster of
# your own (DBQUOTA_E2E_USE_EXISTING=1) is shared by every test, so it gets one process.
TEST_WORKERS ?= $(if $(filter 1,$(DBQUOTA_E2E_USE_EXISTING)),0,2)
XDIST = -n $(TEST_WORKERS) --dist loadfile

.PHONY: help
help: ## List the targets with what each does
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk -F':.*## ' '{printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}'

# constraints.txt pins every package the venv and the image install (`make constraints`
# refreshes it): the same commit installs the same versions next month.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "dbquota needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install --quiet -c constraints.txt -e . --group dev
	touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv/ with the package (editable) and its dev tools

.PHONY: constraints
constraints: ## Re-pin constraints.txt to the newest versions pyproject.toml allows
	rm -rf .constraints-venv
	$(PYTHON) -m venv .constraints-venv
	.constraints-venv/bin/python -m pip install --quiet --upgrade 'pip>=25.1'
	.constraints-venv/bin/python -m pip install --quiet -e . --group dev
	{ sed -n '/^#/p' constraints.txt; \
	  .constraints-venv/bin/python -m pip freeze --exclude-editable --all \
	    | grep -viE '^(pip|setuptools|wheel)=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .constraints-venv
	@echo "constraints.txt re-pinned; run make venv (it reinstalls) and make test"

.PHONY: binaries
binaries: $(STAMP) ## Build or find etcd, kube-apiserver, kubectl, helm, promtool (cached by version)
	$(BIN)/python -m e2e.controlplane build

.PHONY: lint
lint: $(STAMP) ## ruff, mypy --strict, import-linter layers, hadolint, helm lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@if [ -f Dockerfile ]; then $(BIN)/hadolint Dockerfile; fi
	@if [ -d charts/dbquota ]; then \
	  $(BIN)/python -m e2e.controlplane build >/dev/null && \
	  "$$($(BIN)/python -m e2e.controlplane build | sed -n 's/^helm=//p')" lint --strict charts/dbquota; fi

.PHONY: fmt
fmt: $(STAMP) ## Format the code and apply ruff's safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: test
test: binaries ## Run every test: unit, integration (simulator), e2e (real apiserver)
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(STAMP) ## Run the unit tests only (no processes, no control plane)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: test-e2e
test-e2e: binaries ## Run the e2e tests only (starts a local control plane)
	$(BIN)/pytest e2e $(XDIST) $(PYTEST_ARGS)

.PHONY: demo
demo: binaries ## The whole story on a local control plane: quotas, claims, an outage, recovery
	$(BIN)/python -m e2e.demo

BENCHMARKS := bench/ingest.py bench/webhook_server.py bench/admission.py bench/status_writes.py bench/create.py

.PHONY: bench
bench: binaries ## Run the benchmarks in bench/ and print their figures (create.py: ~15 min)
	@for b in $(BENCHMARKS); do echo "== $$b"; $(BIN)/python $$b; done

.PHONY: clean
clean: ## Remove the virtual environment and caches in the repo (keeps ~/.cache/dbquota)
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build dist
