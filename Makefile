# triqdef: the two commands a user needs.
#   make repro   environment + data + `dvc repro` (cpu profile by default; see params.yaml)
#   make test    unit tests + `dvc repro` of dvc.yaml (smoke profile) in a temporary copy + nbval on every notebook
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: env repro test smoke clean-smoke help

help:
	@echo "make repro  - create/reuse $(VENV), fetch CIFAR-10, run the DVC pipeline (profile: base.profile in params.yaml)"
	@echo "make test   - unit tests, dvc repro (smoke profile) in a temporary copy of the repository, nbval on notebooks/"

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[notebooks,dev]'
	@touch $@

repro: env
	@start=$$(date +%s); \
	triqdef data fetch && dvc repro && \
	echo "make repro: done in $$(( $$(date +%s) - start )) s; stage times in results/metrics/*.json"

test: env
	bash tools/test.sh
