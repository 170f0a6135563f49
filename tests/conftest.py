"""Shared pytest setup: make helper modules in tests/ importable (``from gaussian import ...``)."""

import sys
from pathlib import Path

import pytest
import torch

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


@pytest.fixture(autouse=True)
def _single_thread():
    """One torch thread per test: the tiny tensors here gain nothing from two, and on a shared machine
    OpenMP spin-waiting makes two threads many times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
