# Every target creates .venv and installs the project on first use: `make run` and `make test` are all a
# newcomer types. Re-installs when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: run test lint unit bench ui deploy worker test-timescale install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,dask]'
	@touch $(STAMP)

install: $(STAMP)

## The main job: migrate, register blocks, run the pipeline on the offline replay exchange.
run: $(STAMP)
	$(BIN)/strategy-engine run $(ARGS)

## Lint, types, import contracts, then every test that needs no internet.
test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

## The TimescaleDB lane: starts TimescaleDB-in-WASM on loopback (needs node + npm), runs the timescale tests.
test-timescale: $(STAMP)
	$(BIN)/pytest -m timescale tests/timescale $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

## Prefect server + UI on http://127.0.0.1:4200 (binds loopback only).
ui: $(STAMP)
	PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=4200 $(BIN)/prefect server start

## Apply prefect.yaml (work pool + every deployment) without prompts. Needs a running server (make ui).
deploy: $(STAMP)
	$(BIN)/prefect work-pool create local-process --type process --overwrite
	$(BIN)/prefect --no-prompt deploy --all

worker: $(STAMP)
	$(BIN)/prefect worker start --pool local-process --type process

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
