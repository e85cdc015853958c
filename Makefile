# PapReview: `make run` starts the whole app on a fresh machine; `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Install from the package index as a fresh machine would: a local pip config may cap torch below
# the pinned pair (torch 2.14.0 + torchvision 0.29.2), which is the pair that imports together.
PIP := PIP_CONFIG_FILE=/dev/null $(BIN)/pip
CHROMIUM ?= /usr/bin/chromium

.PHONY: help run test lint typecheck pytest deps dev-deps node browser nginx clean

help:
	@echo "make run   - set up and start web server + worker on http://127.0.0.1:8000"
	@echo "make test  - set up and run ruff, mypy and pytest"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.runtime-deps: requirements.txt | $(BIN)/python
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-deps: requirements-dev.txt $(VENV)/.runtime-deps
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(VENV)/.runtime-deps node_modules/.installed
dev-deps: $(VENV)/.dev-deps node_modules/.installed

# Browser tests drive Debian's Chromium; no test tool downloads a browser of its own.
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "Chromium is missing: sudo apt-get install chromium" >&2; exit 1; fi; }

run: deps
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py demo_data
	$(BIN)/python manage.py runstack

lint: $(VENV)/.dev-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(VENV)/.dev-deps
	$(BIN)/mypy

# The slow-client test runs docker/nginx.conf with Debian's nginx in front of gunicorn.
NGINX ?= /usr/sbin/nginx
nginx:
	@test -x $(NGINX) || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	  else echo "nginx is missing: sudo apt-get install nginx" >&2; exit 1; fi; }

pytest: dev-deps browser nginx
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) node_modules var staticfiles .mypy_cache .ruff_cache .pytest_cache
