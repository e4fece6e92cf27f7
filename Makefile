# The README's two commands are `make run` and `make test`; .ci/run calls `make test`.
PYTHON ?= python3.11
PORT ?= 8000
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench bench-quick bench-profile openapi clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Set up from scratch, migrate the SQLite database, seed the demo federation, serve on :$(PORT).
run: $(STAMP)
	$(BIN)/heartleaf db upgrade
	$(BIN)/heartleaf demo --if-empty
	$(BIN)/heartleaf serve --host 127.0.0.1 --port $(PORT)

## Lint, type-check and run every test (SQLite and PostgreSQL).
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

## The benchmark: prints figures, asserts nothing about time.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

## Where one in-process transfer's time goes (cProfile; BENCH_ARGS="--backend postgresql").
bench-profile: $(STAMP)
	$(BIN)/python -m bench.profiling $(BENCH_ARGS)

## Regenerate openapi.yaml from the app.
openapi: $(STAMP)
	$(BIN)/heartleaf openapi > openapi.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
