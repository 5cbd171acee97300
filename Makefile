# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Database tests run on SQLite and, when this URL is set (the default: the local
# server), again on PostgreSQL. `make test ZHIDA_TEST_POSTGRES_URL=` skips PostgreSQL;
# so does a machine where no server answers at the URL, with one line saying so
# (ZHIDA_TEST_POSTGRES_REQUIRED=1, as CI sets it, makes that a failure instead).
ZHIDA_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
export ZHIDA_TEST_POSTGRES_URL

.PHONY: run test lint typecheck pytest screenshots install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/zhida run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

pytest: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=15

test: lint typecheck pytest

# The browser test saves each web page at 1440×900 under docs/screenshots/.
screenshots: $(STAMP)
	ZHIDA_SCREENSHOTS=1 $(BIN)/pytest -q tests/test_browser.py

clean:
	rm -rf $(VENV) var
