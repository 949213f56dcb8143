# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# The venv sees system site-packages so a CUDA torch already installed on a GPU box is kept; where no torch
# is importable, the CPU build torch==2.13.0 is installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vidpipe-installed

.PHONY: demo venv test test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m vidpipe demo --out out/demo

lint: $(STAMP)
	$(PY) -m ruff check src tests .ci scripts

# what CI runs (.ci/run): lint, fast suite, slow suite, peers rows, the built wheel in a fresh venv
test: $(STAMP)
	.ci/run

# the fast suite alone (no `slow` or `peers` marks), as CI runs it: the one to run while working
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not peers" -n 2 --dist loadfile

clean:
	rm -rf $(VENV) out .pytest_cache
