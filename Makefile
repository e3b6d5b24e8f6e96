# triqdef: the commands a user needs.
#   make repro                environment + data + `dvc pull` of the trained artefacts stored in the repository
#                             (dvc-store/) + `dvc repro`: only stages whose code or params changed re-run
#   make repro-from-scratch   the same, every stage recomputed (`dvc repro -f`)
#   make test                 unit tests + `dvc repro` of dvc.yaml (smoke profile) in a temporary copy + nbval on
#                             every notebook + a fresh clone's `dvc pull` and `dvc status`
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: env repro repro-from-scratch test smoke clean-smoke help

help:
	@echo "make repro  - create/reuse $(VENV), fetch CIFAR-10, pull the stored artefacts, run what changed (profile: base.profile)"
	@echo "make repro-from-scratch - the same, every stage recomputed"
	@echo "make test   - unit tests, dvc repro (smoke profile) in a temporary copy of the repository, nbval on notebooks/"

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[notebooks,dev]'
	@touch $@

# `dvc pull`: the JPEG mirror of CIFAR-10 the results were made from (data.dvc) and the pipeline's outputs, both from
# dvc-store/; `triqdef data fetch` prepares data/cifar10 from the archive data.source names (mirror: the pulled one).
# After a run, `dvc push` copies the new outputs into dvc-store/: commit it with dvc.lock and results/
repro: env
	@start=$$(date +%s); \
	dvc pull --allow-missing && triqdef data fetch && dvc repro && dvc push && \
	echo "make repro: done in $$(( $$(date +%s) - start )) s; stage times in results/metrics/*.json"

repro-from-scratch: env
	@start=$$(date +%s); \
	dvc pull data.dvc && triqdef data fetch && dvc repro -f && dvc push && \
	echo "make repro-from-scratch: done in $$(( $$(date +%s) - start )) s; stage times in results/REPORT.md"

test: env
	bash tools/test.sh
