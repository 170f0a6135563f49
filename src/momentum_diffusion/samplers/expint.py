"""Exponential-integrator sampler (gDDIM; Zhang, Tao & Chen 2022, arXiv 2206.05564) for every linear process.

Reverse dynamics with noise level λ ∈ [0, 1] (λ = 0: probability-flow ODE, λ = 1: reverse SDE; gDDIM eq. 8
family, marginal-preserving for every λ):

    dz = b(t) [A z − ½(1 + λ²) Q s(z, t)] dt + λ sqrt(b(t)) B dW̄,      Q = q E_kk,  s = noised-block score.

The score is parametrised through a noise vector ε ∈ R^k per data coordinate, s = −c(t)ᵀ ε with
c(t) = last row of K_t⁻ᵀ for a factor K_t K_tᵀ = Σ_t of the kernel covariance (gDDIM eq. 12):

``kt='cholesky'``  K = L_t: c = (0, …, 0, ℓ_t), ℓ_t = 1/L_kk, so ε = (0, …, 0, −s/ℓ_t).
``kt='gddim'``  K = R_t, dR/dt = b (A + ½ Q Σ_t⁻¹) R (gDDIM eq. 15; processes/noise_factor.py): for
    point-mass data ε stays constant along every PF-ODE trajectory and the order-1 step is exact (gDDIM
    Prop. 2).

Where ε comes from. A network trained with the same K_t (objective ``kt``, recorded in the checkpoint)
predicts it: the sampler uses its ε̂ directly. Otherwise (exact scores, or a network trained with the other
K_t) ε is computed from the noised-block score: the kernel's score is linear in x_0,
s = −p_tᵀ(z − φ_t x̂_0) with p_t = last row of Σ_t⁻¹ and φ_t = Φ(τ_t) e_1, so the marginal score gives
x̂_0 = E[x_0 | z] exactly (a phase-space Tweedie formula; p_tᵀφ_t ≠ 0 for every process here), and then
ε = R_t⁻¹(z − φ_t x̂_0), which satisfies c(t)ᵀ ε = −s: what a gDDIM network predicts at its optimum. Any
other factor RU (U orthogonal) gives ε → Uᵀε, c → Uᵀc and leaves every update unchanged. For order 1
(VP/VE) R = σ_t = L_t.

Deterministic step (λ = 0) t → t' < t, exact in the linear part, ε replaced by its Adams–Bashforth
polynomial through the last p ≤ ``order`` values (in t, τ or log t: ``extrapolate``):

    z' = Φ(τ' − τ) z + Σ_j W_j ε_j,    W_j = −∫_{t'}^{t} Φ(τ' − τ(s)) b(s) ½ Q c(s)ᵀ ℓ_j(s) ds,

ℓ_j the Lagrange basis. Φ(τ' − τ) is the inverse of the core's forward transition (well conditioned over
one step). W_j comes from composite Gauss–Legendre quadrature (float64; panels geometric in s so that
each is a panel-width away from the kernel's singularity at t = 0; refined until converged to 1e-12),
cached per grid. For gDDIM the update is evaluated in the algebraically equal form
z' = φ' x̂_0 + R' ε_0 + Σ_{j≥1} W_j (ε_j − ε_0), which avoids cancelling the large Φ(τ' − τ) z against W ε
over long steps. For VP, order 1, Cholesky K this is DDIM: x' = α'(x − σε)/α + σ'ε.
Stochastic steps (λ > 0) extrapolate x̂_0 = E[x_0 | z] instead and are exact for point-mass data at any
step size (expint_stochastic.py).

Measured (docs/fast_sampling.md): with K = L_t the frozen ε carries the fast OU relaxation of the noised
block, and for CLD/HOLD the step is unstable below roughly 50 (CLD) / 100 (HOLD) steps; K = R_t does not
have this problem. 'quadratic' is the best grid for CLD/HOLD; 'logsnr'/'edm' follow the data block's std,
which spans ~12 decades for HOLD, so their steps land where nothing happens. Extrapolating in log t is
better than in t for HOLD (ε varies on the log scale of the data block's noise level near t = 0).
"""

