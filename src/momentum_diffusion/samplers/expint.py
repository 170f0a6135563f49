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
polynomial through the last p ≤ ``order`` values (in t, τ, log t, σ̃ or log(1 + σ̃): ``extrapolate``):

    z' = Φ(τ' − τ) z + Σ_j W_j ε_j,    W_j = −∫_{t'}^{t} Φ(τ' − τ(s)) b(s) ½ Q c(s)ᵀ ℓ_j(s) ds,

ℓ_j the Lagrange basis. Φ(τ' − τ) is the inverse of the core's forward transition (well conditioned over
one step). W_j comes from composite Gauss–Legendre quadrature (float64; panels geometric in s so that
each is a panel-width away from the kernel's singularity at t = 0; refined until converged to 1e-12),
cached per grid. For gDDIM the update is evaluated in the algebraically equal form
z' = φ' x̂_0 + R' ε_0 + Σ_{j≥1} W_j (ε_j − ε_0), which avoids cancelling the large Φ(τ' − τ) z against W ε
over long steps. For VP, order 1, Cholesky K this is DDIM: x' = α'(x − σε)/α + σ'ε.
Stochastic steps (λ > 0) extrapolate x̂_0 = E[x_0 | z] instead and are exact for point-mass data at any
step size (expint_plan.py).

Measured (docs/fast_sampling.md): with K = L_t the frozen ε carries the fast OU relaxation of the noised
block, and for CLD/HOLD the step is unstable below roughly 50 (CLD) / 100 (HOLD) steps; K = R_t does not
have this problem. 'quadratic' is the default grid; 'logsnr'/'logsnr_band' (the position block's true logSNR,
base.log_snr) are faster for VP/CLD with exact scores but put the first evaluations at λ < −8.7, where a
network's x̂_0 is its ε error × 1/α (docs/fast_sampling.md). Extrapolating in log t is
better than in t for HOLD (ε varies on the log scale of the data block's noise level near t = 0).
Extrapolating x̂_0 in σ̃ = e^{−λ/2} (``extrapolate='sigma'``, EDM's σ; for Gaussian data x̂_0 is a smooth function
of σ̃, while σ̃² ∝ t³ / t⁵ near 0 for CLD / HOLD) is 2–5× lower in mode-KL at 10–20 NFE with exact scores for
VE / CLD / HOLD, and worse on every trained digits network at 10 NFE (docs/fast_sampling.md, session 21).
``'log1p_sigma'``, log(1 + σ̃), keeps most of that gain for CLD and HOLD and is level on CLD's networks: CLD's
default.
"""

from __future__ import annotations

import math

import torch

from ..choices import check_choice
from ..processes.core import F64, apply_blocks, combine_blocks, like, spread_blocks
from ..processes.noise_factor import (
    NoiseFactor,
    cached,
    data_posterior_mean,
    gddim_factor,
    process_key,
    tweedie_projection,
)
from .base import (
    CountingScore,
    FixedStepRun,
    SamplerConfigError,
    equivalent_sigma,
    noise_like,
    predicted_noise,
    sampler,
)
from .expint_defaults import defaults_for
from .expint_plan import StepIntervals, data_prediction_steps, late_steps_deterministic, noise_prediction_steps

EXTRAPOLATION = ("t", "tau", "log_t", "sigma", "log1p_sigma")
PREDICTIONS = ("noise", "data")


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


def integrator_plan(process, ts: torch.Tensor, options: dict) -> dict:
    """Per-step coefficients for a grid (expint_plan.py), stacked over steps (host float64, cached per grid),
    with warm-up (orders 1, 2, … on the first steps; the unused history weights are zero)."""
    variable = {
        "t": lambda t: t,
        "tau": process.tau,
        "log_t": torch.log,
        "sigma": lambda t: equivalent_sigma(process, t),
        "log1p_sigma": lambda t: equivalent_sigma(process, t).log1p(),  # σ̃ near the data, log σ̃ at the noise end
    }[options["extrapolate"]]

    def build():
        steps = StepIntervals(ts, options["order"], variable, options["corrector"])
        if options["prediction"] == "noise":
            return noise_prediction_steps(process, noise_parametrisation(process, options["kt"]), steps)
        plan = late_steps_deterministic(
            process, steps, data_prediction_steps(process, steps, options["stochasticity"]),
            options["deterministic_from_logsnr"],
        )  # fmt: skip
        plan["r_inv"], plan["p"], plan["phi"] = tweedie_projection(process, ts[:-1])  # x̂_0 = E[x_0|z] at t_i
        return plan

    key = ("plan", process_key(process), tuple(ts.tolist()), tuple(sorted(options.items())))
    return cached(key, lambda: first_order_long_steps(build(), variable(ts)))


# A step more than this many times longer than the one before it (in the extrapolation variable) is taken at
# order 1: a polynomial through closely spaced nodes extrapolated over a much longer step amplifies the
# nodes' noise like ratio^order (logsnr_band's end steps at 500–1000 NFE: ratios 10–100, mode-KL 0.43 at 1000
# NFE on ring8 VP); there x̂_0 is nearly constant, which order 1 integrates exactly.
STEP_RATIO_LIMIT = 3.0


def first_order_long_steps(plan: dict, variable_ts: torch.Tensor) -> dict:
    """The predictor weights of long steps (``STEP_RATIO_LIMIT``) collapsed onto the newest node: the Lagrange
    basis sums to 1, so Σ_j V_j (Σ_j W_j) is the order-1 weight."""
    h = variable_ts.diff().abs()
    long = torch.zeros(len(h), dtype=torch.bool)
    long[1:] = h[1:] > STEP_RATIO_LIMIT * h[:-1]
    for name in ("V", "W"):
        if name in plan and long.any():
            weights = plan[name].clone()
            weights[long, 0] = weights[long].sum(1)
            weights[long, 1:] = 0
            plan[name] = weights
    return plan


def resolve_options(options: dict, process_name: str = "") -> dict:
    """The sampler's options with every None replaced by the process's default (``defaults_for``), checked."""
    defaults = defaults_for(process_name)
    options = {name: defaults[name] if value is None else value for name, value in options.items()}
    order, lam = options["order"], options["stochasticity"]
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise SamplerConfigError(f"sampler.order must be 1, 2 or 3, got {order!r}")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
        raise SamplerConfigError(f"sampler.stochasticity (λ) must lie in [0, 1], got {lam!r}")
    options["stochasticity"] = float(lam)
    options["kt"] = NoiseFactor.of(options["kt"], "sampler.kt").kind
    check_choice("sampler.extrapolate", options["extrapolate"], EXTRAPOLATION, SamplerConfigError)
    check_choice("sampler.prediction", options["prediction"], PREDICTIONS, SamplerConfigError)
    if options["prediction"] == "noise" and lam > 0:
        raise SamplerConfigError(
            "sampler.prediction=noise needs sampler.stochasticity=0: ε-steps with λ > 0 diverge at low NFE "
            "(docs/fast_sampling.md); use prediction=data"
        )
    threshold = options["deterministic_from_logsnr"]
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
            raise SamplerConfigError(
                f"sampler.deterministic_from_logsnr must be a number (a logSNR) or null, got {threshold!r}"
            )
        if options["prediction"] == "noise":
            raise SamplerConfigError(
                "sampler.deterministic_from_logsnr switches x̂_0-steps from λ to 0; it needs sampler.prediction=data"
            )
        options["deterministic_from_logsnr"] = float(threshold)
    if not isinstance(options["corrector"], bool):
        raise SamplerConfigError(f"sampler.corrector must be true or false, got {options['corrector']!r}")
    return options


@sampler("expint", retired={"noise": "its λ is sampler.stochasticity"})
@torch.no_grad()
def exponential_integrator(
    process,
    score_fn,
    prior_z,
    *,
    nfe: int,
    generator=None,
    order: int | None = None,
    stochasticity: float | None = None,
    prediction: str | None = None,
    corrector: bool | None = None,
    kt: str | None = None,
    grid: str | None = None,
    extrapolate: str | None = None,
    denoise: bool | str | None = None,
    deterministic_from_logsnr: float | None = None,
):
    """Exponential integrator with multistep extrapolation (gDDIM / DEIS / DPM-Solver++-style), 1 NFE per step.

    ``order`` 1–3: order of the extrapolation polynomial (lower orders on the first steps);
    ``stochasticity`` λ ∈ [0, 1]: 0 = probability-flow ODE, 1 = reverse SDE;
    ``prediction``: 'noise' (extrapolate ε in K_t = ``kt``; λ = 0 only) or 'data' (extrapolate x̂_0 = E[x_0|z]);
    ``corrector``: UniPC-style correction of every step with the next evaluation (no extra NFE, one order up);
    ``extrapolate``: polynomial in 't', 'tau', 'log_t', 'sigma' (σ̃ = e^{−λ/2}, base.equivalent_sigma) or
    'log1p_sigma' (log(1 + σ̃));
    ``grid``, ``denoise``: as every sampler (base.py);
    ``deterministic_from_logsnr`` c: steps that start where the position block's logSNR is ≥ c take λ = 0
    (data prediction; None = never).
    None takes the process's default (expint_defaults.py ``defaults_for``: ``DEFAULTS`` + ``PROCESS_DEFAULTS``,
    the one place they live; conf/sampler/expint.yaml leaves them null).
    If ``score_fn`` predicts ε in the same K_t (a ScoreModel), the noise form uses its ε̂ directly.
    """
    options = resolve_options(
        dict(order=order, stochasticity=stochasticity, prediction=prediction, corrector=corrector, kt=kt,
             grid=grid, extrapolate=extrapolate, denoise=denoise, deterministic_from_logsnr=deterministic_from_logsnr),
        process.name,
    )  # fmt: skip
    run = FixedStepRun(process, score_fn, nfe, 1, options["denoise"], options["grid"])
    score, n, ts = run.score, run.n, run.ts
    ref = prior_z.new_empty((), dtype=F64)  # the device (and float64) every plan tensor moves to, once
    plan = {name: like(value, ref) for name, value in integrator_plan(process, ts, options).items()}
    steps = [{name: value[i] for name, value in plan.items()} for i in range(n)]
    if options["prediction"] == "data":
        z = data_prediction_loop(process, score, prior_z, ts, steps, options, generator)
        extra = 0
    else:
        own = predicted_noise(score_fn, NoiseFactor.of(options["kt"]))
        direct = CountingScore(own) if own is not None else None
        param = noise_parametrisation(process, options["kt"])

        def evaluate(z, i, step):
            t = float(ts[i])
            return param.from_network(z, direct(z, t), step) if direct else param.to_eps(z, score(z, t), step)

        z = noise_prediction_loop(evaluate, prior_z, steps, options)
        extra = direct.count if direct else 0
    z, used = run.finish(z)
    return z, used + extra


def noise_prediction_loop(evaluate, z, steps: list[dict], options: dict) -> torch.Tensor:
    """ε-steps z' = Φ z + Σ_j W_j ε_j. With the corrector, once ε_i is known at the predicted z_i, step i − 1 is
    redone through it (``W_corr``); the next step starts from the corrected state z_i + offset, and ε_i (taken
    at the predicted state, UniPC's choice) is not re-evaluated."""
    order, dtype = options["order"], z.dtype
    history, last, offset = [], None, None  # ε at t_i, t_{i−1}, …; the previous step for the corrector
    for i, step in enumerate(steps):
        eps, x0 = evaluate(z, i, step)
        z = z.to(F64)
        if last is not None:
            corrected = eps_update(last["step"], last["step"]["W_corr"], [eps, *last["history"]], ref=1, **last["at"])
            offset = corrected - z
        history = [eps, *history[: order - 1]]
        at = {"z": z, "offset": offset, "x0": x0}
        z_next = eps_update(step, step["W"], history, ref=0, **at)
        if options["corrector"] and i + 1 < len(steps):  # no evaluation follows the last step
            last = {"step": step, "history": history, "at": at}
        z = z_next.to(dtype)
    return z


def eps_update(step, W, eps, ref: int, z, offset, x0) -> torch.Tensor:
    """z' = Φ (z + offset) + Σ_j W_j ε_j, ε_ref evaluated at z (offset: the corrector's change, or None).
    With gDDIM's K_t (x0 = E[x_0|z] given) it is evaluated as φ' x̂_0 + R' ε_ref + Σ_j W_j (ε_j − ε_ref), algebraically
    equal for offset = 0 (ΦR + Σ_j W_j = R', the point-mass flow) and free of the cancellation of Φ z against W ε
    over long steps; the offset enters as a change of ε_ref (R' R⁻¹ offset), so it is carried by the flow."""
    if x0 is None:
        out = apply_blocks(step["Phi"], z if offset is None else z + offset)
        for W_j, eps_j in zip(W, eps):
            out = out + apply_blocks(W_j, eps_j)
        return out
    out = spread_blocks(step["phi_next"], x0) + apply_blocks(step["base"], eps[ref])
    if offset is not None:  # carried as a change of ε (R' R⁻¹): Φ would amplify it like exp(|A| Δτ) (CLD/HOLD)
        out = out + apply_blocks(step["base"], apply_blocks(step["r_inv"], offset))
    for j, (W_j, eps_j) in enumerate(zip(W, eps)):
        if j != ref:
            out = out + apply_blocks(W_j, eps_j - eps[ref])
    return out


def data_prediction_loop(process, score, z, ts, steps: list[dict], options: dict, generator) -> torch.Tensor:
    """x̂_0-steps z' = Ψ z + Σ_j V_j x̂_0,j + C^{1/2} ξ, with the corrector redoing step i − 1 (same ξ) once
    x̂_0 at t_i is known."""
    order, dtype = options["order"], z.dtype
    history, last = [], None
    for i, step in enumerate(steps):
        projection = (step["r_inv"], step["p"], step["phi"])
        x0 = data_posterior_mean(process, z, score(z, float(ts[i])), float(ts[i]), projection)
        xi = noise_like(z, generator).to(F64)
        if last is not None:
            z = x0_update(last["step"], last["step"]["V_corr"], [x0, *last["history"]], last["z"], last["xi"])
        history = [x0, *history[: order - 1]]
        z_next = x0_update(step, step["V"], history, z.to(F64), xi)
        if options["corrector"] and i + 1 < len(steps):
            last = {"step": step, "history": history, "z": z.to(F64), "xi": xi}
        z = z_next.to(dtype)
    return z


def x0_update(step, V, x0s, z, xi) -> torch.Tensor:
    out = apply_blocks(step["Psi"], z) + apply_blocks(step["root"], xi)
    for V_j, x0_j in zip(V, x0s):
        out = out + spread_blocks(V_j, x0_j)
    return out
