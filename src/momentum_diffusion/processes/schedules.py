"""Scalar schedules b(t) ≥ 0 and their integrals τ(t) = ∫₀ᵗ b(s) ds (float64)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class Schedule:
    def b(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def tau(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class ConstantSchedule(Schedule):
    """b(t) = beta (CLD: β = 4; HOLD: see hold.py)."""

    beta: float

    def b(self, t):
        return torch.full_like(torch.as_tensor(t, dtype=torch.float64), self.beta)

    def tau(self, t):
        return self.beta * torch.as_tensor(t, dtype=torch.float64)


@dataclass
class LinearSchedule(Schedule):
    """b(t) = β_min + t (β_max − β_min) (VP SDE, Song et al. 2021 eq. 11)."""

    beta_min: float
    beta_max: float

    def b(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def tau(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)


@dataclass
class GeometricVarianceSchedule(Schedule):
    """VE SDE: b(t) = dσ²/dt with σ(t) = σ_min (σ_max/σ_min)^t (Song et al. 2021 eq. 9).

    τ(t) = σ(t)² − σ_min², so the kernel variance is exactly τ (the SDE started at t = 0).
    """

    sigma_min: float
    sigma_max: float

    def sigma(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def b(self, t):
        return self.sigma(t) ** 2 * 2 * math.log(self.sigma_max / self.sigma_min)

    def tau(self, t):
        return self.sigma(t) ** 2 - self.sigma_min**2
