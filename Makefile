# BOS commands. `make run`, `make demo` and `make test` install what they need first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install browsers run demo test test-fast lint docs typecheck schemas bench bench-ingest bench-check bench-metrics bench-security bench-dashboard services services-down clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

# Debian's chromium for the page tests (tests/browser/), driven by playwright: no download
# of a browser of playwright's own. Installed once; skipped where it is already there.
browsers:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || { \
	    $$SUDO apt-get update -q >/dev/null && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; }

run: install
	$(PY) -m bos_project.devservices run -- scripts/run.sh

demo: install
	$(PY) manage.py demo $(DEMO_ARGS)

test: install browsers
	$(PY) -m bos_project.devservices run -- $(PY) -m pytest --ds=tests.settings $(PYTEST_ARGS)

# The inner loop: the unit tests alone (tests/unit, marker `unit`), no services, seconds.
test-fast: install
	$(OFFLINE_ENV) $(PY) -m pytest --ds=tests.settings -m unit -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(OFFLINE_ENV) $(PY) manage.py config_docs --check

# Generated docs: docs/configuration.md from the settings' declarations (`make lint` checks it).
docs: install
	$(OFFLINE_ENV) $(PY) manage.py config_docs

typecheck: install
	$(VENV)/bin/mypy

# Commands that connect to nothing get placeholder URLs for services that are not configured.
OFFLINE_ENV = DATABASE_URL=$${DATABASE_URL:-postgres://unused@127.0.0.1:1/unused} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:1/0} \
	KAFKA_BOOTSTRAP_SERVERS=$${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:1}

# Regenerate the committed OpenAPI schema (docs/contracts.md). Generating it connects to
# nothing, so placeholder URLs stand in for services that are not configured.
schemas: install
	DATABASE_URL=$${DATABASE_URL:-postgres://unused@127.0.0.1:1/unused} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:1/0} \
	KAFKA_BOOTSTRAP_SERVERS=$${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:1} \
	$(PY) manage.py spectacular --validate --fail-on-warn --file schemas/openapi.yaml

bench: install
	$(PY) -m bos_project.devservices run -- $(PY) -m benchmarks.run $(BENCH_ARGS)

# The ratios of the last `make bench` / `make bench-ingest` beside benchmarks/baseline.json:
# fails when one regressed by more than 25 % (docs/benchmarks.md#regression-check).
bench-check: install
	$(PY) -m benchmarks.check $(CHECK_ARGS)

# The Kafka consumer's ingest rate beside a plain kafka-python loop (docs/benchmarks.md).
bench-ingest: install
	$(PY) -m bos_project.devservices run -- $(PY) -m benchmarks.ingest $(BENCH_ARGS)

# What the metrics cost per query, per request and task, per scrape (docs/benchmarks.md).
bench-metrics: install
	$(PY) -m bos_project.devservices run -- $(PY) -m benchmarks.metrics_overhead

# What encryption at rest and masking cost per value, beside JSON alone (docs/benchmarks.md).
bench-security: install
	$(OFFLINE_ENV) $(PY) -m benchmarks.security_overhead

# What /dashboard/'s reads cost over a week of work, and over a month (docs/dashboard.md).
bench-dashboard: install
	$(PY) -m bos_project.devservices run -- $(PY) -m benchmarks.dashboard $(BENCH_ARGS)

services: install
	$(PY) -m bos_project.devservices up

services-down: install
	$(PY) -m bos_project.devservices down

clean:
	rm -rf $(VENV) .bos .pytest_cache .mypy_cache .ruff_cache
