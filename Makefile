# Quickstart: `make run` serves, `make test` checks everything.  Both create the
# virtual environment from requirements.lock first when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest lock bench clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rpa-gateway serve

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench projects
	$(BIN)/ruff format --check src tests bench projects

typecheck: $(STAMP)
	$(BIN)/mypy src

pytest: $(STAMP)
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
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
