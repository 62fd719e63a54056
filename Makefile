# faas-infer: `make up` serves stack.yml locally with batching and autoscaling; `make test` runs the tests.
# Both install what they need: Debian packages (redis-server, prometheus) and a pinned .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBS := redis-server prometheus

.PHONY: up test bench deps system-deps clean

up: deps
	$(VENV)/bin/faas-infer up -f stack.yml

test: deps
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: deps
	$(VENV)/bin/faas-infer bench batching --json out/bench-batching.json

deps: system-deps $(STAMP)

system-deps:
	@missing=""; for b in redis-server prometheus; do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(DEBS) \
	    || { echo "ERROR: could not install$$missing (needed by faas-infer)"; exit 1; }; \
	fi
	@command -v redis-server >/dev/null || { echo "ERROR: redis-server missing after install"; exit 1; }

$(STAMP): requirements.txt requirements-dev.txt setup.cfg pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	$(VENV)/bin/pip install -q --no-deps -e . --config-settings editable_mode=compat
	@$(PY) -c "import torch, sys; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '2.13.0' else 'torch ' + v + ' installed, 2.13.0 required')"
	touch $(STAMP)

clean:
	rm -rf $(VENV) out build *.egg-info
