# ipcd: `make run` starts the daemon in the foreground, `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test dev lint type units bench check clean

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

lint: $(STAMP)
	$(BIN)/ruff check ipcd tests bench contrib
	$(BIN)/ruff format --check ipcd tests bench contrib

type: $(STAMP)
	$(BIN)/mypy --strict ipcd

units:
	SYSTEMD_UNIT_PATH=$(CURDIR)/systemd: systemd-analyze verify --man=no systemd/*.socket systemd/*.service

bench: $(STAMP)
	$(BIN)/python bench/intake.py

check: lint type test

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