from __future__ import annotations

import torch

from ..choices import check_choice
from ..processes.core import apply_blocks, combine_blocks, like, spread_blocks
from ..processes.noise_factor import (
    NoiseFactor,
    cached,
    data_posterior_mean,
    gddim_factor,
    process_key,
    times,
    tweedie_projection,
)
from ..processes.quadrature import geometric_edges, integrate, lagrange_basis
from .base import (
    CountingScore,
    SamplerConfigError,
    check_nfe,
    final_denoise,
    noise_like,
    predicted_noise,
    sampler,
    steps_for_budget,
    time_grid,
)
from .expint_stochastic import stochastic_steps

F64 = torch.float64
EXTRAPOLATION = ("t", "tau", "log_t")


class CholeskyNoise:
    """K_t = L_t: ε = (0, …, 0, −L_kk s), c(t) = (0, …, 0, 1/L_kk) = (0, …, 0, ℓ_t).

    L_kk is taken from Σ_t = R_t R_tᵀ (the gDDIM factor, integrated accurately) plus the kernel's jitter:
    equal to ``process.score_scale`` up to float64 roundoff, but smooth in t, which the quadrature needs
    (the core's stationary-form Σ_t carries ~1e-9 relative roundoff near t_min).
    """

    def __init__(self, process):
        self.process, self.factors = process, gddim_factor(process)

    def chol_kk(self, t) -> torch.Tensor:
        R = self.factors.factor(t)
        eye = torch.eye(self.process.order, dtype=F64)
        return torch.linalg.cholesky(R @ R.transpose(-1, -2) + self.process.kernel_jitter * eye)[:, -1, -1]

    def row(self, t) -> torch.Tensor:
        ell = 1.0 / self.chol_kk(t)
        c = torch.zeros(ell.shape[0], self.process.order, dtype=F64)
        c[:, -1] = ell
        return c

    def step_constants(self, ts: torch.Tensor) -> dict:
        """What ``to_eps`` needs at each grid time, batched (host float64; the plan moves it once)."""
        return {"chol_kk": self.chol_kk(ts)}

    def to_eps(self, z: torch.Tensor, s: torch.Tensor, step: dict):
        eps = torch.zeros_like(z, dtype=F64)
        eps[:, -1] = -step["chol_kk"] * s.to(F64)
        return eps, None

    def from_network(self, z: torch.Tensor, eps_hat: torch.Tensor, step: dict):
        """ε from a network trained with the same K_t (it predicts the noised block only)."""
        eps = torch.zeros_like(z, dtype=F64)
        eps[:, -1] = eps_hat[:, 0].to(F64)
        return eps, None


class GDDIMNoise:
    """K_t = R_t (gDDIM eq. 15), with the full ε recovered from the noised-block score via x̂_0 = E[x_0|z]."""

    def __init__(self, process):
        self.process, self.factors = process, gddim_factor(process)

    def factor(self, t) -> torch.Tensor:
        return self.factors.factor(t)

    def row(self, t) -> torch.Tensor:
        return NoiseFactor("gddim").score_rows(self.process, t)

    def step_constants(self, ts: torch.Tensor) -> dict:
        r_inv, p, phi = tweedie_projection(self.process, ts)
        return {"R": self.factor(ts), "r_inv": r_inv, "p": p, "phi": phi}

    def to_eps(self, z: torch.Tensor, s: torch.Tensor, step: dict):
        projection = (step["r_inv"], step["p"], step["phi"])
        x0 = data_posterior_mean(self.process, z, s, 0.0, projection)  # E[x_0 | z]
        return apply_blocks(step["r_inv"], z.to(F64) - spread_blocks(step["phi"], x0)), x0

    def from_network(self, z: torch.Tensor, eps_hat: torch.Tensor, step: dict):
        """ε from a network trained with K = R_t (all k blocks) and the x̂_0 it implies along p:
        x̂_0 = pᵀ(z − R ε̂) / pᵀφ, the same x̂_0 that ``to_eps`` gives for the network's own score −cᵀε̂."""
        eps = eps_hat.to(F64)
        resid = z.to(F64) - apply_blocks(step["R"], eps)
        return eps, combine_blocks(step["p"], resid) / (step["p"] @ step["phi"])


def noise_parametrisation(process, kt: str | NoiseFactor):
    kind = NoiseFactor.of(kt).kind
    cls = {"cholesky": CholeskyNoise, "gddim": GDDIMNoise}[kind]
    return cached(("eps", kind, process_key(process)), lambda: cls(process))


def step_coefficients(process, param, t: float, t_next: float, history: torch.Tensor, variable) -> dict:
    """Coefficients of the deterministic step t → t_next with ε known at the ``history`` times (t first):
    Φ(τ' − τ), W (p, k, k) and, for gDDIM, φ' and R' (the matrix multiplying ε_0)."""
    k, q = process.order, process.noise_scale
    tau_next = process.tau(times(t_next))
    Phi = torch.linalg.inv(process.transition(t_next, t)[0].reshape(k, k))
    nodes = variable(history)

    def integrand(s: torch.Tensor) -> torch.Tensor:
        back = torch.linalg.matrix_exp((tau_next - process.tau(s))[:, None, None] * process.sde.A)  # Φ(τ' − τ(s))
        col = back[:, :, -1] * (q * process.b(s))[:, None]  # Φ Q e_k b(s), (m, k)
        ell = lagrange_basis(nodes, variable(s))  # (m, p)
        return -0.5 * torch.einsum("mp,mi,mj->mpij", ell, col, param.row(s))

    coeffs = {"Phi": Phi, "W": integrate(integrand, geometric_edges(t_next, t))}
    if isinstance(param, GDDIMNoise):
        # ΦR + Σ_j W_j = R' exactly (the Dirac-data flow); use it, avoiding ΦR's cancellation
        coeffs["phi_next"] = process.transition(0.0, t_next)[0].reshape(k, k)[:, 0]
        coeffs["base"] = param.factor(torch.tensor([t_next], dtype=F64))[0]
    return coeffs


def integrator_plan(process, ts: torch.Tensor, order: int, noise: float, kt: str, extrapolate: str) -> dict:
    """Per-step coefficients for a grid, stacked over steps (host float64, cached per grid), with
    Adams–Bashforth warm-up (orders 1, 2, … on the first steps; the unused history weights are zero):
    deterministic ε-steps for λ = 0, stochastic x̂_0-steps (expint_stochastic.py) for λ > 0."""
    variable = {"t": lambda t: t, "tau": process.tau, "log_t": torch.log}[extrapolate]

    def build():
        if noise > 0:  # all steps in one batched solve; x̂_0 = E[x_0|z] at each grid time
            plan = stochastic_steps(process, ts, order, noise, variable)
            plan["r_inv"], plan["p"], plan["phi"] = tweedie_projection(process, ts[:-1])
            return plan
        steps = []
        for i in range(len(ts) - 1):
            history = ts[max(0, i + 1 - order) : i + 1].flip(0)  # t_i, t_{i−1}, …
            steps.append(step_coefficients(process, param, float(ts[i]), float(ts[i + 1]), history, variable))
        plan = {name: stack_padded([step[name] for step in steps], order) for name in steps[0]}
        plan.update(param.step_constants(ts[:-1]))
        return plan

    param = noise_parametrisation(process, kt) if noise == 0 else None
    key = ("plan", process_key(process), tuple(ts.tolist()), order, float(noise), kt, extrapolate)
    return cached(key, build)


def stack_padded(values: list[torch.Tensor], order: int) -> torch.Tensor:
    """Stack per-step tensors; history weights (``W``, ``V``: p ≤ order rows) are zero-padded to ``order``."""
    first = values[0]
    if all(v.shape == first.shape for v in values):
        return torch.stack(values)
    out = first.new_zeros((len(values), order, *first.shape[1:]))
    for i, v in enumerate(values):
        out[i, : v.shape[0]] = v
    return out


