# fepy: make demo | make test | make bench   (everything runs in the local .venv)
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-test

.PHONY: venv demo test bench clean-runs

venv: $(STAMP)

# one pip install per venv (and again when pyproject.toml changes); an existing .venv is reused
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e ".[test]"
	touch $@

demo: venv
	$(VENV)/bin/fepy run models/gmm40.py --out runs/gmm40

test: venv
	$(VENV)/bin/python -m pytest -q

$(VENV)/.installed-bench: $(STAMP)
	$(VENV)/bin/pip install -e ".[bench]"
	touch $@

bench: $(VENV)/.installed-bench
	$(VENV)/bin/python -m benchmarks

clean-runs:
	rm -rf runs
