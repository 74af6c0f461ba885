# Two commands on a fresh machine: `make test` and `make demo`. Both create .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint soak demo bench vectors clean chromium

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

# The browser tests (tests/ui) drive Debian's chromium; as root it is installed when missing.
chromium:
	@command -v chromium >/dev/null || (test "$$(id -u)" = 0 && \
		(apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium))) \
		|| echo "warning: chromium is missing: sudo apt-get install chromium (tests/ui will fail)"

test: lint chromium
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

# The test campaign of tests/campaign at soak size (one at a time: it floods a node
# for 60 s and fuzzes each target 100,000 times); figures go to $(SOAK_REPORT).
SOAK_REPORT ?= build/soak-report.txt
soak: $(STAMP)
	mkdir -p $(dir $(SOAK_REPORT)) && rm -f $(SOAK_REPORT)
	CAMPAIGN_SOAK=1 CAMPAIGN_REPORT=$(abspath $(SOAK_REPORT)) \
		$(VENV)/bin/pytest -q -s -p no:cacheprovider tests/campaign $(PYTEST_ARGS); \
		status=$$?; echo "--- soak figures ($(SOAK_REPORT))"; cat $(SOAK_REPORT); exit $$status

demo: $(STAMP)
	$(PY) -m handover.cli.demo $(ARGS)

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
