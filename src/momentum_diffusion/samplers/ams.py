"""Adaptive momentum sampling (AMS; Wen et al. 2024, arXiv:2405.13726): PC, heavy-ball Langevin corrector.

AMS replaces the Langevin corrector of predictor–corrector sampling by Langevin with an exponential moving
average of scores (the update rule of the official code's ``LangevinCorrectorMomentum``):

    g ← s(z, t);  ξ ~ N(0, I)
    first step of a run:  β ← 0,  m ← g                                      (plain Langevin)
    otherwise:            ρ ← ‖g − g_prev‖ / ‖Δ‖                              (secant Lipschitz estimate)
                          β ← clip(((1 − ε̃ ρ) / (1 + ε̃ ρ))², 0, 1 − 1e-4)    (ε̃ the PREVIOUS inflated step)
                          m ← β m + (1 − β) g
    ε ← 2 α (snr ‖ξ‖ / ‖m‖)²;   ε̃ ← ε (1 + β)²
    z_k ← z_k + ε̃ m + sqrt(2ε) ξ;   Δ ← ε̃ m (the noise-free displacement);   g_prev ← g

``langevin_noise``: ``reference`` (default, the issue's and the authors' rule above) or ``consistent``, which draws
the noise as sqrt(2ε̃) ξ so that drift and noise belong to the same Langevin step of size ε̃. Why: the
reference rule takes drift ε̃ m but noise of a step ε, i.e. Langevin at temperature ε/ε̃ = 1/(1+β)²; on a
Gaussian it leaves N(0, σ²/(1+β̄)²) invariant (std −11% at snr 0.16), so it cannot converge to the data as
NFE grows. With sqrt(2ε̃) and β fixed, m = g + O(ε̃/(1−β)) and the chain is ULA with step ε̃ in the
small-step limit: invariant law N(0, σ²) up to the usual O(ε̃/σ²) discretisation bias. Only the noise scale
changes (ε still sets the step, β and ρ are computed as before), and at β = 0 both variants are PC.

``‖·‖`` is the per-sample L2 norm averaged over the batch (one β, ρ, ε per batch, as the reference code), or
per sample with ``per_sample_norm``. The momentum state persists across noise levels (ρ mixes the change
of t with the change of z, as in the reference code) and lives in one sampling call only.

Choices where the reference code is ambiguous (see references/hold_ams.md, notes 7–13):
- ε uses the UPDATED momentum m (the reference graph code; its image code uses the previous m). With this
  choice β = 0 is the score_sde Langevin corrector exactly, step for step.
- The final step is the framework's ``final_denoise`` (1 NFE, as every sampler here), not the reference
  code's noise-free last predictor step.
- Beyond the paper, the corrector acts on the noised block z_k given the other blocks, so AMS runs on every
  process (VP/VE, CLD, HOLD); α = Φ_kk(Δτ)² as in ``pc.PredictorPlan``.

Note on ρ: Δ excludes the Langevin noise (and the predictor move), while g − g_prev sees them. On a Gaussian
target ρ is therefore the Lipschitz constant 1/σ² only when the noise is negligible; with the snr step rule
the noise is 1/(snr (1+β)²) times the drift, and ρ ≈ sqrt(1 + 1/(snr² (1+β)⁴)) / σ² (tests/test_ams.py).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from ..choices import check_choice
from .base import FixedStepRun, SamplerConfigError, noise_like, sampler
from .pc import PredictorPlan, check_noise_scale, langevin_step_size, norm, resolve_predictor

BETA_CLIP = 1e-4  # β ≤ 1 − BETA_CLIP (the reference code's eps); not a tunable option
RULES = ("graph", "image")  # ε from the updated (graph code) or the previous (image code) momentum
LANGEVIN_NOISES = ("reference", "consistent")  # Langevin noise sqrt(2ε) (authors' rule) or sqrt(2ε̃) (module doc)


@dataclass
class MomentumState:
    """The corrector's memory within one sampling run (fresh per call: never module-level)."""

    m: torch.Tensor | None = None  # momentum: EMA of scores
    g_prev: torch.Tensor | None = None  # score at the previous corrector step
    delta_norm: torch.Tensor | None = None  # ‖Δ‖ of the previous noise-free displacement Δ = ε̃ m
    eps_tilde: torch.Tensor | None = None  # previous inflated step ε̃

    @property
    def started(self) -> bool:
        return self.m is not None


def _scalar_or_vector(x) -> float | torch.Tensor:
    """A trace entry: a float for batch-scalar quantities, a (B,) CPU tensor for per-sample ones."""
    if not torch.is_tensor(x):
        return float(x)
    return float(x) if x.numel() == 1 else x.detach().reshape(-1).cpu()


TRACED = ("beta", "rho", "eps", "eps_tilde")  # what ``trace`` records per corrector step, besides t


