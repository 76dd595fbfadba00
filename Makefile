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
.PHONY: help install run sweep collect paper figures report tensorboard bench test test-all docs-figure clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install initsuite (editable) with its dev extra; EXTRAS=dev,gpu for CUDA

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	touch $(STAMP)

run: $(STAMP) ## one instrumented run: make run ARGS='dataset=synthetic init=standard model.depth=5'
	$(PY) -m initsuite run $(ARGS)

sweep: $(STAMP) ## the main job: a resumable sweep; make sweep EXP=<preset in conf/experiment/> ARGS='<overrides>'
	$(PY) -m initsuite sweep experiment=$(EXP) $(ARGS)

collect: $(STAMP) ## gather a sweep's run folders into its tables: make collect SWEEP=<folder>
	$(PY) -m initsuite collect $(SWEEP)

paper: $(STAMP) ## reproduce Glorot & Bengio 2010 on Shapeset + MNIST (figures, Table 1 with per-pair rates, seeds, significance); PAPER_SCALE=long: the paper's schedule (GPU)
	$(PY) -m initsuite paper $(if $(PAPER_SCALE),--scale $(PAPER_SCALE)) $(ARGS)

figures: $(STAMP) ## redraw a sweep's figures and report from its tables: make figures SWEEP=<folder>
	$(PY) -m initsuite figures $(SWEEP)

report: figures ## the same as make figures: <SWEEP>/report.html with every figure embedded

tensorboard: $(STAMP) ## write TensorBoard event files from a sweep's tables: make tensorboard SWEEP=<folder>
	$(PY) -m initsuite tensorboard $(SWEEP)

bench: $(STAMP) ## the instrumentation's cost against plain Keras (results/bench/); BENCH_QUICK=1 for a smoke run
	$(PY) -m initsuite bench $(if $(BENCH_QUICK),--quick) $(ARGS)

test: $(STAMP) ## run the test suite (slow end-to-end tests included, not the `long` one; 2 workers)
	$(PY) -m pytest -q -n 2 -m "not long" $(ARGS)

test-all: $(STAMP) ## every test, `make paper PAPER_SCALE=tiny` end to end included (~8 min more on 2 cores)
	$(PY) -m pytest -q -n 2 $(ARGS)

docs-figure: $(STAMP) ## redraw docs/headline.png (the README's figure) from the default sweep (runs it if needed)
	test -f results/sweeps/$(EXP)/runs.parquet || $(MAKE) --no-print-directory sweep EXP=$(EXP)
	$(PY) -m initsuite figures results/sweeps/$(EXP) >/dev/null
	cp results/sweeps/$(EXP)/figures/variance_at_init.png docs/headline.png

clean: ## remove generated results (keeps results/README.md) and caches
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf .pytest_cache
