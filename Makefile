# Jaejin: `make demo` runs the product, `make test` runs every test. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export JAEJIN_DATABASE_URL ?= sqlite:///$(CURDIR)/var/jaejin.db

.PHONY: install catalogues demo serve test test-sqlite test-postgres lint system-deps bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed catalogues

catalogues: $(VENV)/.installed
	$(PY) -m jaejin.core.i18n > /dev/null

## Install, migrate the SQLite database under ./var/, load the demo, serve on http://127.0.0.1:8000
demo: install
	mkdir -p var
	$(BIN)/jaejin demo --serve --port $(PORT)

serve: install
	$(BIN)/jaejin serve --host $(HOST) --port $(PORT)

## Headless Chromium and CJK fonts for the browser tests (Debian/Ubuntu; as root, or through
## password-less sudo), installed only when missing. Tests never download anything themselves.
system-deps:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then root=""; elif sudo -n true 2>/dev/null; then root="sudo -n"; \
	  else echo "system-deps: cannot install$$missing (not root, no sudo); the browser tests need them"; exit 0; fi; \
	  if ! command -v apt-get >/dev/null; then echo "system-deps: install$$missing yourself"; exit 0; fi; \
	  echo "installing:$$missing"; \
	  $$root apt-get update -qq && $$root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check jaejin tests benchmarks
	$(BIN)/mypy jaejin

## The whole suite on SQLite, then again on PostgreSQL when JAEJIN_TEST_POSTGRES_URL is set.
## Two workers; `--dist loadgroup` keeps each xdist_group (all browser tests) on one worker.
## The slowest tests are listed, to notice the suite slowing down.
PYTEST_RUN := $(BIN)/pytest -n 2 --dist loadgroup -q --durations=15

test: install system-deps lint test-sqlite test-postgres

test-sqlite: install
	$(PYTEST_RUN)

test-postgres: install
	@if [ -n "$$JAEJIN_TEST_POSTGRES_URL" ]; then \
	  JAEJIN_TEST_DATABASE_URL="$$JAEJIN_TEST_POSTGRES_URL" $(PYTEST_RUN); \
	else \
	  echo "JAEJIN_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run"; \
	fi

## Benchmarks print figures and ratios against a baseline measured in the same run.
bench: install
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

## Extract every capability's messages to locales/messages.pot, then merge them into its ko/en
## catalogues (platform catalogues are merged; hand-kept ones only get missing msgids appended).
.PHONY: catalogues-extract
catalogues-extract: $(VENV)/.installed
	$(PY) scripts/i18n.py extract
	$(PY) scripts/i18n.py update
	$(PY) scripts/i18n.py check || true
