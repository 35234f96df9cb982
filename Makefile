# BOS commands. `make run`, `make demo` and `make test` install what they need first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install run demo test lint typecheck bench services services-down clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

run: install
	$(PY) -m bos_project.devservices run -- scripts/run.sh

demo: install
	$(PY) manage.py demo

test: install
	$(PY) -m bos_project.devservices run -- $(PY) -m pytest --ds=tests.settings $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bos_project.devservices run -- $(PY) -m benchmarks.run $(BENCH_ARGS)

services: install
	$(PY) -m bos_project.devservices up

services-down: install
	$(PY) -m bos_project.devservices down

clean:
	rm -rf $(VENV) .bos .pytest_cache .mypy_cache .ruff_cache
