# Quickstart: `make run` serves, `make test` checks everything.  Both create the
# virtual environment from requirements.lock first when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Two independent MCP clients for tests/test_mcp_clients.py, set up here like the venv:
# .venv-mcp16 holds astron-agent's pinned client (mcp==1.6.0, tests/clients/mcp16-requirements.txt)
# apart from the project's mcp 2.x; tests/clients/ts/node_modules holds the official TypeScript
# SDK (tests/clients/ts/package-lock.json) for node.  Neither is committed (.gitignore).
MCP16_VENV := .venv-mcp16
MCP16_STAMP := $(MCP16_VENV)/.installed
MCP16_REQUIREMENTS := tests/clients/mcp16-requirements.txt
TS_CLIENT := tests/clients/ts
TS_STAMP := $(TS_CLIENT)/node_modules/.installed

.PHONY: run cluster test lint typecheck pytest system-packages lock bench clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rpa-gateway serve

# Redis, three replicas and nginx on this machine (see deploy/cluster.py).
cluster: $(STAMP)
	deploy/system-packages.sh redis-server nginx
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

pytest: $(STAMP) system-packages $(MCP16_STAMP) $(TS_STAMP)
	$(BIN)/pytest

# --no-deps: the requirements file is the whole closure; pip check says if it is not.
$(MCP16_STAMP): $(MCP16_REQUIREMENTS)
	rm -rf $(MCP16_VENV)
	$(PYTHON) -m venv $(MCP16_VENV)
	$(MCP16_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		-r $(MCP16_REQUIREMENTS)
	$(MCP16_VENV)/bin/python -m pip check --disable-pip-version-check
	touch $@

# npm comes with nodejs from system-packages (order-only: it does not make this stale).
$(TS_STAMP): $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json | system-packages
	cd $(TS_CLIENT) && npm ci --no-audit --no-fund
	touch $@

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
	rm -rf $(MCP16_VENV) $(TS_CLIENT)/node_modules
