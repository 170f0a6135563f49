"""Closed-form scores for Gaussian-mixture data under any linear phase-space process (DESIGN.md §6)."""

from .gmm import BENCHMARK_DIR, ExactScore, GaussianMixture, GMMSpecError, load_gmm, resolve_spec

__all__ = ["BENCHMARK_DIR", "ExactScore", "GMMSpecError", "GaussianMixture", "load_gmm", "resolve_spec"]
