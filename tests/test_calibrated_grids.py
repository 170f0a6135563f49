"""The calibrated time grids (samplers/calibrated_grids.py) and their optimiser (scripts/calibrate_grid.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import load_script
from momentum_diffusion.processes import cld, hold, vp
from momentum_diffusion.samplers import calibrated_grids
from momentum_diffusion.samplers.base import SamplerConfigError, time_grid


@pytest.mark.parametrize("process", [cld(), hold()], ids=["cld", "hold"])
@pytest.mark.parametrize("n", [1, 9, 14, 19, 29, 199])
def test_calibrated_grid_runs_from_t_max_to_t_min_strictly_decreasing(process, n):
    ts = time_grid(process, n, "calibrated")
    assert ts.dtype == torch.float64 and len(ts) == n + 1
    assert ts[0] == process.t_max and ts[-1] == process.t_min
    assert torch.all(ts[1:] < ts[:-1])


def test_the_identity_warp_is_the_cubic_power_grid():
    ts = calibrated_grids.calibrated_grid(1e-3, 1.0, 12, 1 - np.linspace(0, 1, 4))
    u = torch.linspace(0, 1, 13, dtype=torch.float64)
    assert torch.allclose(ts, 1e-3 + (1 - 1e-3) * (1 - u) ** 3)


def test_a_process_without_a_calibrated_grid_is_one_clear_error():
    with pytest.raises(SamplerConfigError, match="no grid for diffusion 'vp'.*calibrate_grid.py"):
        time_grid(vp(), 10, "calibrated")


@pytest.mark.parametrize("knots", [(1, 0.5, 0.6, 0), (0.9, 0.5, 0), (1, 0.5, 0.1), (1, 0)[:1]])
def test_knots_must_decrease_from_one_to_zero(knots):
    with pytest.raises(ValueError, match="decrease strictly from 1 to 0"):
        calibrated_grids.check_knots(knots)


def test_coordinate_search_finds_the_minimum_of_a_separable_bowl_and_keeps_knots_ordered():
    script = load_script("calibrate_grid")
    goal = np.array([1.0, 0.9, 0.5, 0.2, 0.0])
    seen = []

    def evaluate(w):
        seen.append(w.copy())
        return 100 * float(np.sum((w - goal) ** 2)), []

    w, value = script.coordinate_search(evaluate, 1 - np.linspace(0, 1, 5), step=0.08, sweeps=12, log=lambda s: None)
    assert np.abs(w - goal).max() < 0.02 and value < 0.1
    assert all(np.all(np.diff(c) < 0) for c in seen) and w[0] == 1 and w[-1] == 0
