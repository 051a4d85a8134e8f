# Two commands set up a fresh machine: `make run` (the gateway) and `make test` (everything
# that must pass). Both create .venv if it is missing and install what they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
SAM_VERSION := 1.170.0
PY313_BIN := $(firstword $(wildcard /root/.pyenv/versions/3.13*/bin))
DEBIAN_PACKAGES := swaks postfix chromium chromium-driver
export SAM_CLI_TELEMETRY := 0

.PHONY: run test lint typecheck unit integration e2e validate demo bench sam-build system-deps clean help

help:
	@echo "make run    start the gateway on 127.0.0.1:2525 (Ctrl-C stops it)"
	@echo "make test   lint, type-check, validate the template and run every test"
	@echo "make demo   send the sample messages through a fresh gateway and check their outcomes"
	@echo "make bench  throughput, latency, concurrency, large messages, cold start and cost (prints figures)"

$(STAMP): requirements-dev.txt layers/core/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(SAM):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check aws-sam-cli==$(SAM_VERSION)

# swaks (a real SMTP client), postfix (smtp-source for the benchmark) and chromium with
# chromium-driver (the console's browser tests) from Debian.
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null \
	    || { $$SUDO apt-get update -q >/dev/null && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; \
	fi

run: $(STAMP)
	$(BIN)/mxgate run

demo: $(STAMP)
	$(BIN)/mxgate demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo  # package boundaries: pyproject.toml [tool.importlinter]

# Each function's app.py is its own top-level module `app`, so each is checked on its own.
typecheck: $(STAMP)
	$(BIN)/mypy
	@for handler in functions/*/app.py; do $(BIN)/mypy --no-error-summary $$handler || exit 1; done

# sam validate --lint, then cfn-lint with the house rules (lint/cfn_rules) and informational checks.
validate: $(SAM) $(STAMP)
	$(SAM) validate --lint --template template.yaml
	$(BIN)/cfn-lint --include-checks I --append-rules lint/cfn_rules -- template.yaml

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

e2e: $(STAMP) system-deps
	$(BIN)/pytest tests/e2e -q

test: $(STAMP) $(SAM) system-deps lint typecheck validate
	$(BIN)/pytest -q

# `sam build` without Docker needs the runtime's own Python on PATH (TOOLING.md); the config
# layer's build (config/Makefile) checks the routes file and writes its JSON form with this
# mxgate. Then every module of the build gets hash-based bytecode compiled by that Python: SAM's
# zip dates each file 1980, so timestamp .pyc files never validate on Lambda, and without these
# each cold start compiles every module it imports (docs/benchmarks.md, Cold start).
SAM_BUILD_DIR ?= .aws-sam/build
sam-build: $(SAM) $(STAMP)
	@if [ -z "$(PY313_BIN)" ]; then echo "python3.13 not found under /root/.pyenv/versions: skipping sam build"; \
	else PATH=$(PY313_BIN):$$PATH MXGATE_BIN=$(abspath $(BIN))/mxgate \
	  $(SAM) build --template template.yaml --build-dir $(SAM_BUILD_DIR) \
	  && $(PY313_BIN)/python3.13 -m compileall -q -f -j 0 --invalidation-mode unchecked-hash $(SAM_BUILD_DIR); fi

# Every script's scratch directories are kept until the last script has run, then removed
# together (bench/scratch.py says why: freed inodes make the next script's new files dearer).
# mktemp's 0700 would keep Postfix's daemons (user postfix) out of their queue under it.
BENCHES := throughput.py concurrency.py large_message.py cold_start.py \
  "cold_start.py --layer-bytecode --runs 3" parse_speed.py parse_memory.py spf_speed.py \
  cost.py deferral.py outage.py

bench: $(STAMP) system-deps
	@uptime
	@kept=$$(mktemp -d "$${TMPDIR:-/tmp}/mxgate-bench-kept-XXXXXX") && trap 'rm -rf "$$kept"' EXIT && \
	chmod 755 "$$kept" && \
	for script in $(BENCHES); do \
	  echo "$(BIN)/python bench/$$script"; \
	  MXGATE_BENCH_KEEP="$$kept" $(BIN)/python bench/$$script || exit 1; \
	done

clean:
	rm -rf .mxgate .aws-sam .pytest_cache .mypy_cache .ruff_cache
