# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deepgeom-installed
OUT ?= results/demo

.PHONY: demo test bench setup lint
setup: $(STAMP)
$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh

demo: $(STAMP)
	$(PY) -m deepgeom demo --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
