"""The plans of ``sampler=expint``: per-step weights for a whole grid, built in batched float64 (no loop over steps).

**Noise prediction** (λ = 0, samplers/expint.py): z' = Φ(τ' − τ) z + Σ_j W_j ε_j with
W_j = −½ ∫_{t'}^{t} Φ(τ' − τ(s)) b(s) Q c(s)ᵀ ℓ_j(s) ds (c the score row of K_t), by Gauss–Legendre.

**Data prediction** (any λ), in x̂_0 = E[x_0|z]:

With the phase-space Tweedie form of the noised-block score, s = −p_tᵀ(z − φ_t x̂_0) (p_t the last row of Σ_t⁻¹,
φ_t = Φ(τ_t) e_1; processes/noise_factor.py), the reverse dynamics of expint.py are linear in z with an
x̂_0 forcing term:

    dz = M(t) z dt − ½(1 + λ²) b q (p_tᵀφ_t) x̂_0 e_k dt + λ sqrt(b) B dW̄,    M(t) = b (A + ½(1 + λ²) q e_k p_tᵀ).

A step t → t' < t replaces x̂_0 by its Lagrange polynomial through the last values and solves the rest
exactly:  z' = Ψ z + Σ_j V_j x̂_0,j + C^{1/2} ξ,  with Ψ = Ψ(t', t) the transition of M,

    V_j = ∫_{t'}^{t} Ψ(t', s) e_k g(s) ℓ_j(s) ds,   g(s) = ½(1 + λ²) b q p_sᵀφ_s,
    C = ∫_{t'}^{t} λ² b q Ψ(t', s) e_k e_kᵀ Ψ(t', s)ᵀ ds.

For point-mass data x̂_0 is constant, so the step is exact in law for every λ and step size. (Extrapolating ε
instead diverged below ~50 NFE on CLD/HOLD for λ > 0: the injected noise makes ε relax at a rate ~λ² b q
(Σ_t⁻¹)_kk, unbounded near t = 0.)

**Corrector** (UniPC-style, Zhao et al. 2023, arXiv 2302.04867, §3.2, in phase space): once x̂_0 is known at
t' (the evaluation the next step needs anyway), the same step is redone with the polynomial through t' and
the previous nodes, one order higher and with no extra NFE: weights ``V_corr`` (n, order + 1, k); Ψ, C and
the noise ξ are the predictor's.

**λ = 1 in closed form.** For point-mass data the reverse SDE reproduces the forward bridge, so Ψ is the
Gaussian regression of z_{t'} on z_t: Ψ(t', s) = Σ_{t'} Φ(τ_s − τ_{t'})ᵀ Σ_s⁻¹ and C = Σ_{t'} − Ψ Σ_t Ψᵀ. With
Σ = R Rᵀ (the gDDIM factor) this is Ψ = R_{t'} U R_s⁻¹, U = (R_s⁻¹ Φ(τ_s − τ_{t'}) R_{t'})ᵀ, and
C = R_{t'}(I − U Uᵀ)R_{t'}ᵀ, which keeps the nearly singular Σ_{t'} near t_min out of the subtraction.
Only V needs quadrature: Gauss–Legendre in log s, all steps of the grid in one batched float64 evaluation.
**Other λ ∈ (0, 1): batched Magnus steps.** In the whitened state y = R_s⁻¹(z − φ_s x_0) the λ = 0 flow is the
identity, and what λ adds is rank one: ∂_s Ψ_y(t', s) = −½λ² Ψ_y(t', s) G(s), G = b q w wᵀ, w = R_s⁻¹ e_k. So
Ψ = R_{t'} Ψ_y R_t⁻¹, V_j = R_{t'} ∫ Ψ_y(t', s) w g ℓ_j ds, and, since y stays N(0, I) for point-mass data,
C = R_{t'}(I − Ψ_y Ψ_yᵀ)R_{t'}ᵀ as for λ = 1. Ψ_y and the V integrals are one linear system, solved on K panels
per step (in r) by the sixth-order Magnus rule on three Gauss–Legendre nodes (Blanes, Casas, Oteo & Ros 2009,
Phys. Rep. 470, the Magnus expansion review), every step at once; K doubles until each step's Ψ and V agree
with the previous K to ``MAGNUS_RTOL``.
"""

from __future__ import annotations

import math

import torch

from ..processes.core import F64, psd_sqrt
from ..processes.noise_factor import gddim_factor
from ..processes.quadrature import integrate, lagrange_basis
from .base import log_snr

# Accepted quadrature change once refinement stalls: near t_min the HOLD factor has cond(R) ~ 1e12, and the
# weights of 2–3-step grids (extrapolation over the whole path: huge, cancelling) are roundoff-limited at
# ~1e-4 relative; usual grids converge to 1e-7 or better before this applies.
ROUNDOFF_FLOOR = 1e-3
# Magnus plans: per-step relative change at which doubling the panels stops, and the most panels per step.
MAGNUS_RTOL, MAGNUS_MAX_PANELS = 1e-9, 1024


class StepIntervals:
    """The n steps t_i → t_{i+1} of a descending grid, each mapped onto r ∈ [0, 1] in log s, with the Lagrange
    nodes of the predictor (t_i, t_{i−1}, …; ``order`` of them) and of the corrector (t_{i+1} first, order + 1)."""

    def __init__(self, ts: torch.Tensor, order: int, variable, corrector: bool):
        n = len(ts) - 1
        self.n, self.hi, self.lo, self.variable = n, ts[:-1], ts[1:], variable
        self.log_lo, self.log_len = torch.log(self.lo), torch.log(self.hi / self.lo)
        self.nodes = [self._nodes(ts, torch.arange(n), order)]
        if corrector:
            self.nodes.append(self._nodes(ts, torch.arange(1, n + 1), order + 1))

    @staticmethod
    def _nodes(ts, first, count):
        index = first[:, None] - torch.arange(count)[None, :]
        return ts[index.clamp_min(0)], index >= 0  # (n, count) times and which of them exist yet

    def s(self, r: torch.Tensor) -> torch.Tensor:
        """s at the points r (m,) of every step: (n, m)."""
        return torch.exp(self.log_lo[:, None] + r[None, :] * self.log_len[:, None])

    def weights(self, s: torch.Tensor) -> list[torch.Tensor]:
        """ℓ_j(s) · ds/dr of each node set at s (n, m): [(n, m, p)]."""
        rate = (s * self.log_len[:, None])[..., None]
        out = []
        for times, valid in self.nodes:
            out.append(lagrange_basis(self.variable(times), self.variable(s), valid) * rate)
        return out


def data_prediction_steps(process, steps: StepIntervals, lam: float) -> dict:
    """Ψ (n, k, k), V (n, order, k), V_corr (n, order + 1, k) with the corrector, and the PSD root of C (n, k, k)
    for the n steps; unused history weights (first steps) are zero."""
    if lam in (0.0, 1.0):
        return closed_form_steps(process, steps, lam)
    return magnus_steps(process, steps, lam)


def forcing(process, s: torch.Tensor, lam2: float):
    """R_s⁻¹, p_s (last row of Σ_s⁻¹) and g(s) = ½(1 + λ²) b q p_sᵀφ_s at times s of any shape. Σ⁻¹ = R⁻ᵀR⁻¹
    (accurate near t_min), and p_sᵀφ_s = (R⁻¹e_k)·(R⁻¹φ_s) avoids forming the huge p_s there."""
    shape, k = s.shape, process.order
    flat = s.reshape(-1)
    r_inv = torch.linalg.inv(gddim_factor(process).factor(flat))
    phi = torch.linalg.matrix_exp(process.tau(flat)[:, None, None] * process.sde.A)[:, :, 0]
    w = r_inv[:, :, -1]
    p = torch.einsum("ni,nij->nj", w, r_inv)
    g = 0.5 * (1 + lam2) * process.noise_scale * process.b(flat) * (w * (r_inv @ phi[:, :, None])[:, :, 0]).sum(-1)
    return r_inv.reshape(*shape, k, k), p.reshape(*shape, k), g.reshape(shape)


