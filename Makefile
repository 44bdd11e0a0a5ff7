# `make run`: set up and run the main job.  `make test`: set up and run every test.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp
DEMO_HOME ?= .modelctl-demo
PORT      ?= 8765

.PHONY: setup system run test soak lint bench clean

setup: $(STAMP)

# Debian packages the tests drive, installed where missing (as root, or through sudo): Chromium
# (the dashboard's end-to-end tests) and PostgreSQL (the store's tests on its second engine;
# Debian keeps initdb and pg_ctl in /usr/lib/postgresql/VERSION/bin).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; fi

# llama-cpp-python builds llama.cpp from source: several minutes the first time, then pip's cache.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"  # the CPU build on these machines' disk
	$(PY) -m pip install --quiet -e '.[dev,llamacpp,transformers]'
	touch $(STAMP)

# The main job: a registry from the example file, a look at this machine, then a tiny demo model
# served behind the OpenAI- and Ollama-compatible endpoint (Ctrl-C stops it).
run: $(STAMP)
	MODELCTL_HOME=$(DEMO_HOME) $(BIN)/modelctl import examples/models.json --replace
	MODELCTL_HOME=$(DEMO_HOME) $(BIN)/modelctl list --where 'context_length>=100k' --where 'tags~prod'
	MODELCTL_HOME=$(DEMO_HOME) $(BIN)/modelctl system
	MODELCTL_HOME=$(DEMO_HOME) $(BIN)/modelctl recommend --memory 8G --task code
	MODELCTL_HOME=$(DEMO_HOME) $(BIN)/modelctl demo
	MODELCTL_HOME=$(DEMO_HOME) $(BIN)/modelctl serve --port $(PORT)

# The layers of the README's Design section are a contract (pyproject.toml, importlinter).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/lint-imports --no-cache

test: lint system
	$(BIN)/pytest -q

# The reliability suite (tests/reliability/) at its long setting: more trials, longer load.
soak: $(STAMP)
	MODELCTL_SOAK=1 $(BIN)/pytest -q tests/reliability

bench: $(STAMP) system
	$(PY) benchmarks/registry.py
	$(PY) benchmarks/memory_estimate.py
	$(PY) benchmarks/lifecycle.py
	$(PY) benchmarks/gateway.py
	$(PY) benchmarks/http_clients.py
	$(PY) benchmarks/workers.py
	$(PY) benchmarks/dashboard.py

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache .ruff_cache .hypothesis .bench test-results
