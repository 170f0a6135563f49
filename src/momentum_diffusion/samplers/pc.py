"""Predictor–corrector sampling (Song et al. 2021, Alg. 2/3) with a Langevin corrector on the noised block.

Langevin on z_k with ∇_{z_k} log p_t(z) is an MCMC move for the conditional law of z_k given the other
blocks, hence for the joint law: valid for every order. Step size as score_sde: ε = 2 α (snr ‖ξ‖/‖g‖)².
"""

from __future__ import annotations

import torch

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
from .em import euler_maruyama_step


def norm(x: torch.Tensor, per_sample: bool) -> torch.Tensor:
    """L2 norm per sample; averaged over the batch (score_sde's convention) unless ``per_sample``."""
    n = x.reshape(x.shape[0], -1).norm(dim=-1)
    return n.reshape(-1, *([1] * (x.dim() - 1))) if per_sample else n.mean()


def langevin_step_size(alpha: float, snr: float, noise, grad, per_sample: bool):
    return 2 * alpha * (snr * norm(noise, per_sample) / norm(grad, per_sample).clamp_min(1e-12)) ** 2


def corrector_alpha(process, dtau: float) -> float:
    """score_sde's α_i (1 − β_i for VP, 1 for VE), generalised as Φ_kk(Δτ)² of one step."""
    return float(process.sde.transition(torch.tensor(dtau, dtype=torch.float64))[0][-1, -1] ** 2)


PREDICTORS = ("auto", "reverse_diffusion", "euler_maruyama")


def resolve_predictor(process, predictor: str) -> str:
    """``auto``: reverse diffusion for VE (no drift; score_sde's VE configs), Euler–Maruyama otherwise.
    Reverse diffusion on order > 1 is consistent as Δτ → 0 but unstable over large steps: its noise Σ_h^{1/2} ξ
    enters every block while only the noised block's score corrects it (measured: mode-KL up to 1e7 on
    CLD/HOLD below ~150 NFE, docs/ams_speedup.md), hence not the default there."""
    if predictor not in PREDICTORS:
        raise SamplerConfigError(f"unknown predictor '{predictor}'; choose {', '.join(PREDICTORS)}")
    if predictor == "auto":
        is_ve = process.order == 1 and not bool(process.sde.A.any())
        return "reverse_diffusion" if is_ve else "euler_maruyama"
    return predictor


def predictor_step(process, kind: str, z, s, dtau: float, generator):
    """One reverse step over Δτ: Euler–Maruyama, or score_sde's reverse diffusion generalised to blocks:
    z ← z − (Φ − I) z + Σ_h[:, k] s + Σ_h^{1/2} ξ with Φ, Σ_h the exact forward transition of the step."""
    if kind == "euler_maruyama":
        return euler_maruyama_step(process, z, s, dtau, generator)
    if kind == "reverse_diffusion":
        Phi, Sigma = process.sde.transition(torch.tensor(dtau, dtype=torch.float64))
        z_mean = 2 * z - apply_blocks(Phi, z)
        z_mean += torch.einsum("i,b...->bi...", Sigma[:, -1].to(z.dtype), s)
        return z_mean + apply_blocks(psd_sqrt(Sigma), noise_like(z, generator))
    raise SamplerConfigError(f"unknown predictor '{kind}'; choose euler_maruyama or reverse_diffusion")  # after resolve


@sampler("pc")
@torch.no_grad()
def predictor_corrector(
    process,
    score_fn,
    prior_z,
    *,
    nfe: int,
    generator=None,
    snr: float = 0.16,
    n_corrector: int = 1,
    predictor: str = "auto",
    per_sample_norm: bool = False,
    denoise: bool | str = True,
    grid: str = "uniform",
):
    """Per step: ``n_corrector`` Langevin steps at t, then one predictor step (NFE = steps·(1 + n_corrector)).
    ``predictor``: auto | reverse_diffusion (order 1 only) | euler_maruyama (``resolve_predictor``)."""
    predictor = resolve_predictor(process, predictor)
    score = CountingScore(score_fn)
    n = steps_for_budget(check_nfe(nfe), 1 + n_corrector, denoise)
    ts = time_grid(process, n, grid)
    taus = process.tau(ts)
    z = prior_z.clone()  # the corrector updates in place; the caller's prior stays untouched
    for i in range(n):
        t, dtau = float(ts[i]), float(taus[i] - taus[i + 1])
        alpha = corrector_alpha(process, dtau)
        for _ in range(n_corrector):
            g = score(z, t)
            xi = noise_like(g, generator)
            eps = langevin_step_size(alpha, snr, xi, g, per_sample_norm)
            z[:, -1] += eps * g + (2 * eps) ** 0.5 * xi
        z = predictor_step(process, predictor, z, score(z, t), dtau, generator)
    if denoise:
        z = final_denoise(process, score, z, float(ts[-1]), denoise)
    return z, score.count
