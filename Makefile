# keeperd — every install step lives here. `make test` and `make demo` work on a fresh machine
# with Python >= 3.11, node and npm (and apt for Prometheus, Alertmanager and PostgreSQL, which
# the integration tests run for real).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup system-deps test test-fast test-slow test-faults demo lint bench clean devnet-up devnet-down devnet-states

setup: $(VENV)/.installed $(VENV)/wheelhouse/.built node_modules/.installed vendor/npm/.installed \
       system-deps

# Debian's prometheus (promtool, the rule and scrape tests), prometheus-alertmanager (the
# Alertmanager sink's tests) and faketime (libfaketime: a wall-clock step under a running
# keeperd). Installed only when missing; needs root or sudo.
SYSTEM_BINARIES := prometheus promtool prometheus-alertmanager faketime
SYSTEM_PACKAGES := prometheus prometheus-alertmanager faketime
system-deps:
	@missing=""; for b in $(SYSTEM_BINARIES); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages $(SYSTEM_PACKAGES) (missing:$$missing)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(SYSTEM_PACKAGES) >/dev/null || \
	  { echo "could not install $(SYSTEM_PACKAGES): install them with apt"; exit 1; }; \
	fi
	@# PostgreSQL's server (the replicated storage's tests start their own cluster on loopback);
	@# Debian keeps its binaries in /usr/lib/postgresql/<major>/bin, off PATH.
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing Debian package postgresql"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    postgresql >/dev/null || \
	  { echo "could not install postgresql: install it with apt"; exit 1; }; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "keeperd needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -c 'from keeperd.risk.kernels import kernels; kernels()'  # numba's cache
	touch $@

# Wheels of keeperd's runtime dependencies and build backend, so the test that installs the
# package into a fresh venv (as the image does) needs no package index: tests talk to loopback.
$(VENV)/wheelhouse/.built: pyproject.toml $(VENV)/.installed
	$(BIN)/pip wheel --quiet -w $(VENV)/wheelhouse setuptools wheel .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Packages `npm ci` cannot install (GitHub tarballs in their dependency lists): `npm pack`ed,
# checked against the integrity pinned in npm-packs.json, unpacked under vendor/npm/.
vendor/npm/.installed: npm-packs.json keeperd/devnet/npm_packs.py $(VENV)/.installed
	$(BIN)/python -m keeperd.devnet.npm_packs
	touch $@

# The devnet states the tests start anvil from (today's Aave and v3.0, 300 borrowers each):
# built once and cached under .devnet/states by a fingerprint of what shapes them; a second
# second when nothing changed. Part of setting up: the first test does not pay for it.
devnet-states: setup
	$(BIN)/python -c 'from keeperd.devnet.state import ensure_state; ensure_state(); ensure_state(aave_version="v3.0")'

test: devnet-states
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: devnet-states
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

test-slow: devnet-states
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

# The fault suite (#17, docs/reliability.md): its scenarios, slow ones included (part of `test`).
test-faults: devnet-states
	$(BIN)/pytest -m 'slow or not slow' tests/faults $(PYTEST_ARGS)

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
	rm -rf $(VENV) node_modules vendor .devnet .pytest_cache .mypy_cache .ruff_cache
