# The two set-up commands of the README: `make up` runs the system, `make test` runs the tests.
# Both create .venv (and install the project into it) when it is missing or out of date.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: up test lint unit services-up services-down clean system

# Debian packages the stack needs (redis-server, Java, Maven, promtool): installed with apt-get
# when run as root, otherwise the command to run is printed and make stops.
system:
	@bash infra/local/system-packages.sh

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: system $(STAMP)
	$(VENV)/bin/recsys up

test: system $(STAMP) lint
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

unit: $(STAMP)
	$(VENV)/bin/pytest -m unit

services-up: system $(STAMP)
	$(VENV)/bin/recsys services up

services-down: $(STAMP)
	$(VENV)/bin/recsys services down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
