# Two commands matter: `make run` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint check bench bench-all clean

$(STAMP): pyproject.toml examples/greeter/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# bench: the peers (Celery, Dramatiq) and msgspec, which benchmarks/ and their smoke tests import
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	# the example collector package: the tests check entry-point discovery with it
	$(PY) -m pip install --quiet --no-deps -e examples/greeter
	@touch $(STAMP)

install: $(STAMP)

## run: start eventbusd on embedded defaults plus one demo collector (Ctrl-C stops both)
run: $(STAMP)
	@VENV=$(VENV) scripts/run-demo.sh

## test: the whole suite (unit, property, end-to-end with real processes)
test: $(STAMP)
	$(PY) -m pytest

## lint: ruff, formatting, mypy --strict
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## check: everything CI runs
check: lint test

## bench: echo round-trip latency through the real daemon vs a raw ZeroMQ baseline
bench: $(STAMP)
	$(PY) benchmarks/echo_latency.py

## bench-all: eventbus, raw pyzmq, Celery and Dramatiq in one run -> benchmarks/RESULTS.md (needs Redis)
bench-all: $(STAMP)
	$(PY) benchmarks/results.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
