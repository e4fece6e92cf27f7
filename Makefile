# The README's two commands are `make run` and `make test`; .ci/run calls `make test`.
PYTHON ?= python3.11
PORT ?= 8000
VENV ?= .venv
BIN := $(VENV)/bin
# What is installed, one stamp each: serving needs Heartleaf and its dependencies alone
# (`pip install -e .`); testing adds the `test` extra (pytest, mypy, ruff, scipy, …).
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# The benchmark's optional peer django-hordak, in an environment of its own.
PEERS_VENV := bench/.peers/venv
PEERS_STAMP := $(PEERS_VENV)/.installed

.PHONY: run test lint typecheck pytest bench bench-quick bench-profile bench-peers openapi clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip prints what it collects and installs as it goes (no --quiet): a first install is a
# few dozen packages, and a silent minute looks like a hang.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $@ $(RUN_STAMP)

## Set up from scratch, migrate the SQLite database, seed the demo federation, serve on :$(PORT).
## The demo prints the tour's `export` lines (HEARTLEAF names this port); a second run seeds
## nothing and mints no keys (`heartleaf demo --reissue-keys` revokes them and prints new ones).
run: $(RUN_STAMP)
	$(BIN)/heartleaf db upgrade
	$(BIN)/heartleaf demo --if-empty --server http://127.0.0.1:$(PORT)
	$(BIN)/heartleaf serve --host 127.0.0.1 --port $(PORT)

## Lint, type-check and run every test (SQLite and PostgreSQL).
test: lint typecheck pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

pytest: $(TEST_STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

## The benchmark: prints figures, asserts nothing about time. It first tries to install the
## optional peer django-hordak; without it (no package index) the report says it is absent.
bench: $(RUN_STAMP)
	$(MAKE) --no-print-directory bench-peers || echo "django-hordak not installed: the benchmark reports it absent"
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(RUN_STAMP)
	$(MAKE) --no-print-directory bench-peers || echo "django-hordak not installed: the benchmark reports it absent"
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

## The optional peer django-hordak and Django, from the package index, into bench/.peers/venv.
bench-peers: $(PEERS_STAMP)

$(PEERS_STAMP): bench/peers-requirements.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -r bench/peers-requirements.txt
	touch $@

## Where one in-process transfer's time goes (cProfile; BENCH_ARGS="--backend postgresql").
bench-profile: $(RUN_STAMP)
	$(BIN)/python -m bench.profiling $(BENCH_ARGS)

## Regenerate openapi.yaml from the app.
openapi: $(RUN_STAMP)
	$(BIN)/heartleaf openapi > openapi.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
