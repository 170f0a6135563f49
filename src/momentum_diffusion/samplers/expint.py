"""Exponential-integrator sampler (gDDIM; Zhang, Tao & Chen 2022, arXiv 2206.05564) for every linear process.

Reverse dynamics with noise level λ ∈ [0, 1] (λ = 0: probability-flow ODE, λ = 1: reverse SDE; gDDIM eq. 8
family, marginal-preserving for every λ):

    dz = b(t) [A z − ½(1 + λ²) Q s(z, t)] dt + λ sqrt(b(t)) B dW̄,      Q = q E_kk,  s = noised-block score.

The score is parametrised through a noise vector ε ∈ R^k per data coordinate, s = −c(t)ᵀ ε with
c(t) = last row of K_t⁻ᵀ for a factor K_t K_tᵀ = Σ_t of the kernel covariance (gDDIM eq. 12):

``kt='cholesky'``  K = L_t (Cholesky, with the kernel's jitter): c = (0, …, 0, ℓ_t), ℓ_t = 1/L_kk, so
    ε = (0, …, 0, −s/ℓ_t): CLD's HSM / HOLD's BCSM / DSM parametrisation (objectives/score_model.py).
``kt='gddim'``  K = R_t, the solution of  dR/dt = b (A + ½ Q Σ_t⁻¹) R  with R R ᵀ = Σ_t (gDDIM eq. 15):
    R carries the kernel's own probability flow, so for data that is a point mass ε stays constant along
    every PF-ODE trajectory and the order-1 step is exact (gDDIM Prop. 2). gDDIM's networks output all
    k components of ε; ours output only the noised block. Since the kernel's noised-block score is linear
    in x_0, s = −p_tᵀ(z − φ_t x̂_0) with p_t = last row of Σ_t⁻¹ and φ_t = Φ(τ_t) e_1, the marginal score
    gives x̂_0 = E[x_0 | z] exactly (a phase-space Tweedie formula; p_tᵀφ_t ≠ 0 for every process here),
    and then the full gDDIM noise ε = R_t⁻¹(z − φ_t x̂_0), which satisfies c(t)ᵀ ε = −s. This is what a
    gDDIM network would predict at its optimum. R is integrated once per process (DOP853, rtol 1e-12, in
    log t) in the form dR = b (A R + ½ Q R⁻ᵀ) dt, forward from R(t_min) = chol(Σ_{t_min}) (Σ_{t_min} by
    quadrature): backward from T the implied Lyapunov flow amplifies errors like exp(2|Re λ(A)|τ) (the
    Van Loan trap of DESIGN.md §1). Any other start RU (U orthogonal; gDDIM starts from R_0R_0ᵀ = Σ_0)
    gives ε → Uᵀε, c → Uᵀc and leaves every update unchanged. For order 1 (VP/VE) R = σ_t = L_t.

Step t → t' < t (exact in the linear part, ε replaced by its Adams–Bashforth polynomial P through the last
p ≤ ``order`` values, in t or in τ):

    z' = Φ(τ' − τ) z + Σ_j W_j ε_j + C^{1/2} ξ,
    W_j = −∫_{t'}^{t} Φ(τ' − τ(s)) b(s) ½(1 + λ²) Q c(s)ᵀ ℓ_j(s) ds,   C = ∫_{t'}^{t} Φ(τ' − τ(s)) λ² b(s) Q Φᵀ ds,

ℓ_j the Lagrange basis. Φ(τ' − τ) is the inverse of the core's forward transition (well conditioned over
one step). W_j and C come from composite Gauss–Legendre quadrature (float64; panels geometric in s so that
each is a panel-width away from the kernel's singularity at t = 0; refined until converged to 1e-12) and
are cached per grid. For gDDIM with λ = 0 the update is evaluated in the algebraically equal form
z' = φ' x̂_0 + R' ε_0 + Σ_{j≥1} W_j (ε_j − ε_0), which avoids cancelling the large Φ(τ' − τ) z against W ε
over long steps. For VP with λ = 0, order 1, Cholesky K this is DDIM: x' = α'(x − σε)/α + σ'ε.

Caveat (measured, docs/fast_sampling.md): with K = L_t the frozen ε carries the fast OU relaxation of the
noised block, and for CLD/HOLD the explicit step is unstable below roughly 50 (CLD) / 100 (HOLD) steps;
K = R_t does not have this problem. The 'logsnr' grid follows the noised block's std, which saturates
early for CLD/HOLD, so its first step spans most of τ; prefer 'quadratic' there.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ..processes.core import apply_blocks, psd_sqrt
from .base import (
    CountingScore,
    SamplerConfigError,
    check_nfe,
    final_denoise,
    noise_like,
    sampler,
    steps_for_budget,
    time_grid,
)
from .quadrature import geometric_edges, integrate

F64 = torch.float64
KT_CHOICES = ("cholesky", "gddim")
EXTRAPOLATION = ("t", "tau")
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 64


def _cached(key, build):
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = _CACHE[key] = build()
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def process_key(process) -> tuple:
    """Everything the integrator's coefficients depend on (processes are unhashable dataclasses)."""
    arrays = (process.sde.A, process.sde.Q, process.initial_cov)
    return (
        process.name,
        *(a.numpy().tobytes() for a in arrays),
        repr(process.schedule),
        process.t_min,
        process.t_max,
        process.kernel_jitter,
    )


def _times(t) -> torch.Tensor:
    return torch.as_tensor(t, dtype=F64).reshape(-1)


class CholeskyNoise:
    """K_t = L_t: ε = (0, …, 0, −L_kk s), c(t) = (0, …, 0, 1/L_kk) = (0, …, 0, ℓ_t).

    L_kk is taken from Σ_t = R_t R_tᵀ (the gDDIM factor, integrated accurately) plus the kernel's jitter:
    equal to ``process.score_scale`` up to float64 roundoff, but smooth in t, which the quadrature needs
    (the core's stationary-form Σ_t carries ~1e-9 relative roundoff near t_min).
    """

    def __init__(self, process):
        self.process, self.factors = process, noise_parametrisation(process, "gddim")

    def chol_kk(self, t) -> torch.Tensor:
        R = self.factors.factor(t)
        eye = torch.eye(self.process.order, dtype=F64)
        return torch.linalg.cholesky(R @ R.transpose(-1, -2) + self.process.kernel_jitter * eye)[:, -1, -1]

    def row(self, t) -> torch.Tensor:
        ell = 1.0 / self.chol_kk(t)
        c = torch.zeros(ell.shape[0], self.process.order, dtype=F64)
        c[:, -1] = ell
        return c

    def to_eps(self, z: torch.Tensor, s: torch.Tensor, t: float):
        eps = torch.zeros_like(z, dtype=F64)
        eps[:, -1] = -float(self.chol_kk(t)[0]) * s.to(F64)
        return eps, None


def accurate_kernel_cov(process, t: float) -> torch.Tensor:
    """Φ Σ_0 Φᵀ + ∫_0^τ Φ(r) Q Φ(r)ᵀ dr at one time, by quadrature (relatively accurate for small τ)."""
    tau = float(process.tau(_times(t))[0])
    Phi = process.sde.transition(torch.tensor(tau, dtype=F64))[0]

    def integrand(r):
        col = process.sde.transition(r)[0][:, :, -1]
        return process.noise_scale * torch.einsum("mi,mj->mij", col, col)

    cov = Phi @ process.initial_cov @ Phi.T + integrate(integrand, [0.0, tau])
    return 0.5 * (cov + cov.T)