def check_options(order, noise, kt, extrapolate) -> None:
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise SamplerConfigError(f"sampler.order must be 1, 2 or 3, got {order!r}")
    if not 0.0 <= float(noise) <= 1.0:
        raise SamplerConfigError(f"sampler.noise (λ) must lie in [0, 1], got {noise!r}")
    NoiseFactor.of(kt, "sampler.kt")
    check_choice("sampler.extrapolate", extrapolate, EXTRAPOLATION, SamplerConfigError)


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
    kt: str = "gddim",
    grid: str = "logsnr",
    denoise: bool | str = True,
    extrapolate: str = "t",
):
    """Exponential integrator with multistep ε extrapolation (gDDIM / DEIS-style), 1 NFE per step.

    ``order`` 1–3: Adams–Bashforth order of the ε polynomial (lower orders on the first steps);
    ``noise`` λ ∈ [0, 1]: 0 = probability-flow ODE (deterministic), 1 = reverse SDE;
    ``kt``: 'cholesky' or 'gddim' (see the module docstring); ``extrapolate``: polynomial in 't', 'tau' or
    'log_t'. λ > 0 steps extrapolate x̂_0 and ignore ``kt`` (expint_stochastic.py).
    If ``score_fn`` is a ScoreModel trained with the same K_t, its predicted ε is used directly;
    otherwise ε is computed from the score.
    """
    check_options(order, noise, kt, extrapolate)
    score = CountingScore(score_fn)
    own_noise = predicted_noise(score_fn, NoiseFactor.of(kt)) if noise == 0 else None
    direct = CountingScore(own_noise) if own_noise is not None else None
    n = steps_for_budget(check_nfe(nfe), 1, denoise)
    ts = time_grid(process, n, grid)
    param = noise_parametrisation(process, kt) if noise == 0 else None
    ref = prior_z.new_empty((), dtype=F64)  # the device (and float64) every plan tensor moves to, once
    plan = {
        name: like(value, ref) for name, value in integrator_plan(process, ts, order, noise, kt, extrapolate).items()
    }
    z, history = prior_z, []
    for i in range(n):
        t, step = float(ts[i]), {name: value[i] for name, value in plan.items()}
        if noise > 0:  # z' = Ψ z + Σ_j V_j x̂_0,j + C^{1/2} ξ
            projection = (step["r_inv"], step["p"], step["phi"])
            history = [data_posterior_mean(process, z, score(z, t), t, projection)] + history[: order - 1]
            z_next = apply_blocks(step["Psi"], z.to(F64)) + apply_blocks(step["root"], noise_like(z, generator).to(F64))
            for V_j, x0_j in zip(step["V"], history):
                z_next = z_next + spread_blocks(V_j, x0_j)
            z = z_next.to(prior_z.dtype)
            continue
        eps, x0 = param.from_network(z, direct(z, t), step) if direct else param.to_eps(z, score(z, t), step)
        history = [eps] + history[: order - 1]
        if x0 is None:  # z' = Φ z + Σ_j W_j ε_j
            z_next = apply_blocks(step["Phi"], z.to(F64))
            for W_j, eps_j in zip(step["W"], history):
                z_next = z_next + apply_blocks(W_j, eps_j)
        else:  # same update, written as z' = φ' x̂_0 + R' ε_0 + Σ_{j≥1} W_j (ε_j − ε_0)
            z_next = spread_blocks(step["phi_next"], x0) + apply_blocks(step["base"], eps)
            for W_j, eps_j in zip(step["W"][1:], history[1:]):
                z_next = z_next + apply_blocks(W_j, eps_j - eps)
        z = z_next.to(prior_z.dtype)
    if denoise:
        z = final_denoise(process, score, z, float(ts[-1]), denoise)
    return z, score.count + (direct.count if direct else 0)
