# One-command set-up for a fresh Debian machine.
#   make demo   set everything up, then run the main job (class-incremental SLURP-3 on the built-in demo corpus)
#   make tiny   set everything up, then run the one-minute example (three tiny tasks on a tiny corpus)
#   make test   set everything up, then run the fast test suite (SLUKD_SLOW=1 make test adds the slow tests)
# Set-up: system packages through apt when run as root (espeak-ng, a Java runtime), a virtual environment in .venv
# (reused when present), the package with its [dev] extra.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.slukd-installed
APT_PACKAGES := espeak-ng default-jre-headless libjemalloc2

.PHONY: setup system venv demo tiny test lint format clean

setup: system venv

system:
	@missing=""; \
	command -v espeak-ng >/dev/null 2>&1 || missing="$$missing espeak-ng"; \
	command -v java >/dev/null 2>&1 || missing="$$missing default-jre-headless"; \
	ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1 || missing="$$missing libjemalloc2"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing system packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) || exit 1; \
	  else \
	    echo "NOTE: not root; please install these system packages:$$missing (sudo apt-get install -y$$missing)"; \
	    echo "      espeak-ng synthesises the built-in corpora (or: .venv/bin/pip install espeakng-loader); Java is only for METEOR."; \
	  fi; \
	fi

$(STAMP): setup.py pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: setup
	$(PY) -m slukd.demo

tiny: setup
	$(PY) -m slukd.demo --tiny

test: setup
	@set -o pipefail; $(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: venv
	$(VENV)/bin/ruff check slukd recipes tests benchmarks
	$(VENV)/bin/ruff format --check slukd recipes tests benchmarks

format: venv
	$(VENV)/bin/ruff format slukd recipes tests benchmarks
	$(VENV)/bin/ruff check --fix slukd recipes tests benchmarks

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
