"""The one core: linear phase-space SDEs and their Gaussian kernels.

    dz = b(t) (A ⊗ I) z dt + sqrt(b(t)) (B ⊗ I) dW,     Q = B Bᵀ,   z = (z_1, …, z_k), z_1 = data

State layout: a tensor of shape (batch, k, *data_shape); block i is ``z[:, i]``. The k×k algebra is done in
float64 and shared by every data coordinate; (k·d)×(k·d) matrices are never built.

With τ(t) = ∫₀ᵗ b(s) ds the process is time-homogeneous in τ, so its transition over any interval is
    mean Φ(Δτ) z,  covariance Σ(Δτ),   Φ(τ) = exp(τA),   Σ(τ) = ∫₀^τ exp(sA) Q exp(sAᵀ) ds.
Σ is computed in the stationary form Σ∞ − Φ Σ∞ Φᵀ when A is Hurwitz (Σ∞ solves AΣ∞ + Σ∞Aᵀ + Q = 0);
the Van Loan block exponential would contain exp(−τA), which overflows for strongly contracting A.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .schedules import Schedule

F64 = torch.float64  # the dtype of all k×k kernel algebra (DESIGN.md §7); imported, never redefined


def solve_lyapunov(A: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Solve A X + X Aᵀ + Q = 0 for X (k×k, k small) through the Kronecker form, in float64."""
    k = A.shape[0]
    eye = torch.eye(k, dtype=F64)
    lhs = torch.kron(A, eye) + torch.kron(eye, A)  # row-major vec(A X + X Aᵀ)
    X = torch.linalg.solve(lhs, -Q.reshape(-1)).reshape(k, k)
    return 0.5 * (X + X.T)


