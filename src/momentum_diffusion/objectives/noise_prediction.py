"""Denoising score matching on the noised block, shared by DSM (order 1), HSM (CLD) and BCSM (HOLD).

With x_0 given and the auxiliary blocks marginalised analytically (their initial law is part of the kernel
covariance; CLD's hybrid score matching), z_t = Φ z̄_0 + L ε and the kernel's noised-block score is
−ℓ_t ε_k (L lower-triangular, ℓ_t = 1/L_kk). Per-example loss, λ(t)-weighted (CLD paper, App. B.1):

    eps         λ = ℓ_t⁻²: ‖ε̂ − ε_k‖²                     (CLD's "reweightedv2", DDPM's simple loss)
    sqrt        λ = ℓ_t⁻¹: ℓ_t ‖ε̂ − ε_k‖²
    likelihood  λ = b(t) Q_kk: b Q_kk ℓ_t² ‖ε̂ − ε_k‖²   (the ELBO weighting)

averaged over data coordinates (``reduction=sum``: summed, score_sde's ``reduce_mean=False`` and GDSS's loss;
with Adam the scale only matters against weight decay and gradient clipping); t ~ U[t_min, t_max].

``kt`` chooses the noise factor K_t of the parametrisation (a processes/noise_factor.py ``NoiseFactor``, which
validates it and which the score model carries): ``cholesky`` (the
above) or ``gddim`` (K = R_t: the target is the full ε = R_t⁻¹ L_t ε over all k blocks, gDDIM's loss, and
ℓ_t in the weights becomes ‖c_t‖, c_t the last row of R_t⁻ᵀ, since |s − ŝ| ≤ ‖c_t‖ ‖ε − ε̂‖).
Checkpoints record ``kt``; the exponential integrator uses the network's ε directly when its K_t matches.
"""

from __future__ import annotations

import torch
from torch import nn

from ..choices import check_choice
from ..processes.core import Process
from ..processes.noise_factor import NoiseFactor
from .score_model import ScoreModel

WEIGHTINGS = ("eps", "sqrt", "likelihood")
REDUCTIONS = ("mean", "sum")


class ObjectiveConfigError(ValueError):
    pass


class NoisePredictionObjective(nn.Module):
    name = "noise_prediction"
    orders: tuple[int, int] = (1, 1_000)  # inclusive range of process orders this objective fits

    def __init__(
        self,
        weighting: str = "eps",
        mixed_score: bool = False,
        data_std: float = 1.0,
        kt: str | NoiseFactor = "cholesky",
        reduction: str = "mean",
        input_scaling: bool = False,
    ):
        super().__init__()
        self.weighting = check_choice("objective.weighting", weighting, WEIGHTINGS, ObjectiveConfigError)
        self.reduction = check_choice("objective.reduction", reduction, REDUCTIONS, ObjectiveConfigError)
        self.mixed_score, self.data_std, self.input_scaling = mixed_score, data_std, bool(input_scaling)
        self.noise_factor = NoiseFactor.of(kt, "objective.kt")

    def check_process(self, process: Process) -> None:
        lo, hi = self.orders
        if not lo <= process.order <= hi:
            raise ObjectiveConfigError(
                f"objective '{self.name}' fits processes of order {lo}–{hi}; diffusion '{process.name}' has "
                f"order {process.order} (use dsm for vp/ve, hsm for cld, bcsm for hold)"
            )

    def score_model(self, net: nn.Module, process: Process) -> ScoreModel:
        return ScoreModel(
            net, process, self.mixed_score, self.data_std, self.noise_factor, input_scaling=self.input_scaling
        )

    def sample_time(self, n: int, process: Process, generator=None, device=None) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        return process.t_min + (process.t_max - process.t_min) * u.cpu()

    def loss(self, model: ScoreModel, process: Process, x0: torch.Tensor, t=None, generator=None):
        """Per-example loss (shape (B,)) for a batch of data x0; ``t`` (B,) optional (for tests)."""
        if t is None:
            t = self.sample_time(x0.shape[0], process, generator, device=None)
        z_t, eps, chol = process.perturb(x0, t, generator)
        err = (model.predict_noise(z_t, t) - model.noise_target(eps, t, chol)).pow(2).flatten(1)
        err = err.sum(dim=1) if self.reduction == "sum" else err.mean(dim=1)
        return err * self.weight(process, t, model.score_rows(t)).to(err)

    def weight(self, process: Process, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """λ(t) from the score rows c_t ((B, m); ‖c_t‖ = ℓ_t for cholesky)."""
        ell = rows.norm(dim=-1)
        if self.weighting == "eps":
            return torch.ones_like(ell)
        if self.weighting == "sqrt":
            return ell
        return process.b(t) * process.noise_scale * ell**2
