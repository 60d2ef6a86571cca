# ipcd: `make run` starts the daemon in the foreground, `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

# What ruff checks and formats: every Python file of the project.
PY_DIRS = ipcd tests bench contrib/python tools

.PHONY: run test dev lint ruff imports type units bench man check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)

run: $(STAMP)
	$(BIN)/ipcd

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: ruff imports

ruff: $(STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

# The layers of STYLE.md's "Layout": the contracts are [tool.importlinter] in pyproject.toml.
imports: $(STAMP)
	$(BIN)/lint-imports --no-logo

type: $(STAMP)
	$(BIN)/mypy --strict ipcd

# The units as install-units writes them (the templates name /usr/bin/ipcd).
units: $(STAMP)
	rm -rf .units && $(BIN)/ipcd install-units --unit-dir .units --sysusers-dir .units >/dev/null
	SYSTEMD_UNIT_PATH=$(CURDIR)/.units: systemd-analyze verify --man=no .units/*.socket .units/*.service
	systemd-analyze security --offline=true --threshold=15 .units/ipcd.service | tail -1
	rm -rf .units

# Five benchmarks beside their baselines (bench/run_all.py, bench/README.md); BENCH_ARGS="--seconds 1 -n 100000" for a quick look.
bench: $(STAMP)
	cc -O2 -Wall -Wextra -o bench/loadgen bench/loadgen.c -lpthread
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# The man pages from the click commands and the config schema (tools/manpages.py).
man: $(STAMP)
	$(BIN)/python tools/manpages.py

# What CI runs (.ci/run).
check: lint type units test

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
