# Two entry points for a fresh machine with Python >= 3.11:
#   make demo   set up .venv and run the demo recipe end to end
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch; override for a GPU machine, e.g. make TORCH_SPEC="torch==2.13.0" ...
TORCH_SPEC ?= torch==2.13.0
# Where the demo run writes (corpus, tokenizer, shards, checkpoints, eval, export).
RUN_DIR ?= runs/demo

.PHONY: setup demo test test-slow lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency list or the pins change.
# PIP_CONSTRAINT reaches the isolated build environments of sdists; -c does not.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt build-constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	PIP_CONSTRAINT=build-constraints.txt $(BIN)/pip install --quiet --disable-pip-version-check \
		-c constraints.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/glotta run demo --run-dir $(RUN_DIR) --sample

# The default run (~12 min on 2 cores); the slow checks (more processes, more models) run with
# make test-slow, which CI (.ci/run) runs after it.
test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

# Speed benchmarks against Hugging Face (benchmarks/README.md): the bench extras, then all three.
# Flags pass through, e.g. make bench BENCH_ARGS=--quick, or
# make bench BENCH_ARGS='--pack "--size-mb 1024"'.
BENCH_ARGS ?=
$(VENV)/.installed-bench: $(VENV)/.installed
	PIP_CONSTRAINT=build-constraints.txt $(BIN)/pip install --quiet --disable-pip-version-check \
		-c constraints.txt -e ".[dev,bench]"
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs
