"""Gaussian-mixture data (mixture.py: specs, sampling) and its closed-form score under any linear
phase-space process (score.py), the network-free yardstick (DESIGN.md §6)."""

from .mixture import BENCHMARK_DIR, GaussianMixture, GMMSpecError, load_gmm, resolve_spec
from .score import ExactScore

__all__ = ["BENCHMARK_DIR", "ExactScore", "GMMSpecError", "GaussianMixture", "load_gmm", "resolve_spec"]
