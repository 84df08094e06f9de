# smbnd: `make run` starts the demo, `make test` runs the test suite. Both bootstrap themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast peers interop bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,fast]'
	@touch $(STAMP)

peers:
	@tools/install-peers.sh

run: $(STAMP)
	$(PY) -m tools.demo

# three workers: the smbtorture/witness/kernel runs spend most of their time waiting on timeouts
test: $(STAMP) peers
	$(PY) -m pytest -q -ra -n 3

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -n 3 -m "not torture and not kernel"

interop: $(STAMP) peers
	$(PY) -m pytest -q -ra -m "torture or kernel"

bench: $(STAMP) peers
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) var .pytest_cache
