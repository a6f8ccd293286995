# keeperd — every install step lives here. `make test` and `make demo` work on a fresh machine
# with Python >= 3.11, node and npm (and apt for Prometheus, Alertmanager and PostgreSQL, which
# the integration tests run for real).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup lock system-deps test test-fast test-slow test-faults demo lint bench clean devnet-up devnet-down devnet-states mutate

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

# Every Python package comes from the lock, each file checked against its pinned sha256
# (requirements/*.lock, `make lock`); keeperd itself is then installed without resolving
# anything (--no-deps), built by the locked setuptools and Cython (--no-build-isolation; the
# cascade kernels are compiled then: gcc and Python's headers, see setup.py).
$(VENV)/.installed: pyproject.toml setup.py keeperd/risk/_kernels_aot.pyx requirements/dev.lock
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "keeperd needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@# the compiled kernels were built (the install skips them without a compiler); numba's cache
	$(BIN)/python -c 'from keeperd.risk.kernels import load; load("aot"); load("numba")'
	touch $@

# The runtime lock's wheels (hash-checked), so the test that installs the package into a fresh
# venv as the image does needs no package index: tests talk to loopback.
$(VENV)/wheelhouse/.built: requirements/runtime.lock $(VENV)/.installed
	$(BIN)/pip download --quiet --only-binary=:all: --require-hashes \
	  -r requirements/runtime.lock -d $(VENV)/wheelhouse
	touch $@

# Regenerate the locks after changing pyproject.toml's dependencies (needs PyPI): pip-tools
# in a throwaway venv; the pins kept unless a dependency's range excludes them (LOCK_ARGS=
# --upgrade to move everything to the newest allowed).
LOCK_ARGS ?=
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet pip-tools==7.7.0
	# (the header's "make lock" line: pip-tools 7.7 reads it from the environment only; its
	# --custom-compile-command flag is gone)
	for out in runtime dev; do \
	  extra=""; [ $$out = dev ] && extra="--extra dev"; \
	  CUSTOM_COMPILE_COMMAND="make lock" \
	  .lock-venv/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	    --no-emit-index-url --no-emit-find-links --no-annotate $$extra $(LOCK_ARGS) \
	    -o requirements/$$out.lock pyproject.toml requirements/build.in || exit 1; \
	done
	rm -rf .lock-venv

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

# On both cores (pytest-xdist): each worker starts its own devnet, PostgreSQL and Prometheus on
# free loopback ports. PYTEST_WORKERS=0 runs in this process (a debugger, -x on one failure).
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS))

test: devnet-states
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

test-fast: devnet-states
	$(BIN)/pytest $(XDIST) -m 'not slow' $(PYTEST_ARGS)

test-slow: devnet-states
	$(BIN)/pytest $(XDIST) -m slow $(PYTEST_ARGS)

# The fault suite (#17, docs/reliability.md): its scenarios, slow ones included (part of `test`).
test-faults: devnet-states
	$(BIN)/pytest $(XDIST) -m 'slow or not slow' tests/faults $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m keeperd.demo

lint: setup
	$(BIN)/ruff check keeperd tests bench
	$(BIN)/mypy keeperd

bench: setup
	$(BIN)/python bench/run_all.py

# Mutation testing (docs/mutation.md; not part of `test`): mutmut over the pure modules, one
# module at a time, each mutant against the unit tests that reach it; the counts and the
# survivors go to bench/results/mutation.json. mutmut has its own venv (.venv-mutate: the dev
# lock plus requirements/mutate.lock, hash-checked) so the test venv stays what dev.lock pins.
# MUTATE_MODULES="risk/cascade.py ..." runs a few (labels in bench/mutation.py).
# One worker by default (the machine is shared): `MUTATE_CHILDREN=2 make mutate` for two.
MUTATE_VENV := .venv-mutate
MUTATE_MODULES ?=
$(MUTATE_VENV)/.installed: requirements/dev.lock requirements/mutate.lock
	$(PYTHON) -m venv $(MUTATE_VENV)
	$(MUTATE_VENV)/bin/pip install --quiet --require-hashes -r requirements/dev.lock \
	  -r requirements/mutate.lock
	touch $@

mutate: $(MUTATE_VENV)/.installed
	$(MUTATE_VENV)/bin/python bench/mutation.py $(MUTATE_MODULES)

devnet-up: setup
	$(BIN)/keeperd devnet up

devnet-down: setup
	$(BIN)/keeperd devnet down

clean:
	rm -rf $(VENV) node_modules vendor .devnet .pytest_cache .mypy_cache .ruff_cache
