# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# The venv sees system site-packages so a CUDA torch already installed on a GPU box is kept; where no torch
# is importable, the CPU build torch==2.13.0 is installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vidpipe-installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m vidpipe demo --out out/demo

lint: $(STAMP)
	$(PY) -m ruff check src tests

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
