# initsuite — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= dev
EXP ?= default
ARGS ?=
SWEEP ?=
export TF_CPP_MIN_LOG_LEVEL ?= 2

.DEFAULT_GOAL := help
.PHONY: help install run sweep collect paper figures report tensorboard bench test clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install initsuite (editable) with its dev extra; EXTRAS=dev,gpu for CUDA

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	touch $(STAMP)

run: $(STAMP) ## one instrumented run: make run ARGS='dataset=synthetic init=standard model.depth=5'
	$(PY) experiments/run.py $(ARGS)

sweep: $(STAMP) ## the main job: a resumable sweep; make sweep EXP=<preset in conf/experiment/> ARGS='<overrides>'
	$(PY) experiments/sweep.py +experiment=$(EXP) $(ARGS)

collect: $(STAMP) ## gather a sweep's run folders into its tables: make collect SWEEP=<folder>
	$(PY) experiments/collect.py $(SWEEP)

paper: $(STAMP) ## reproduce Glorot & Bengio 2010 on Shapeset + MNIST (figures, Table 1 with per-pair rates, seeds, significance); PAPER_SCALE=long: the paper's schedule (GPU)
	@set -eo pipefail; scale="$$($(PY) experiments/paper.py --overrides '$(PAPER_SCALE)')"; \
	$(MAKE) --no-print-directory sweep EXP=glorot2010 ARGS="$$scale $(ARGS)"; \
	sweep="$$($(MAKE) --no-print-directory sweep EXP=glorot2010 \
		ARGS="$$scale $$($(PY) experiments/paper.py --fig2-overrides) $(ARGS)" | tee /dev/stderr | tail -n 1)"; \
	$(PY) experiments/paper.py "$$sweep"

figures: $(STAMP) ## redraw a sweep's figures and report from its tables: make figures SWEEP=<folder>
	$(PY) experiments/figures.py $(SWEEP)

report: figures ## the same as make figures: <SWEEP>/report.html with every figure embedded

tensorboard: $(STAMP) ## write TensorBoard event files from a sweep's tables: make tensorboard SWEEP=<folder>
	$(PY) experiments/tensorboard.py $(SWEEP)

bench: $(STAMP) ## the instrumentation's cost against plain Keras (results/bench/); BENCH_QUICK=1 for a smoke run
	$(PY) experiments/bench.py $(if $(BENCH_QUICK),--quick) $(ARGS)

test: $(STAMP) ## run the test suite
	$(PY) -m pytest -q $(ARGS)

clean: ## remove generated results (keeps results/README.md) and caches
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf .pytest_cache