class GDDIMNoise:
    """K_t = R_t (gDDIM eq. 15), with the full ε recovered from the noised-block score via x̂_0 = E[x_0|z]."""

    def __init__(self, process):
        if process.t_min <= 0:
            raise SamplerConfigError("kt='gddim' needs t_min > 0 (the kernel covariance is singular at t = 0)")
        self.process, k = process, process.order
        A, Q = process.sde.A.numpy(), process.sde.Q.numpy()

        def rhs(u, y):  # dR/du = t b (A R + ½ Q R⁻ᵀ): Σ⁻¹R = R⁻ᵀ, so the kernel is never inverted
            t, R = math.exp(u), y.reshape(k, k)
            return (t * float(process.b(t)) * (A @ R + 0.5 * Q @ np.linalg.inv(R).T)).reshape(-1)

        # Forward in t: the implied dΣ/dτ = AΣ + ΣAᵀ + Q contracts errors (A Hurwitz); a backward solve from
        # R(T) would amplify them by exp(2|Re λ|τ) like the Van Loan trap. Σ(t_min) by quadrature: the
        # core's stationary form Σ∞ − ΦΣ∞Φᵀ loses the tiny data-row entries to cancellation there.
        r_min = torch.linalg.cholesky(accurate_kernel_cov(process, process.t_min)).numpy()
        span = (math.log(process.t_min), math.log(process.t_max) + 1e-9)
        self.solution = solve_ivp(
            rhs, span, r_min.reshape(-1), method="DOP853", rtol=1e-12, atol=1e-16, dense_output=True
        )
        if not self.solution.success:
            raise RuntimeError(f"gDDIM factor R_t: ODE solve failed ({self.solution.message})")

    def factor(self, t) -> torch.Tensor:
        """R_t, (m, k, k) float64."""
        t = _times(t).clamp(self.process.t_min, self.process.t_max)
        k = self.process.order
        values = self.solution.sol(np.log(t.numpy()))  # (k·k, m)
        return torch.from_numpy(np.ascontiguousarray(values.T)).reshape(-1, k, k)

    def row(self, t) -> torch.Tensor:
        return torch.linalg.inv(self.factor(t)).transpose(-1, -2)[:, -1, :]

    def to_eps(self, z: torch.Tensor, s: torch.Tensor, t: float) -> torch.Tensor:
        r_inv = torch.linalg.inv(self.factor(t)[0])
        p = r_inv.T[-1] @ r_inv  # last row of Σ⁻¹ = R⁻ᵀR⁻¹ (more accurate near t_min than inverting Σ)
        phi = self.process.transition(0.0, t)[0].reshape(self.process.order, -1)[:, 0]
        cp = p @ phi
        G = r_inv @ (torch.eye(self.process.order, dtype=F64) - torch.outer(phi, p) / cp)
        g = -(r_inv @ phi) / cp
        x0 = (s.to(F64) + torch.einsum("i,bi...->b...", p, z.to(F64))) / cp  # E[x_0 | z]
        return apply_blocks(G, z.to(F64)) + torch.einsum("i,b...->bi...", g, s.to(F64)), x0


def noise_parametrisation(process, kt: str):
    cls = {"cholesky": CholeskyNoise, "gddim": GDDIMNoise}[kt]
    return _cached(("eps", kt, process_key(process)), lambda: cls(process))