def psd_sqrt(M: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of PSD k×k matrices (batched). Robust where Cholesky is not: short-step
    transition covariances of order > 1 are nearly singular (entries O(h³), O(h²), O(h))."""
    vals, vecs = torch.linalg.eigh(0.5 * (M + M.transpose(-1, -2)))
    return (vecs * vals.clamp_min(0).sqrt().unsqueeze(-2)) @ vecs.transpose(-1, -2)


def like(M: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A host-computed constant (k×k matrix, k-vector, …) on z's device and in z's dtype.

    The k×k algebra runs in float64 on the host; states live wherever the caller put them. The copy is made
    once per (device, dtype) and kept on the constant itself (keyed by its version counter, so an in-place
    change is never served stale): process constants and cached sampler plans cross to the device once,
    not at every step. Every product of a constant with a state goes through here (``apply_blocks``,
    ``combine_blocks``, ``spread_blocks``), which is what makes the samplers device-correct by construction.
    """
    if M.device == z.device and M.dtype == z.dtype:
        return M
    copies = M.__dict__.setdefault("_device_copies", {})
    key = (z.device, z.dtype, M._version)
    if key not in copies:
        copies.clear()  # a stale version or another device: keep one copy
        copies[key] = M.detach().to(device=z.device, dtype=z.dtype)
    return copies[key]


def apply_blocks(M: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Apply a k×k matrix (or a batch of them, (B,k,k)) to the block axis of z (B, k, *data)."""
    M = like(M, z)
    if M.dim() == 2:
        return torch.einsum("ij,bj...->bi...", M, z)
    return torch.einsum("bij,bj...->bi...", M, z)


def combine_blocks(row: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Σ_i row_i z[:, i]: a k-vector contracted with the block axis, (B, *data)."""
    return torch.einsum("i,bi...->b...", like(row, z), z)


def spread_blocks(col: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """col ⊗ x: a k-vector times a data-shaped x (B, *data), giving a state (B, k, *data)."""
    return torch.einsum("i,b...->bi...", like(col, x), x)


@dataclass
class LinearSDE:
    """Time-homogeneous (in τ) linear SDE dz = A z dτ + B dW with constant k×k A and Q = BBᵀ."""

    A: torch.Tensor
    Q: torch.Tensor
    stationary_cov: torch.Tensor | None = field(init=False, default=None)

    def __post_init__(self):
        self.A = torch.as_tensor(self.A, dtype=F64)
        self.Q = torch.as_tensor(self.Q, dtype=F64)
        if self.A.shape != self.Q.shape or self.A.dim() != 2 or self.A.shape[0] != self.A.shape[1]:
            raise ValueError(f"A and Q must be equal square matrices, got {self.A.shape} and {self.Q.shape}")
        if torch.linalg.eigvalsh(self.Q).min() < -1e-12:
            raise ValueError("Q must be positive semi-definite")
        if self.is_hurwitz:
            self.stationary_cov = solve_lyapunov(self.A, self.Q)

    @property
    def order(self) -> int:
        return self.A.shape[0]

    @property
    def is_hurwitz(self) -> bool:
        return bool(torch.linalg.eigvals(self.A).real.max() < 0)

    def transition(self, dtau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Φ(Δτ) and Σ(Δτ) for a tensor of Δτ ≥ 0 of any shape: returns (*shape, k, k) each, float64."""
        dtau = torch.as_tensor(dtau, dtype=F64)  # on the caller's device; the constants follow it
        A, Q = like(self.A, dtau), like(self.Q, dtau)
        Phi = torch.linalg.matrix_exp(dtau[..., None, None] * A)
        if self.stationary_cov is not None:
            S = like(self.stationary_cov, dtau)
            Sigma = S - Phi @ S @ Phi.transpose(-1, -2)
        elif not self.A.any():
            Sigma = dtau[..., None, None] * Q
        else:  # neither Hurwitz nor zero: Van Loan, safe only while exp(−τA) stays moderate
            k = self.order
            top = torch.cat([-A, Q], dim=1)
            bottom = torch.cat([torch.zeros_like(A), A.T], dim=1)
            F = torch.linalg.matrix_exp(dtau[..., None, None] * torch.cat([top, bottom], dim=0))
            F12, F22 = F[..., :k, k:], F[..., k:, k:]
            Sigma = F22.transpose(-1, -2) @ F12
        return Phi, 0.5 * (Sigma + Sigma.transpose(-1, -2))

    def time_reversed_linear_part(self) -> LinearSDE:
        """Linear part of the reverse SDE when the score is replaced by the stationary Gaussian's score.

        Reverse drift −A z + Q ∇log N(z; 0, Σ∞) = −(A + QΣ∞⁻¹) z = Σ∞ Aᵀ Σ∞⁻¹ z (using the Lyapunov
        equation), noise Q: a Hurwitz linear SDE with the same stationary law. Splitting samplers solve it
        exactly (CLD paper Sec. 3.3, SSCS; HOLD's Lie–Trotter).
        """
        if self.stationary_cov is None:
            raise ValueError("the time-reversed linear part needs a stationary law (Hurwitz A)")
        S = self.stationary_cov
        return LinearSDE(S @ self.A.T @ torch.linalg.inv(S), self.Q)


@dataclass
class Process:
    """A forward diffusion in phase space: linear SDE + schedule b(t) + initial law of the auxiliary blocks.

    Noise enters only the last block (row k−1 of Q); the reverse dynamics need the score only there,
    and that is what networks predict (the "noised block").
    """

    name: str
    sde: LinearSDE
    schedule: Schedule
    initial_cov: torch.Tensor  # k×k covariance of z_0 given x_0 (zero in the data row/column)
    prior_cov: torch.Tensor  # k×k covariance of the prior at t = T (mean zero)
    t_min: float = 1e-5  # training / sampling end time ε
    t_max: float = 1.0  # T
    kernel_jitter: float = 1e-9  # added to the kernel's diagonal before Cholesky (singular at t = 0)

    def __post_init__(self):
        self.initial_cov = torch.as_tensor(self.initial_cov, dtype=F64)
        self.prior_cov = torch.as_tensor(self.prior_cov, dtype=F64)
        k = self.order
        off = self.sde.Q.clone()
        off[k - 1, k - 1] = 0
        if self.sde.Q[k - 1, k - 1] <= 0 or torch.count_nonzero(off) != 0:
            raise ValueError("this core expects noise on the last block only (Q = q·E_kk, q > 0)")
        if not 0 <= self.t_min < self.t_max:
            raise ValueError(f"need 0 <= t_min < t_max, got {self.t_min}, {self.t_max}")

    # ---- layout -------------------------------------------------------------------------------
    @property
    def order(self) -> int:
        return self.sde.order

    @property
    def noise_scale(self) -> float:
        """Q_kk: the diffusion coefficient of the noised block (per unit τ)."""
        return float(self.sde.Q[-1, -1])

    def data_block(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, 0]

    # ---- schedule -----------------------------------------------------------------------------
    def b(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.b(torch.as_tensor(t, dtype=F64))

    def tau(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.tau(torch.as_tensor(t, dtype=F64))

    def transition(self, t_from, t_to) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward transition z_{t_to} | z_{t_from} (t_to ≥ t_from): Φ and Σ over Δτ = τ(t_to) − τ(t_from)."""
        return self.sde.transition(self.tau(t_to) - self.tau(t_from))

    # ---- kernel given x_0 ------------------------------------------------------------------------
    def mean_factor(self, t: torch.Tensor) -> torch.Tensor:
        """φ_t = Φ(τ_t) e_1, how x_0 enters the mean of z_t (the auxiliary blocks start at 0): (*t, k), float64."""
        return self.transition(torch.zeros_like(t), t)[0][..., :, 0]

    def kernel(self, t: torch.Tensor, initial_cov: torch.Tensor | None = None):
        """Mean matrix Φ(τ(t)), covariance Φ Σ_0 Φᵀ + Σ(τ) and its Cholesky factor, each (*t, k, k), float64.

        Σ_0 = ``initial_cov`` (default: the process's law of the auxiliary blocks given x_0).
        """
        S0 = self.initial_cov if initial_cov is None else torch.as_tensor(initial_cov, dtype=F64)
        Phi, Sigma = self.sde.transition(self.tau(t))
        cov = Phi @ like(S0, Phi) @ Phi.transpose(-1, -2) + Sigma
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        eye = torch.eye(self.order, dtype=F64, device=cov.device)
        chol = torch.linalg.cholesky(cov + self.kernel_jitter * eye)
        return Phi, cov, chol

    def embed_data(self, x0: torch.Tensor) -> torch.Tensor:
        """z_0 mean: (x_0, 0, …, 0)."""
        z = x0.new_zeros((x0.shape[0], self.order, *x0.shape[1:]))
        z[:, 0] = x0
        return z

    def perturb(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None):
        """Draw z_t ~ p(z_t | x_0) = N(Φ z̄_0, LLᵀ). Returns (z_t, eps, chol) with z_t = Φ z̄_0 + L eps."""
        Phi, _, chol = self.kernel(t)
        z0 = self.embed_data(x0)
        eps = torch.randn(z0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return apply_blocks(Phi.to(x0.device), z0) + apply_blocks(chol.to(x0.device), eps), eps, chol

    def score_scale(self, t: torch.Tensor) -> torch.Tensor:
        """ℓ_t = 1 / L_kk: the kernel's noised-block score is −ℓ_t ε_k (CLD's HSM, HOLD's BCSM, DSM)."""
        return 1.0 / self.kernel(t)[2][..., -1, -1]

    # ---- prior ----------------------------------------------------------------------------------
    def sample_prior(self, shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """z_T ~ N(0, prior_cov ⊗ I) with ``shape`` the data shape including batch: returns (B, k, *data)."""
        B, *data = shape
        eps = torch.randn((B, self.order, *data), generator=generator, dtype=dtype, device=device)
        return apply_blocks(self.prior_chol, eps)

    @property
    def prior_chol(self) -> torch.Tensor:
        """Cholesky factor of the prior covariance (host float64, computed once)."""
        if getattr(self, "_prior_chol", None) is None:
            eye = torch.eye(self.order, dtype=F64)
            self._prior_chol = torch.linalg.cholesky(self.prior_cov + 1e-12 * eye)
        return self._prior_chol

    # ---- reverse dynamics -------------------------------------------------------------------------
    def reverse_drift_per_tau(self, z, noised_score, probability_flow: bool = False) -> torch.Tensor:
        """Reverse drift divided by b(t): A z − w Q s, s on the noised block (w = ½ for the PF-ODE)."""
        drift = apply_blocks(self.sde.A, z)
        drift[:, -1] -= (0.5 if probability_flow else 1.0) * self.noise_scale * noised_score
        return drift

    def describe(self) -> str:
        return f"{self.name} (order {self.order}, t ∈ [{self.t_min:g}, {self.t_max:g}])"
