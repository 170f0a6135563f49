"""Test helpers shared by several test modules: the repository paths, the environment every entry-point
subprocess gets, one runner for those subprocesses, and in-process Hydra composition of conf/."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from momentum_diffusion.processes import cld, critically_damped_chain, hold, ve, vp

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# train.py on the digits in seconds: the CLI tests' training run
TINY_TRAIN = [
    "trainer.max_steps=12",
    "model.base_channels=16",
    "data.batch_size=32",
    "sampler.nfe=[4,8]",  # the one NFE knob; a list = the training evaluation at each budget
    "callbacks.sample_evaluation.n_samples=32",
    "callbacks.checkpoint.every_n_train_steps=6",
]


def load_script(name: str):
    """scripts/<name>.py imported as a module (registered in sys.modules, which dataclasses in a script need)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of an entry-point subprocess: headless plots, offline W&B, one OpenMP thread (2 shared
    cores: spinning OpenMP threads only contend), plus ``extra``."""
    return dict(os.environ, MPLBACKEND="Agg", WANDB_MODE="offline", OMP_NUM_THREADS="1", **extra)


def run_python(
    *args: str, check: bool = True, timeout: float = 600, cwd: Path = REPO, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python ARGS…`` in ``cwd`` with :func:`cli_env`; with ``check``, a non-zero exit fails the test with
    the end of its stderr."""
    proc = subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env() if env is None else env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_script(script: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """An entry point of src/ (``train.py``, ``sample.py``, ``evaluate.py``, ``benchmark.py``) as a user runs it."""
    return run_python(str(REPO / "src" / script), *args, **kwargs)


def compose_config(name: str = "train", *overrides: str, hydra: bool = False):
    """The config of ``name`` (conf/NAME.yaml) with ``overrides``, composed in-process (no CLI start-up);
    ``hydra=True`` keeps the ``hydra`` node (launcher, sweeper)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=hydra)


# The processes the core's tests run over (test_processes.py, test_process_schedules.py); HURWITZ: those with a
# stationary law.
PROCESSES = {
    "vp": vp,
    "ve": ve,
    "cld": cld,
    "hold": hold,
    "chain2": lambda: critically_damped_chain(order=2),
    "chain4": lambda: critically_damped_chain(order=4),
}
HURWITZ = ["vp", "cld", "hold", "chain2", "chain4"]


def sample_moments_with_se(z: torch.Tensor):
    """Sample mean, covariance and the standard errors of each entry (SE of a covariance entry from the
    sample variance of the centred products (z_i − z̄_i)(z_j − z̄_j))."""
    n = z.shape[0]
    mean = z.mean(0)
    c = z - mean
    prod = c[:, :, None] * c[:, None, :]
    cov = prod.sum(0) / (n - 1)
    se_cov = prod.std(0) / math.sqrt(n)
    se_mean = c.std(0) / math.sqrt(n)
    return mean, cov, se_mean, se_cov
