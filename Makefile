# Set-up and common jobs. Everything installs into .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch + torchvision pinned together (torch-fidelity, the FID Inception, needs torchvision); the wheels run on
# CPU and GPU alike. Override e.g. `make install TORCH="torch==2.9.1 torchvision==0.24.1"` on aarch64.
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install train test test-slow sample benchmark benchmark-fast report lint clean bench-network gpu-check

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,fid,wandb]"
	touch $(STAMP)

install: $(STAMP)

# The default job (README): CLD on the digits, 1,000 steps, evaluated with the exponential integrator (CLD's
# default: λ = 1, x̂_0 order 2 + corrector) at 10 NFE, its best budget here (README: FD and time).
train: $(STAMP)
	$(PY) src/train.py sampler=expint sampler.nfe=10 $(ARGS)

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

# On one GPU: train, sample with every sampler, FID, NLL, CelebA-HQ 256², one table (scripts/gpu_check.py).
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py $(ARGS)

# Network speed (issue 12): params, FLOPs, train/inference img/s, compile time, sampler overhead.
# A GPU runs the CIFAR-10 NCSN++ (--preset cifar10), a CPU a small one; e.g. ARGS='--baseline HEAD~5'.
bench-network: $(STAMP)
	$(PY) scripts/bench_network.py $(ARGS)

# Gather a Hydra multirun directory into SWEEP/report/{runs.csv,table.md,*_vs_nfe.png,report.html}.
report: $(STAMP)
	$(PY) scripts/collect_sweep.py $(SWEEP) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

clean:
	rm -rf outputs multirun .pytest_cache
