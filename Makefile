# Quickstart: `make demo` (runs the example on SQLite) and `make test` (lint, types, layers, tests).
# Each creates the virtualenv it needs on first use.

PYTHON ?= python3
DEMO_VENV ?= .venv-demo
TEST_VENV ?= .venv
PYTEST_ARGS ?=

# Admin URLs for the throwaway databases of `make bench` (override as needed).
TASKEXEC_RACE_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
TASKEXEC_RACE_MYSQL_URL ?= mysql+pymysql://root@127.0.0.1:3306/test
export TASKEXEC_RACE_POSTGRES_URL TASKEXEC_RACE_MYSQL_URL

.PHONY: demo test lint bench clean

$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install -q --upgrade pip
	$(DEMO_VENV)/bin/pip install -q -e ".[bench]"
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install -q --upgrade pip
	$(TEST_VENV)/bin/pip install -q -e ".[test]"
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/taskexec demo

lint: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/ruff check src tests tools
	$(TEST_VENV)/bin/ruff format --check src tests tools
	$(TEST_VENV)/bin/mypy
	$(TEST_VENV)/bin/lint-imports --no-cache
	$(TEST_VENV)/bin/python tools/check_shape.py src

test: lint
	$(TEST_VENV)/bin/pytest $(PYTEST_ARGS)

# Reproduces docs/benchmarks.md: the full race and bench on this machine (~20 min).
bench: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/taskexec race --out docs/race
	$(TEST_VENV)/bin/taskexec bench --out docs/bench

clean:
	rm -rf $(DEMO_VENV) $(TEST_VENV) .pytest_cache .mypy_cache .ruff_cache