def _trace_entry(t, beta, rho, eps, eps_tilde, part: int | None) -> dict:
    """One corrector step of ``trace`` (and its coordinate group, with ``parts``)."""
    entry = {"t": float(t), **{k: _scalar_or_vector(v) for k, v in zip(TRACED, (beta, rho, eps, eps_tilde))}}
    return entry if part is None else {**entry, "part": part}


def coordinate_groups(z: torch.Tensor, parts) -> list[slice]:
    """Slices of the flattened noised block for ``parts`` (sizes of consecutive coordinate groups; None = one)."""
    size = z[:, -1].flatten(1).shape[1]
    if parts is None:
        return [slice(0, size)]
    parts = [int(p) for p in parts]
    if any(p <= 0 for p in parts) or sum(parts) != size:
        raise SamplerConfigError(f"sampler.parts {parts} must be positive sizes summing to the data size {size}")
    bounds = [0, *itertools.accumulate(parts)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def adaptive_momentum_langevin(
    score_fn,
    z: torch.Tensor,
    n_steps: int,
    snr: float,
    *,
    t: float,
    alpha: float = 1.0,
    state: MomentumState | list[MomentumState] | None = None,
    generator=None,
    per_sample_norm: bool = False,
    fixed_beta: float | None = None,
    langevin_noise: str = "reference",
    trace: list | None = None,
    parts=None,
    plain_parts=(),
    rule: str = "graph",
    noise_scale: float = 1.0,
) -> tuple[torch.Tensor, MomentumState | list[MomentumState]]:
    """``n_steps`` adaptive-momentum Langevin steps on the noised block z[:, -1] at fixed time t (in place).

    ``state`` carries the momentum between calls (a fresh one starts with a plain Langevin step);
    ``fixed_beta`` replaces the adaptive β by a constant (the constant-momentum ablation; β = 0 is the plain
    Langevin corrector); ``langevin_noise``: ``reference`` (sqrt(2ε)) or ``consistent`` (sqrt(2ε̃)). Random numbers
    are drawn exactly as the PC Langevin corrector draws them (one ``noise_like(g)`` per step, after the
    score). ``trace``, if a list, receives one dict per step (and group):
    {t, beta, rho, eps, eps_tilde} (ρ = nan on the first step; floats, or (B,) tensors per sample).
    ``parts``: sizes of consecutive coordinate groups of the flattened noised block, each with its own
    momentum, norms, β, ρ and ε (the AMS/GDSS graph code treats X and A so); ``state`` is then a list, one
    per group. ``plain_parts``: indices of groups held at β = 0 (plain Langevin: the AMS graph code's
    adjacency, whose momentum buffer is never written). ``rule``: ``graph`` takes ε from the updated momentum
    (the AMS graph code; β = 0 is PC exactly), ``image`` from the previous one (the AMS image code).
    ``noise_scale``: a factor on the Langevin noise (GDSS's / AMS's ``scale_eps``, as ``pc``). Returns (z, state).
    """
    groups = coordinate_groups(z, parts)
    single = parts is None
    if state is None:
        state = MomentumState() if single else [MomentumState() for _ in groups]
    states = [state] if single else list(state)
    for _ in range(n_steps):
        g = score_fn(z, t)
        xi = noise_like(g, generator)
        zf, gf, xf = z[:, -1].flatten(1), g.flatten(1), xi.flatten(1)
        if zf.data_ptr() != z[:, -1].data_ptr() or zf.stride(-1) != 1:
            raise RuntimeError("AMS needs a noised block that flattens to a view")
        for j, (sl, st) in enumerate(zip(groups, states)):
            gj, xij = (g, xi) if single else (gf[:, sl], xf[:, sl])
            fb = 0.0 if j in plain_parts else fixed_beta
            if not st.started:
                beta, rho, m = 0.0, math.nan, gj
            else:
                rho = norm(gj - st.g_prev, per_sample_norm) / st.delta_norm.clamp_min(1e-30)
                if fb is None:
                    ratio = (1 - st.eps_tilde * rho) / (1 + st.eps_tilde * rho)
                    beta = (ratio**2).clamp(0.0, 1.0 - BETA_CLIP)
                else:
                    beta = fb
                m = beta * st.m + (1 - beta) * gj
            m_eps = st.m if rule == "image" and st.started else m
            eps = langevin_step_size(alpha, snr, xij, m_eps, per_sample_norm)
            eps_tilde = eps * (1 + beta) ** 2
            delta = eps_tilde * m
            scale = eps if langevin_noise == "reference" else eps_tilde
            if single:
                z[:, -1] += delta + (2 * scale) ** 0.5 * xij * noise_scale  # as pc.py (same rounding) when β = 0
            else:
                zf[:, sl] += delta + (2 * scale) ** 0.5 * xij * noise_scale
            st.m, st.g_prev, st.eps_tilde = m, gj, eps_tilde
            st.delta_norm = norm(delta, per_sample_norm)
            if trace is not None:
                trace.append(_trace_entry(t, beta, rho, eps, eps_tilde, None if single else j))
    return z, (states[0] if single else states)


def _check_options(snr, fixed_beta, n_corrector, langevin_noise="reference") -> None:
    if not isinstance(snr, (int, float)) or isinstance(snr, bool) or not snr > 0:
        raise SamplerConfigError(f"sampler.snr must be a number > 0, got {snr!r}")
    if fixed_beta is not None and (
        isinstance(fixed_beta, bool) or not isinstance(fixed_beta, (int, float)) or not 0 <= fixed_beta < 1
    ):
        raise SamplerConfigError(f"sampler.fixed_beta must be null (adaptive) or in [0, 1), got {fixed_beta!r}")
    if isinstance(n_corrector, bool) or not isinstance(n_corrector, int) or n_corrector < 0:
        raise SamplerConfigError(f"sampler.n_corrector must be an integer >= 0, got {n_corrector!r}")
    check_choice("sampler.langevin_noise", langevin_noise, LANGEVIN_NOISES, SamplerConfigError)


@sampler("ams", retired={"noise": ("reference", "it is sampler.langevin_noise; noise is expint's λ")})
@torch.no_grad()
def adaptive_momentum(
    process,
    score_fn,
    prior_z,
    *,
    nfe: int,
    generator=None,
    snr: float = 0.16,
    predictor: str = "auto",
    per_sample_norm: bool = False,
    fixed_beta: float | None = None,
    langevin_noise: str = "reference",
    n_corrector: int = 1,
    denoise: bool | str = True,
    grid: str = "uniform",
    trace: list | None = None,
    parts="auto",
    adjacency_momentum: bool = True,
    rule: str = "graph",
    noise_scale: float = 1.0,
):
    """PC sampling with the AMS corrector: per step ``n_corrector`` momentum-Langevin steps at t, then one
    predictor step (NFE = steps·(1 + n_corrector), plus 1 for the final denoising, as ``pc``).

    predictor: auto (reverse diffusion for VE, as score_sde's VE configs; Euler–Maruyama otherwise),
    reverse_diffusion (order 1 only) or euler_maruyama (``pc.resolve_predictor``).
    per_sample_norm: per-sample β, ρ, ε instead of the reference code's batch-mean norms.
    fixed_beta: constant momentum (ablation); None = adaptive β. β = 0 reproduces ``pc`` sample for sample.
    langevin_noise: reference (sqrt(2ε), the authors' rule; tempered by 1/(1+β)²) or consistent (sqrt(2ε̃), a
    Langevin step of size ε̃; see the module docstring). Both coincide at β = 0.
    trace: optional list receiving the corrector's per-step {t, beta, rho, eps, eps_tilde}.
    parts: coordinate groups with their own momentum state (``adaptive_momentum_langevin``); ``auto`` takes
    ``score_fn.coordinate_parts`` when the model declares it (graphs: X | A | mask), else one group.
    adjacency_momentum: false holds group 1 (the adjacency of the graph layout) at β = 0, as the AMS
    authors' graph code does (its A momentum buffer is never updated); rule: graph | image (see above).
    noise_scale: a factor on the corrector's noise (the authors' ``scale_eps``, 0.6 on community_small; ``pc``).
    The momentum state starts afresh in every call; ``prior_z`` is not modified.
    """
    _check_options(snr, fixed_beta, n_corrector, langevin_noise)
    check_choice("sampler.rule", rule, RULES, SamplerConfigError)
    noise_scale = check_noise_scale(noise_scale)
    if parts == "auto":
        parts = getattr(score_fn, "coordinate_parts", None)
    if not adjacency_momentum and (parts is None or len(parts) < 2):
        raise SamplerConfigError(
            "sampler.adjacency_momentum=false needs coordinate groups (graph data or sampler.parts)"
        )
    plain_parts = () if adjacency_momentum else (1,)
    predictor = resolve_predictor(process, predictor)
    run = FixedStepRun(process, score_fn, nfe, 1 + n_corrector, denoise, grid)
    score, ts, n = run.score, run.ts, run.n
    plan = PredictorPlan(process, predictor, process.tau(ts)).to(prior_z)
    z = prior_z.clone()
    state = MomentumState() if parts is None else [MomentumState() for _ in parts]
    for i in range(n):
        t = float(ts[i])
        z, state = adaptive_momentum_langevin(
            score,
            z,
            n_corrector,
            snr,
            t=t,
            alpha=plan.alphas[i],
            state=state,
            generator=generator,
            per_sample_norm=per_sample_norm,
            fixed_beta=fixed_beta,
            langevin_noise=langevin_noise,
            trace=trace,
            parts=parts,
            plain_parts=plain_parts,
            rule=rule,
            noise_scale=noise_scale,
        )
        z = plan.step(i, z, score(z, t), generator)
    return run.finish(z)
