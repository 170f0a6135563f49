"""The data-prediction plans of samplers/expint_plan.py against independent routes: the weights' moments against
scipy quadrature of the Gaussian bridge, the closed forms and the Magnus steps against the ODE route
(tests/expint_reference.py), and the Magnus rule's order."""

import pytest
import torch
from scipy.integrate import quad_vec

from expint_reference import ode_steps
from momentum_diffusion.processes import cld, hold, vp
from momentum_diffusion.samplers import expint_plan
from momentum_diffusion.samplers.base import time_grid

F64 = torch.float64


def independent_step(process, t_next, t, lam=1.0):
    """Ψ(t', s) e_k g(s) (module docstring of expint_plan) for λ = 1 from the core's kernel alone: the
    Gaussian bridge Ψ(t', s) = Σ_{t'} Φ(τ_s − τ_{t'})ᵀ Σ_s⁻¹ and g(s) = b q (Σ_s⁻¹ e_k)·φ_s (no gDDIM factor)."""
    Phi_lo, sigma_lo, _ = process.kernel(torch.tensor(t_next, dtype=F64))

    def column(s):
        Phi, sigma, _ = process.kernel(torch.tensor(s, dtype=F64))
        p = torch.linalg.inv(sigma)[:, -1]
        g = process.noise_scale * float(process.b(torch.tensor(s, dtype=F64))) * float(p @ Phi[:, 0])
        back = process.transition(torch.tensor(t_next, dtype=F64), torch.tensor(s, dtype=F64))[0]
        return (sigma_lo @ back.T @ p * g).numpy()

    return column


@pytest.mark.parametrize("make", [vp, cld, hold])
def test_data_prediction_weights_match_an_independent_quadrature(make):
    """Each weight V_j belongs to its node: Σ_j V_j node_j^m = ∫ Ψ(t', s) e_k g(s) s^m ds for every m below the
    number of nodes (predictor: t_i, t_{i−1}, t_{i−2}; corrector: t_{i+1} first). Weights summing to the right
    total but on the wrong nodes (all a point-mass test sees) fail the m ≥ 1 moments."""
    process = make(t_min=0.05)
    ts = time_grid(process, 6, "quadratic")
    steps = expint_plan.StepIntervals(ts, 3, lambda t: t, corrector=True)
    plan = expint_plan.data_prediction_steps(process, steps, 1.0)
    for i in (2, 4):
        column = independent_step(process, float(ts[i + 1]), float(ts[i]))
        for name, nodes in (("V", ts[[i, i - 1, i - 2]]), ("V_corr", ts[[i + 1, i, i - 1, i - 2]])):
            for m in range(len(nodes)):
                moment = lambda s, column=column, m=m: column(s) * s**m  # noqa: E731 - bound per loop
                exact, _ = quad_vec(moment, float(ts[i + 1]), float(ts[i]), epsabs=0, epsrel=1e-11)
                got = (plan[name][i] * (nodes**m)[:, None]).sum(0)
                torch.testing.assert_close(got, torch.from_numpy(exact), rtol=1e-7, atol=1e-9 * abs(exact).max())


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("make", [vp, cld, hold])
def test_data_prediction_plan_matches_the_ode_plan(make, lam):
    """The plan (closed form for λ ∈ {0, 1}, whitened Magnus steps otherwise) against an independent route that
    integrates Ψ, V and C as one ODE in the original coordinates (tests/expint_reference.py). For λ ∈ {0, 1} the
    Magnus route is checked against the closed form too, so it is not only trusted where it is the default."""
    process = make()
    ts = time_grid(process, 12, "quadratic")
    steps = expint_plan.StepIntervals(ts, 2, torch.log, corrector=True)
    routes = {"plan": expint_plan.data_prediction_steps(process, steps, lam)}
    routes["ode"] = ode_steps(process, steps, lam)
    if lam in (0.0, 1.0):
        routes["magnus"] = expint_plan.magnus_steps(process, steps, lam)
    for route, plan in routes.items():
        for name in routes["ode"]:
            scale = float(routes["ode"][name].abs().max())
            atol = 1e-6 * scale + 1e-12
            torch.testing.assert_close(plan[name], routes["ode"][name], rtol=0, atol=atol, msg=f"{route} {name}")


@pytest.mark.parametrize("make", [vp, cld, hold])
def test_magnus_steps_converge_at_sixth_order(make):
    """Doubling the panels shrinks the change of the whitened solve by ~2⁶ once resolved (a wrong commutator sign
    or node leaves a lower order: 2⁴ or 2²)."""
    process = make()
    steps = expint_plan.StepIntervals(time_grid(process, 200, "quadratic"), 2, torch.log, corrector=True)
    solves = [expint_plan.magnus_solve(process, steps, 0.25, panels) for panels in (2, 4, 8)]
    changes = [float((b[1] - a[1]).abs().max() / b[1].abs().max()) for a, b in zip(solves, solves[1:])]
    assert changes[0] / changes[1] > 40, changes
