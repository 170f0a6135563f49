# Set-up and common jobs. Everything installs into .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU wheel by default; on a GPU machine use e.g. `make install TORCH=torch` (pip picks the CUDA build).
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install train test test-slow sample benchmark benchmark-fast lint clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) src/train.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(ARGS)

sample: $(STAMP)
	$(PY) src/sample.py ckpt=$(CKPT) $(ARGS)

benchmark: $(STAMP)
	$(PY) src/benchmark_grid.py $(ARGS)

benchmark-fast: $(STAMP)
	$(PY) src/benchmark_fast.py $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

clean:
	rm -rf outputs multirun .pytest_cache