def lagrange_basis(nodes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """ℓ_j(x) for the interpolation nodes (p,) at points x (m,): (m, p)."""
    p = nodes.shape[0]
    out = torch.ones(x.shape[0], p, dtype=F64)
    for j in range(p):
        for m in range(p):
            if m != j:
                out[:, j] *= (x - nodes[m]) / (nodes[j] - nodes[m])
    return out


def step_coefficients(
    process, param, t: float, t_next: float, history: torch.Tensor, noise: float, extrapolate: str
) -> dict:
    """Coefficients of the step t → t_next with ε known at the ``history`` times (t first): Φ(τ' − τ),
    W (p, k, k), the noise's PSD root (λ > 0) and, for gDDIM, φ' and the matrix multiplying ε_0."""
    k, q = process.order, process.noise_scale
    tau_next = process.tau(_times(t_next))
    Phi = torch.linalg.inv(process.transition(t_next, t)[0].reshape(k, k))
    nodes = history if extrapolate == "t" else process.tau(history)
    p = history.shape[0]

    def integrand(s: torch.Tensor) -> torch.Tensor:
        tau_s = process.tau(s)
        back = torch.linalg.matrix_exp((tau_next - tau_s)[:, None, None] * process.sde.A)  # Φ(τ' − τ(s))
        col = back[:, :, -1] * (q * process.b(s))[:, None]  # Φ Q e_k b(s), (m, k)
        ell = lagrange_basis(nodes, s if extrapolate == "t" else tau_s)  # (m, p)
        drift = -0.5 * (1 + noise**2) * torch.einsum("mp,mi,mj->mpij", ell, col, param.row(s))
        if noise == 0:
            return drift
        cov = noise**2 * torch.einsum("mi,mj->mij", col, back[:, :, -1])
        return torch.cat([drift, cov[:, None]], dim=1)

    out = integrate(integrand, geometric_edges(t_next, t))
    coeffs = {"Phi": Phi, "W": out[:p], "root": psd_sqrt(out[p]) if noise > 0 else None}
    if isinstance(param, GDDIMNoise):
        R, R_next = param.factor(torch.tensor([t, t_next], dtype=F64))
        coeffs["phi_next"] = process.transition(0.0, t_next)[0].reshape(k, k)[:, 0]
        # λ = 0: ΦR + Σ_j W_j = R' exactly (the Dirac-data flow); use it, avoiding ΦR's cancellation
        coeffs["base"] = R_next if noise == 0 else Phi @ R + out[:p].sum(0)
    return coeffs


def integrator_plan(process, ts: torch.Tensor, order: int, noise: float, kt: str, extrapolate: str) -> list:
    """Per-step coefficients for a grid, with Adams–Bashforth warm-up (orders 1, 2, … on the first steps)."""

    def build():
        param = noise_parametrisation(process, kt)
        plan = []
        for i in range(len(ts) - 1):
            history = ts[max(0, i + 1 - order) : i + 1].flip(0)  # t_i, t_{i−1}, …
            plan.append(step_coefficients(process, param, float(ts[i]), float(ts[i + 1]), history, noise, extrapolate))
        return plan

    key = ("plan", process_key(process), tuple(ts.tolist()), order, float(noise), kt, extrapolate)
    return _cached(key, build)


def check_options(order, noise, kt, extrapolate) -> None:
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise SamplerConfigError(f"sampler.order must be 1, 2 or 3, got {order!r}")
    if not 0.0 <= float(noise) <= 1.0:
        raise SamplerConfigError(f"sampler.noise (λ) must lie in [0, 1], got {noise!r}")
    if kt not in KT_CHOICES:
        raise SamplerConfigError(f"unknown sampler.kt '{kt}'; choose {' or '.join(KT_CHOICES)}")
    if extrapolate not in EXTRAPOLATION:
        raise SamplerConfigError(f"unknown sampler.extrapolate '{extrapolate}'; choose t or tau")


@sampler("expint")
@torch.no_grad()
def exponential_integrator(
    process,
    score_fn,
    prior_z,
    *,
    nfe: int,
    generator=None,
    order: int = 2,
    noise: float = 0.0,
    kt: str = "cholesky",
    grid: str = "logsnr",
    denoise: bool = True,
    extrapolate: str = "t",
):
    """Exponential integrator with multistep ε extrapolation (gDDIM / DEIS-style), 1 NFE per step.

    ``order`` 1–3: Adams–Bashforth order of the ε polynomial (lower orders on the first steps);
    ``noise`` λ ∈ [0, 1]: 0 = probability-flow ODE (deterministic), 1 = reverse SDE;
    ``kt``: 'cholesky' or 'gddim' (see the module docstring); ``extrapolate``: polynomial in 't' or 'tau'.
    """
    check_options(order, noise, kt, extrapolate)
    score = CountingScore(score_fn)
    n = steps_for_budget(check_nfe(nfe), 1, denoise)
    ts = time_grid(process, n, grid)
    param = noise_parametrisation(process, kt)
    plan = integrator_plan(process, ts, order, float(noise), kt, extrapolate)
    z, history = prior_z, []
    for i, step in enumerate(plan):
        eps, x0 = param.to_eps(z, score(z, float(ts[i])), float(ts[i]))  # float64
        history = [eps] + history[: order - 1]
        if x0 is None:  # z' = Φ z + Σ_j W_j ε_j
            z_next = apply_blocks(step["Phi"], z.to(F64))
            for W_j, eps_j in zip(step["W"], history):
                z_next = z_next + apply_blocks(W_j, eps_j)
        else:  # same update, written as z' = φ' x̂_0 + (ΦR + ΣW) ε_0 + Σ_{j≥1} W_j (ε_j − ε_0)
            z_next = torch.einsum("i,b...->bi...", step["phi_next"], x0) + apply_blocks(step["base"], eps)
            for W_j, eps_j in zip(step["W"][1:], history[1:]):
                z_next = z_next + apply_blocks(W_j, eps_j - eps)
        if step["root"] is not None:
            z_next = z_next + apply_blocks(step["root"], noise_like(z_next, generator))
        z = z_next.to(prior_z.dtype)
    if denoise:
        z = final_denoise(process, score, z, float(ts[-1]))
    return z, score.count
