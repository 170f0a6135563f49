"""Shared pytest set-up: helper modules in tests/ importable (``from helpers import ...``), one torch thread,
and one digits-classifier cache per test run (shared by the xdist workers, trained once)."""

import os
import sys
from pathlib import Path

import pytest
import torch

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


@pytest.fixture(autouse=True, scope="session")
def _one_thread_for_the_session():
    """One torch thread for the whole run, module- and session-scoped fixtures included: the tiny tensors
    here gain nothing from two, and on a shared machine OpenMP spin-waiting makes two threads many times
    slower (results must not depend on the thread count either)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # again for each test, in case the previous one changed it


def _run_root(tmp_path_factory) -> Path:
    """A directory of this test run that every xdist worker sees (the parent of the workers' base temps)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(autouse=True, scope="session")
def _digits_cache_dir(tmp_path_factory):
    """$MOMENTUM_DIFFUSION_CACHE → a directory of this run, for the tests and the entry points they start,
    so that no test reads or writes ~/.cache and the cache does not outlive the run (restored afterwards)."""
    from momentum_diffusion.metrics.digits_classifier import CACHE_ENV

    cache = _run_root(tmp_path_factory) / "md_cache"
    cache.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(cache))
        yield cache


@pytest.fixture(scope="session")
def digits_cache(_digits_cache_dir) -> Path:
    """The run's cache with the digits classifier in it, trained on first use, once per run: the first xdist
    worker to get here trains it under a file lock, the other one then loads it. Request it in tests whose
    entry points compute the digits FD, so that two workers never train it side by side."""
    from filelock import FileLock

    from momentum_diffusion.metrics import digits_classifier as dc

    with FileLock(str(_digits_cache_dir / "train.lock")):
        dc.load_digits_classifier(_digits_cache_dir)
    return _digits_cache_dir
