"""The score parametrisation that ties a network to a process (DESIGN.md §4: not inside network code).

The network sees all k blocks (concatenated on channels / features) and t, and predicts ε̂, the noise of
the kernel sample z_t = Φ z̄_0 + K_t ε for its noise factor K_t (``noise_factor``, a
processes/noise_factor.py ``NoiseFactor``; ``kt`` in configs):
``cholesky`` (K = L_t; the network predicts the noised block's ε only and s_θ = −ℓ_t ε̂, ℓ_t = 1/L_kk: CLD's
HSM, HOLD's BCSM, DSM's ε-prediction) or ``gddim`` (K = R_t; it predicts all k blocks and s_θ = −c_tᵀ ε̂,
c_t the last row of R_t⁻ᵀ). ``predict_noise`` returns (B, m, *data) with m = noise_factor.blocks(process).
A ScoreModel is the score function samplers get, and the samplers/base.py ``NoisePredictingScore`` contract:
callable as s(z, t), with ``noise_factor`` and ``predict_noise``.
Mixed score (CLD, Sec. 3.2 / App. B): ε̂ = ε_gauss + net, with ε_gauss = K_tᵀ Σ_gauss⁻¹ z the noise whose
score −K_t⁻ᵀ ε_gauss = −Σ_gauss⁻¹ z is exact for Gaussian data N(0, σ_data² I); the network learns the residual.
Input scaling (``input_scaling``; EDM's c_in, Karras et al. 2022, Table 1): the network sees each block of z_t
divided by its marginal std for data N(0, σ_data² I), so its input has unit scale at every t. VE's z_t grows to
σ_max (50 by default) and an unscaled network's x̂_0 at the prior end is 10× worse than the data mean's
(docs/fast_sampling.md, session 20); for VP with σ_data = 1 the factor is 1.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..processes.core import Process
from ..processes.noise_factor import NoiseFactor


class ScoreModel(nn.Module):
    def __init__(
        self,
        net: nn.Module,
        process: Process,
        mixed_score: bool = False,
        data_std: float = 1.0,
        kt: str | NoiseFactor = "cholesky",
        observer=None,
        input_scaling: bool = False,
    ):
        super().__init__()
        self.net, self.process, self.mixed_score, self.data_std = net, process, mixed_score, data_std
        self.input_scaling = bool(input_scaling)
        self.noise_factor = NoiseFactor.of(kt)
        self.blocks = self.noise_factor.blocks(process)
        self.observer = observer  # called once per network evaluation (e.g. a progress bar), or None

    def _time(self, z: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return t.expand(z.shape[0]) if t.dim() == 0 else t

    def predict_noise(self, z: torch.Tensor, t) -> torch.Tensor:
        """ε̂(z_t, t): (B, m, *data), the last m blocks of ε (m = 1 for cholesky, k for gddim)."""
        if self.observer is not None:
            self.observer()
        t = self._time(z, t)
        net_in, cov = z, None
        if self.input_scaling:
            cov = self.gaussian_cov(t)  # shared with the mixed score's ε_gauss: one kernel per evaluation
            scale = self.input_scale(t, cov).to(device=z.device, dtype=z.dtype)
            net_in = z * scale.view(*scale.shape, *[1] * (z.dim() - 2))
        # the k blocks concatenated on channels (images) or features (vectors), and the m predicted blocks back
        out = self.net(rearrange(net_in, "b k c ... -> b (k c) ..."), t.to(device=z.device, dtype=torch.float32))
        out = rearrange(out, "b (m c) ... -> b m c ...", m=self.blocks)
        if self.mixed_score:
            out = out + self.gaussian_noise(z, t, cov)
        return out

    def gaussian_cov(self, t: torch.Tensor) -> torch.Tensor:
        """Σ_t of z_t for data N(0, σ_data² I), (B, k, k) float64."""
        initial = self.process.initial_cov.clone()
        initial[0, 0] = self.data_std**2
        return per_time(lambda u: self.process.kernel(u, initial_cov=initial)[1], t)

    def input_scale(self, t: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
        """c_in per block, (B, k) float64: 1 / the block's marginal std for data N(0, σ_data² I)."""
        cov = self.gaussian_cov(t) if cov is None else cov
        return torch.diagonal(cov, dim1=-2, dim2=-1).rsqrt()

    def gaussian_noise(self, z: torch.Tensor, t: torch.Tensor, cov: torch.Tensor | None = None) -> torch.Tensor:
        """ε_gauss = (K_tᵀ Σ_gauss⁻¹ z) on the predicted blocks (Σ_gauss: the kernel for Gaussian data; ``cov``
        if the caller already has it)."""
        cov = self.gaussian_cov(t) if cov is None else cov
        K = per_time(lambda u: self.noise_factor.matrix(self.process, u), t)
        rows = (K.transpose(-1, -2) @ torch.linalg.inv(cov))[..., -self.blocks :, :]  # (B, m, k)
        return torch.einsum("bji,bi...->bj...", rows.to(device=z.device, dtype=z.dtype), z)

    def noise_target(self, eps: torch.Tensor, t: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
        """The training target: ε of z_t = Φ z̄_0 + K_t ε for a kernel draw z_t = Φ z̄_0 + L_t ξ (ξ = eps)."""
        if self.blocks == 1:
            return eps[:, -1:]
        U = torch.linalg.solve(self.noise_factor.matrix(self.process, t), chol)  # K⁻¹L: orthogonal up to jitter
        return torch.einsum("bji,bi...->bj...", U.to(device=eps.device, dtype=eps.dtype), eps)

    def score_rows(self, t) -> torch.Tensor:
        """c_t on the predicted blocks, (B, m) float64: s = −Σ_j c_j ε_j."""
        return per_time(
            lambda u: self.noise_factor.score_rows(self.process, u), torch.as_tensor(t, dtype=torch.float64)
        )

    def score(self, z: torch.Tensor, t) -> torch.Tensor:
        t = self._time(z, t)
        rows = self.score_rows(t).to(device=z.device, dtype=z.dtype)
        return -torch.einsum("bj,bj...->b...", rows, self.predict_noise(z, t))

    def forward(self, z: torch.Tensor, t) -> torch.Tensor:
        return self.score(z, t)


def per_time(compute, t: torch.Tensor) -> torch.Tensor:
    """``compute`` (host float64 per-time constants) for the times t, flattened. A sampler's float time reaches the
    model expanded over the batch (stride 0, ``_time``): then once, not B times; other batches per sample."""
    t = t.detach().cpu().reshape(-1)
    if len(t) > 1 and t.stride(0) == 0:
        one = compute(t[:1])
        return one.expand(len(t), *one.shape[1:])
    return compute(t)