def closed_form_steps(process, steps: StepIntervals, lam: float) -> dict:
    """λ = 1 (the bridge) or λ = 0 (Ψ = R_{t'} R_s⁻¹, C = 0): Ψ and C in closed form (module docstring),
    V by batched Gauss–Legendre in r."""
    A, tau = process.sde.A, process.tau
    R_lo = gddim_factor(process).factor(steps.lo)  # (n, k, k)

    def column(s):  # Ψ(t', s) e_k = R_{t'} U R_s⁻¹ e_k, (n, m, k)
        r_inv, _, g = forcing(process, s, lam**2)
        w = r_inv[..., :, -1]
        if lam == 1.0:  # U = (R_s⁻¹ Φ(τ_s − τ_{t'}) R_{t'})ᵀ, bounded: ‖U‖ ≤ 1
            forward = torch.linalg.matrix_exp((tau(s) - tau(steps.lo)[:, None])[..., None, None] * A)
            w = torch.einsum("nmij,nmi->nmj", r_inv @ forward @ R_lo[:, None], w)
        return torch.einsum("nij,nmj->nmi", R_lo, w), g

    def integrand(r):  # (m, n, sets·p, k): every node set's weights at once
        s = steps.s(r)
        col, g = column(s)
        ell = torch.cat(steps.weights(s), dim=-1) * g[..., None]
        return torch.einsum("nmp,nmi->mnpi", ell, col)

    V = integrate(integrand, [0.0, 1.0], n=12, floor_rtol=ROUNDOFF_FLOOR, max_refinements=3)
    r_inv_hi = torch.linalg.inv(gddim_factor(process).factor(steps.hi))
    eye = torch.eye(process.order, dtype=F64)
    U = eye if lam == 0.0 else (r_inv_hi @ process.transition(steps.lo, steps.hi)[0] @ R_lo).mT
    C = R_lo @ (eye - U @ U.mT) @ R_lo.mT  # zero for λ = 0
    return {"Psi": R_lo @ U @ r_inv_hi, "root": psd_sqrt(C), **split_weights(V, steps)}


def late_steps_deterministic(process, steps: StepIntervals, plan: dict, threshold: float | None) -> dict:
    """The plan with every step that starts at a position-block logSNR ≥ ``threshold`` (base.log_snr) replaced
    by its λ = 0 step: stochastic while the modes form, then the PF-ODE (docs/fast_sampling.md, sessions 16–18).
    Both plans are closed form for λ ∈ {0, 1}; the corrector's weights are switched with the predictor's."""
    if threshold is None:
        return plan
    late = log_snr(process, steps.hi) >= threshold
    if not late.any():
        return plan
    ode = data_prediction_steps(process, steps, 0.0)
    return {name: torch.where(late.reshape(-1, *[1] * (v.dim() - 1)), ode[name], v) for name, v in plan.items()}


def split_weights(V: torch.Tensor, steps: StepIntervals, name: str = "V") -> dict:
    """The predictor's weights ``name`` and the corrector's ``name``_corr from one stacked integral."""
    sizes = [times.shape[1] for times, _ in steps.nodes]
    parts = V.split(sizes, dim=1)
    return {name: parts[0], **({f"{name}_corr": parts[1]} if len(parts) > 1 else {})}


def noise_prediction_steps(process, param, steps: StepIntervals) -> dict:
    """Φ(τ' − τ) (n, k, k), W (n, order, k, k) and W_corr (n, order + 1, k, k) of the ε-steps for the noise
    parametrisation ``param`` (samplers/expint.py); for gDDIM also φ' and R' (``eps_update``'s stable form)."""
    A, q, tau, k = process.sde.A, process.noise_scale, process.tau, process.order
    tau_lo = tau(steps.lo)

    def integrand(r):  # (m, n, sets·p, k, k)
        s = steps.s(r)
        back = torch.linalg.matrix_exp((tau_lo[:, None] - tau(s))[..., None, None] * A)  # Φ(τ' − τ(s))
        col = back[..., :, -1] * (q * process.b(s))[..., None]  # Φ Q e_k b(s), (n, m, k)
        row = param.row(s.reshape(-1)).reshape(*s.shape, k)
        ell = torch.cat(steps.weights(s), dim=-1)
        return -0.5 * torch.einsum("nmp,nmi,nmj->mnpij", ell, col, row)

    W = integrate(integrand, [0.0, 1.0], n=12, floor_rtol=ROUNDOFF_FLOOR, max_refinements=4)
    plan = {"Phi": torch.linalg.inv(process.transition(steps.lo, steps.hi)[0]), **split_weights(W, steps, "W")}
    if hasattr(param, "factor"):  # gDDIM: ΦR + Σ_j W_j = R' exactly (the point-mass flow)
        plan["phi_next"] = process.mean_factor(steps.lo)
        plan["base"] = param.factor(steps.lo)
    return {**plan, **param.step_constants(steps.hi)}


