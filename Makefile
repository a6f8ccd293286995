# keeperd — every install step lives here. `make test` and `make demo` work on a fresh machine
# with Python >= 3.11, node and npm.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-slow demo lint bench clean devnet-up devnet-down

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "keeperd needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m keeperd.demo

lint: setup
	$(BIN)/ruff check keeperd tests bench
	$(BIN)/mypy keeperd

bench: setup
	$(BIN)/python bench/run_all.py

devnet-up: setup
	$(BIN)/keeperd devnet up

devnet-down: setup
	$(BIN)/keeperd devnet down

clean:
	rm -rf $(VENV) node_modules .devnet .pytest_cache .mypy_cache .ruff_cache
