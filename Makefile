# make run: set up everything on a fresh Debian machine and serve the demo library.
# make test: the same set-up, then lint, types and the whole test suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := ffmpeg nginx chromium gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav
SETUP_STAMP := $(VENV)/.setup-done

.PHONY: run test setup system-deps lint check bench clean

run: setup
	$(VENV)/bin/hls-origin serve --host 127.0.0.1 --port 8080

test: setup lint
	$(VENV)/bin/pytest -q --durations=12

setup: system-deps $(SETUP_STAMP) node_modules/hls.js/package.json

system-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

$(SETUP_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

node_modules/hls.js/package.json: package.json
	npm install --no-audit --no-fund --silent
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/seams.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
