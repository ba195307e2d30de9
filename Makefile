# Two commands on a fresh machine (see README):
#   make serve   install into .venv and start the server on embedded defaults
#   make test    install the test extras and run the whole suite (lint, types, tests)

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build on this machine's local wheel; on a GPU host set TORCH to the CUDA build you want.
TORCH ?= torch==2.13.0
WEIGHTS ?= dummy
PORT ?= 8000

.PHONY: install install-test serve test lint browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first: anything that depends on it then finds it installed and pulls no CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -c constraints.txt -e ".[engine]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -c constraints.txt -e ".[engine,test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: install
	$(BIN)/wanserve serve --weights $(WEIGHTS) --port $(PORT)

lint: install-test
	$(BIN)/ruff check wanserve tests bench
	$(BIN)/ruff format --check wanserve tests bench
	$(BIN)/mypy
	$(BIN)/python tests/check_waits.py  # no sleeps or literal timeouts outside tests/waiting.py

# The playground's browser tests drive Debian's Chromium (Playwright never downloads one). As
# root (CI) it is installed when missing; anyone else gets a note, and those tests skip.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "chromium is not installed and this is not root: tests/web will be skipped"; \
	  fi; }

test: lint browser
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
