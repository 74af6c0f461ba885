# Two commands on a fresh machine: `make test` and `make demo`. Both create .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint demo bench vectors clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/ruff format --check src tests bench tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m handover.cli.demo

bench: $(STAMP)
	$(PY) bench/run.py $(ARGS)

vectors: $(STAMP)
	$(PY) tools/make_vectors.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build dist

# The fault matrix under load (tests/faults): thousands of packets per case, more
# seeds (HANDOVER_SOAK_SEEDS, default 5). `make test` runs it small.
.PHONY: soak soak-faults
soak: soak-faults
soak-faults: $(STAMP)
	HANDOVER_SOAK=1 $(VENV)/bin/pytest -q $(PYTEST_ARGS) tests/faults
