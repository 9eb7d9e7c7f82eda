# Set-up and checks. `make demo` runs the example; `make test` runs every test. Both install what they need:
# the demo only the package and its runtime dependencies, the tests also the test tools ('.[test]').
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench browser emulators other-pythons clean

# The package alone (flyte, typing-extensions and what flyte installs), editable.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

# Plus the test tools: pytest, moto, the Azure SDK, fake-gcs-server, playwright, ruff.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Debian's Chromium for the browser tests; installed when we are root on a Debian-like machine.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found and cannot install it: browser tests will be skipped"; fi; }

# Azurite, Azure's Blob storage emulator, from npm for tests/test_azure.py (fake-gcs-server, for
# tests/test_gcs.py, comes with '.[test]'). Pinned; keep AZURITE_VERSION in tests/azure_helpers.py in step.
AZURITE_VERSION := 3.37.0
EMULATORS := .emulators

$(EMULATORS)/.azurite-$(AZURITE_VERSION):
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: install Node.js and npm (Debian: apt-get install npm) for the Azure tests"; exit 1; }
	npm install --prefix $(EMULATORS) --no-save --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)
	touch $@

# axe-core, the accessibility audit that tests/browser/test_a11y.py runs in Chromium; pinned, keep
# AXE_VERSION there in step. Its own prefix: an install without a package.json prunes what it did not list.
AXE_VERSION := 4.10.3

$(EMULATORS)/.axe-core-$(AXE_VERSION):
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: install Node.js and npm (Debian: apt-get install npm) for the accessibility tests"; exit 1; }
	npm install --prefix $(EMULATORS)/axe --no-save --no-audit --no-fund --loglevel=error axe-core@$(AXE_VERSION)
	touch $@

emulators: $(EMULATORS)/.azurite-$(AZURITE_VERSION) $(EMULATORS)/.axe-core-$(AXE_VERSION)

demo: $(VENV)/.installed
	$(PY) examples/example.py

lint: $(VENV)/.installed-test
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src tests bench examples

test: $(VENV)/.installed-test browser emulators lint other-pythons
	$(PY) -m pytest

# The other Pythons the package supports, found on PATH or in pyenv (whose shims may not run them).
OTHER_PYTHONS := 3.10 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
# What needs neither a browser nor an emulator (Azurite, fake-gcs-server); S3's moto runs in-process.
PORTABLE_TESTS := --ignore=tests/browser --ignore=tests/test_azure.py --ignore=tests/test_gcs.py

# Those tests on each other Python, in its own venv (.venv310, .venv313); a Python not found is skipped.
other-pythons:
	@for v in $(OTHER_PYTHONS); do \
	  py=; for c in $$(command -v python$$v) $(PYENV_ROOT)/versions/$$v.*/bin/python$$v; do \
	    if [ -x "$$c" ] && "$$c" -c '' 2>/dev/null; then py=$$c; break; fi; \
	  done; \
	  if [ -z "$$py" ]; then echo "python$$v not found: its tests are skipped"; continue; fi; \
	  venv=.venv$$(echo $$v | tr -d .); \
	  $(MAKE) --no-print-directory $$venv/.installed-test PYTHON=$$py VENV=$$venv || exit 1; \
	  echo "Python $$v ($$py): the tests that need no browser or emulator"; \
	  $$venv/bin/python -m pytest -q $(PORTABLE_TESTS) || exit 1; \
	done

bench: $(VENV)/.installed-test
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .venv310 .venv313 $(EMULATORS) .pytest_cache .ruff_cache build dist src/*.egg-info
