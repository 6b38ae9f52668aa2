# Quickstart: `make run` serves, `make test` checks everything.  Both create the
# virtual environment from requirements.lock first when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run cluster test lint typecheck pytest system-packages lock bench clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rpa-gateway serve

# Redis, three replicas and nginx on this machine (see deploy/cluster.py).
cluster: $(STAMP) system-packages
	$(BIN)/python deploy/cluster.py

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench projects deploy
	$(BIN)/ruff format --check src tests bench projects deploy

typecheck: $(STAMP)
	$(BIN)/mypy src

# redis-server and nginx run for real in the replica tests, chromium in the monitor's.
system-packages:
	deploy/system-packages.sh

pytest: $(STAMP) system-packages
	$(BIN)/pytest

# Re-pin every dependency (runtime and dev) after changing pyproject.toml.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^rpa-gateway' > requirements.lock
	rm -rf .lock-venv

bench: $(STAMP)
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) data .cluster .pytest_cache .mypy_cache .ruff_cache
