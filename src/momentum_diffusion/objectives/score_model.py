"""The score parametrisation that ties a network to a process (DESIGN.md §4: not inside network code).

The network sees all k blocks (concatenated on channels / features) and t, and predicts ε̂, the noise of
the noised block of the kernel sample z_t = Φ z̄_0 + L ε. The score is s_θ = −ℓ_t ε̂ with ℓ_t = 1/L_kk
(CLD's HSM and HOLD's BCSM; DSM's ε-prediction for order 1).
Mixed score (CLD, Sec. 3.2 / App. B): ε̂ = ε_gauss + net, where −ℓ_t ε_gauss is the exact score of the
process applied to Gaussian data N(0, σ_data² I); the network learns only the residual.
"""

from __future__ import annotations

import torch
from torch import nn

from ..processes.core import Process


class ScoreModel(nn.Module):
    def __init__(self, net: nn.Module, process: Process, mixed_score: bool = False, data_std: float = 1.0):
        super().__init__()
        self.net, self.process, self.mixed_score, self.data_std = net, process, mixed_score, data_std

    def _time(self, z: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return t.expand(z.shape[0]) if t.dim() == 0 else t

    def _per_sample(self, value: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return value.to(device=z.device, dtype=z.dtype).reshape(-1, *([1] * (z.dim() - 2)))

    def predict_noise(self, z: torch.Tensor, t) -> torch.Tensor:
        """ε̂(z_t, t), shape of the noised block z[:, -1]."""
        t = self._time(z, t)
        out = self.net(z.flatten(1, 2), t.to(device=z.device, dtype=torch.float32)).reshape(z[:, -1].shape)
        if self.mixed_score:
            out = out + self.gaussian_noise(z, t)
        return out

    def gaussian_noise(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε_gauss = L_kk (Σ_gauss⁻¹ z)_k: the noise whose score is that of Gaussian data N(0, σ_data²I)."""
        initial = self.process.initial_cov.clone()
        initial[0, 0] = self.data_std**2
        _, cov, _ = self.process.kernel(t, initial_cov=initial)
        chol_kk = self.process.kernel(t)[2][..., -1, -1]
        precision_row = torch.linalg.inv(cov)[..., -1, :] * chol_kk[..., None]  # (B, k)
        return torch.einsum("bi,bi...->b...", precision_row.to(device=z.device, dtype=z.dtype), z)

    def score(self, z: torch.Tensor, t) -> torch.Tensor:
        t = self._time(z, t)
        ell = self.process.score_scale(t)
        return -self._per_sample(ell, z[:, -1:]) * self.predict_noise(z, t)

    def forward(self, z: torch.Tensor, t) -> torch.Tensor:
        return self.score(z, t)
