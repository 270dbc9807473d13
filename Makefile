# crisis-stream: `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch, used only to fine-tune/export/quantize models (not by the worker). Plain PyPI serves
# the CUDA build on Linux; TORCH_INDEX=https://download.pytorch.org/whl/cpu takes the CPU one.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BUNDLE ?= models/e5-crisis
# The production bundle: the encoder cut to 8 layers and fine-tuned across events (about 11
# minutes on 2 cores).
TUNED_BUNDLE ?= models/e5-crisis-tuned
# The container image: `make image` builds the bundle inside the image (torch stage, minutes);
# `make image BUNDLE_FROM=context` bakes $(BUNDLE) in instead (make models first).
# CONTAINER=podman works as well (docs/deployment.md#building-the-image).
CONTAINER ?= docker
IMAGE ?= crisis-stream:latest
BUNDLE_FROM ?= build

# Debian tools some tests drive for real: headless Chromium (HTML reports), docker-compose v1
# (validates the compose file offline), promtool (checks the Prometheus config).
SYSTEM_TOOLS := chromium docker-compose promtool
SYSTEM_PACKAGES := chromium docker-compose prometheus

.PHONY: setup system models models-tuned crossval crossval-tuned demo test test-slow lint bench \
	clean lock image

setup: $(VENV)/.installed

# Installs the Debian tools when missing and apt-get is usable (root); otherwise the tests
# that need them skip with a reason.
system:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "warning: missing$$missing (not root): the tests that need them will skip"; fi; \
	fi

# The runtime dependencies at the versions of requirements.lock (constraints: extras float).
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c requirements.lock -e '.[local,build,e5,dev]'
	touch $@

# Re-pin the runtime dependencies at the versions installed in $(VENV).
lock: setup
	$(PY) deploy/lock.py > requirements.lock

image: $(if $(filter context,$(BUNDLE_FROM)),models)
	$(CONTAINER) build --build-arg BUNDLE_FROM=$(BUNDLE_FROM) \
	  $(if $(filter context,$(BUNDLE_FROM)),--build-context bundle=$(BUNDLE)) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) -t $(IMAGE) .

models: $(BUNDLE)/manifest.json

$(BUNDLE)/manifest.json: $(VENV)/.installed
	$(PY) -m stream models build --out $(BUNDLE)

models-tuned: $(TUNED_BUNDLE)/manifest.json

$(TUNED_BUNDLE)/manifest.json: $(VENV)/.installed
	$(PY) -m stream models build --finetune --out $(TUNED_BUNDLE)

# Cross-event evaluation of the bundle's recipe (about 30 minutes on 2 cores); the summary goes
# into the bundle's manifest and MODEL_CARD.md, the full report into reports/.
crossval: models
	$(PY) -m stream models crossval --bundle $(BUNDLE) --record --out reports/crossval.json

# The same for the fine-tuned bundle: five folds, each fine-tuning its own encoder (about an hour).
crossval-tuned: models-tuned
	$(PY) -m stream models crossval --bundle $(TUNED_BUNDLE) --finetune --no-fp32 --record \
	  --out reports/crossval-tuned.json

demo: models
	$(PY) -m stream demo --bundle $(BUNDLE)

test: models system
	$(PY) -m pytest -q -p no:cacheprovider

test-slow: models system
	$(PY) -m pytest -q -m slow

# Benchmarks print ratios against a baseline measured in the same run (shared CPUs); each
# script takes --full for the full sizes (20,000 events).
bench: models
	$(PY) bench/encoder.py
	$(PY) bench/roofline.py
	$(PY) bench/pipeline.py
	$(PY) bench/cache.py
	$(PY) bench/latency.py
	$(PY) bench/memory.py

lint: setup
	$(VENV)/bin/ruff check stream tests bench
	$(VENV)/bin/ruff format --check stream tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) $(BUNDLE) .pytest_cache .mypy_cache .ruff_cache