def magnus_steps(process, steps: StepIntervals, lam: float) -> dict:
    """Any λ: Ψ, V and C from the whitened Magnus solve (module docstring), panels doubled until converged."""
    R_lo, R_hi = (gddim_factor(process).factor(t) for t in (steps.lo, steps.hi))
    r_inv_hi, eye = torch.linalg.inv(R_hi), torch.eye(process.order, dtype=F64)
    previous, panels = None, 2
    while True:
        Psi_y, acc = magnus_solve(process, steps, lam**2, panels)
        Psi, V = R_lo @ Psi_y @ r_inv_hi, (R_lo @ acc).mT
        if previous is not None:
            change = max(relative_change(Psi, previous[0]), relative_change(V, previous[1]))
            if change <= MAGNUS_RTOL or panels >= MAGNUS_MAX_PANELS:
                break
        previous, panels = (Psi, V), 2 * panels
    if change > ROUNDOFF_FLOOR:
        raise RuntimeError(f"expint data-prediction plan: Magnus steps did not converge ({change:.1e})")
    C = R_lo @ (eye - Psi_y @ Psi_y.mT) @ R_lo.mT
    return {"Psi": Psi, "root": psd_sqrt(C), **split_weights(V, steps)}


def relative_change(new: torch.Tensor, old: torch.Tensor) -> float:
    """The largest change of any step's matrix relative to that step's largest entry."""
    scale = new.abs().amax((1, 2)).clamp_min(1e-300)
    return float(((new - old).abs().amax((1, 2)) / scale).max())


def magnus_solve(process, steps: StepIntervals, lam2: float, panels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ψ_y(t', t) (n, k, k) and the whitened weights ∫ Ψ_y w g ℓ_j (n, k, P) on ``panels`` panels per step.

    The augmented generator B(r) = [[−½λ² G, w g ℓᵀ], [0, 0]] (times ds/dr) drives [Ψ_y | acc]' = [Ψ_y | acc] B;
    each panel's Magnus exponent keeps that block form, and its exponential is [[E, φ₁(Ω₁₁)Ω₁₂], [0, I]]
    (φ₁ from one 2k×2k exponential), so the large forcing block never enters a scaling-and-squaring."""
    h, k = 1.0 / panels, process.order
    nodes = torch.tensor([0.5 - math.sqrt(15) / 10, 0.5, 0.5 + math.sqrt(15) / 10], dtype=F64)
    s = steps.s((torch.arange(panels, dtype=F64)[:, None] * h + h * nodes).reshape(-1))  # (n, 3·panels)
    r_inv, _, g = forcing(process, s, lam2)
    w = r_inv[..., :, -1]
    ell = torch.cat(steps.weights(s), dim=-1)  # ds/dr included
    decay = -0.5 * lam2 * process.noise_scale * process.b(s) * s * steps.log_len[:, None]
    size = k + ell.shape[-1]
    B = torch.zeros(*s.shape, size, size, dtype=F64)
    B[..., :k, :k] = decay[..., None, None] * w[..., :, None] * w[..., None, :]
    B[..., :k, k:] = (w * g[..., None])[..., :, None] * ell[..., None, :]
    # The rule is stated for Y' = A Y; ours multiplies on the right, so it runs on the transposes.
    A1, A2, A3 = B.mT.reshape(steps.n, panels, 3, size, size).unbind(2)
    a1, a2, a3 = h * A2, math.sqrt(15) * h / 3 * (A3 - A1), 10 * h / 3 * (A3 - 2 * A2 + A1)
    c1 = commutator(a1, a2)
    c2 = -commutator(a1, 2 * a3 + c1) / 60
    omega = (a1 + a3 / 12 + commutator(-20 * a1 - a3 + c1, a2 + c2) / 240).mT
    augmented = torch.zeros(steps.n, panels, 2 * k, 2 * k, dtype=F64)
    augmented[..., :k, :k], augmented[..., :k, k:] = omega[..., :k, :k], torch.eye(k, dtype=F64)
    exp_phi = torch.linalg.matrix_exp(augmented)
    E, forced = exp_phi[..., :k, :k], exp_phi[..., :k, k:] @ omega[..., :k, k:]
    Psi_y = torch.eye(k, dtype=F64).expand(steps.n, k, k)
    acc = torch.zeros(steps.n, k, size - k, dtype=F64)
    for p in range(panels):
        acc = acc + Psi_y @ forced[:, p]
        Psi_y = Psi_y @ E[:, p]
    return Psi_y, acc


def commutator(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    return X @ Y - Y @ X
