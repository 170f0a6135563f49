"""Time grids optimised once per process on the calibration mixture (issue 16: "time grids chosen by a rule or
optimised once per process ..., never per data spec").

    t(u) = t_min + (t_max − t_min) · w(u)³,   u = i / n,   w piecewise linear through ``KNOTS[process]`` at
    u = 0, 1/6, …, 1 (w(0) = 1, w(1) = 0, decreasing).

w = 1 − u is the power grid t ∝ (1 − u)³ (the quadratic grid is the same with exponent 2). The interior knots
were found by ``scripts/calibrate_grid.py``: a coordinate search from w = 1 − u minimising the mean log mode-KL
of expint's default (λ = 1, x̂_0-steps, order 2, corrector) at 15 / 20 / 30 NFE with exact scores on
``benchmarks/results/fast_sampling/calibration_random3d.yaml`` (no public spec; seed 0, n = 4000), with the
process constants of the fast-sampling benchmark (CLD β = 4, HOLD β = 5). The figures, the check on the public
specs and on trained networks are in docs/fast_sampling.md ("Session 12"): with exact scores HOLD reaches
EM@1000's band at ≤ 20 NFE on three of four public specs, but on trained digits networks both grids lose at
10–20 NFE (an early jump carries the network's poor x̂_0), so no process uses them by default.
"""

from __future__ import annotations

import numpy as np
import torch

# process name → w at u = 0, 1/6, …, 1 (scripts/calibrate_grid.py; docs/fast_sampling.md)
KNOTS: dict[str, tuple[float, ...]] = {
    "cld": (1.0, 0.7433, 0.7267, 0.5, 0.3333, 0.1967, 0.0),
    "hold": (1.0, 0.953, 0.607, 0.47, 0.348, 0.332, 0.0),
}
EXPONENT = 3.0


def check_knots(knots) -> np.ndarray:
    """Knot values as an array; they must run from 1 down to 0, strictly decreasing."""
    w = np.asarray(knots, dtype=np.float64)
    if len(w) < 2 or w[0] != 1.0 or w[-1] != 0.0 or not np.all(np.diff(w) < 0):
        raise ValueError(f"calibrated grid knots must decrease strictly from 1 to 0, got {list(knots)}")
    return w


def calibrated_grid(t_min: float, t_max: float, n_steps: int, knots) -> torch.Tensor:
    """n_steps + 1 times from t_max down to t_min (float64) through the warp ``knots`` (module docstring)."""
    w = check_knots(knots)
    u = np.linspace(0.0, 1.0, n_steps + 1)
    warped = np.interp(u, np.linspace(0.0, 1.0, len(w)), w)
    ts = torch.tensor(t_min + (t_max - t_min) * warped**EXPONENT, dtype=torch.float64)
    ts[0], ts[-1] = t_max, t_min
    return ts
