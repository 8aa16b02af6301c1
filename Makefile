# One entry point for everything a person or CI runs.
#   make demo   set up, start the embedded MongoDB, run the examples on real files
#   make test   set up and run the whole suite on mongomock and on a real mongod
#   make bench  set up and run the benchmark

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m execstore server start
	$(PY) examples/cache_file_digests.py
	$(PY) examples/cache_file_digests.py
	$(PY) examples/inspect_stores.py --clear-cache

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check execstore tests examples bench
	$(VENV)/bin/mypy execstore

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
