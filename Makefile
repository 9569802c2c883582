# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench lint clean

setup: $(STAMP)

# Reinstall whenever the declared dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 -q

demo: $(STAMP)
	$(VENV)/bin/tinycnn train --data digits --out runs/demo --overwrite

bench: $(STAMP)
	$(PY) bench/bench.py

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build src/*.egg-info runs
