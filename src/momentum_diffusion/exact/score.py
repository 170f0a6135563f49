"""The exact perturbed score of Gaussian-mixture data under any linear phase-space process (DESIGN.md §6).

The mixture itself (specs, sampling) is ``mixture.GaussianMixture``.

If x_0 ~ Σ_i w_i N(m_i, C_i) and the auxiliary blocks start at N(0, Σ_0) given x_0, then under the linear
SDE of ``processes.core`` the state z_t is again a Gaussian mixture in phase space:

    z_t ~ Σ_i w_i N( Φ (m_i, 0, …, 0),  Φ diag(C_i, Σ_0,aux) Φᵀ + Σ(τ) ),     Φ = Φ(τ(t)), Σ = Σ(τ(t)).

With φ = Φ e_1 (first column) and S = Φ Σ_0 Φᵀ + Σ (the kernel covariance given x_0), the (k·d)×(k·d)
covariance of component i is  φφᵀ ⊗ C_i + S ⊗ I_d.  Writing C_i = U_i diag(λ_i) U_iᵀ and rotating every
block by U_iᵀ decouples the data coordinates: coordinate j of the rotated state, a k-vector, is
N(φ μ_ij, P_ij) with μ_i = U_iᵀ m_i and P_ij = λ_ij φφᵀ + S, a k×k matrix.  So the log-density and its
gradient only need batched k×k algebra over (component, coordinate); the (k·d)×(k·d) matrix is never built.

Axis-aligned components (``std`` or ``diag`` specs, U = I) are handled without any rotation: the
quadratic forms reduce to two small matrix products against per-sample block outer products, so a call
costs O(B·K·k²·d) flops with no (B, K, k, d) intermediate.  Components with a full ``cov`` are rotated
explicitly (O(B·K·k·d²)).  All k×k quantities depend on t only through Φ and S and on the component only
through the eigenvalue λ, so they are computed once per distinct eigenvalue.
"""

from __future__ import annotations

import torch

from ..processes.core import like
from ..processes.memo import LRUCache
from .mixture import F64, LOG_2PI, GaussianMixture

__all__ = ["ExactScore"]


# ---------------------------------------------------------------------------------------------------
# Exact score. Components are split into three groups by covariance structure; each group turns the
# shared per-eigenvalue k×k quantities (P⁻¹, P⁻¹φ, φᵀP⁻¹φ, log det P) into its own per-t coefficients and
# evaluates log-densities (B, K_g) plus a closure r ↦ Σ_i r_i ∇_{z_k} log N_i for responsibilities r.
# "lead" is the shape of t: () for one time shared by the batch, (B,) for per-sample times ("batched").


def _lead_perm(lead, *tail):
    return (*range(len(lead)), *tail)


class _IsotropicGroup:
    """C_i = λ_i I: P_ij = P_i for every coordinate, so the quadratic form needs only the k×k Gram matrix
    Σ_j z_aj z_bj of each sample and the projections z_a · m_i: O(B·k·(k + K)·d)."""

    def __init__(self, comps, means, lam_index):
        self.comps, self.m, self.idx = comps, means, lam_index  # (Ki,), (Ki, d), (Ki,)
        self.msq = (means**2).sum(-1)

    def per_sample_elems(self, k, d):
        return len(self.comps) * k * k

    def coefficients(self, sh, lead, k, d):
        Lam = sh["Lam"][..., self.idx, :, :]  # (..., Ki, k, k)
        Lphi = sh["Lphi"][..., self.idx, :]  # (..., Ki, k)
        return {
            "Wq": Lam.reshape(*lead, -1, k * k).transpose(-1, -2),  # (..., k², Ki)
            "Lphi": Lphi,
            "const": self.msq * sh["phiLphi"][..., self.idx] + d * sh["logdet"][..., self.idx] + k * d * LOG_2PI,
            "Lrow": Lam[..., -1, :],  # (..., Ki, k): row k−1 of P⁻¹
            "cs": Lphi[..., -1],  # (..., Ki): (P⁻¹φ)_{k−1}
        }

    def terms(self, z, c, batched, need_score):
        B, k, d = z.shape
        gram = torch.einsum("baj,bcj->bac", z, z).reshape(B, k * k)
        zm = (z.reshape(B * k, d) @ like(self.m, z).T).reshape(B, k, -1)  # (B, k, Ki): z_a · m_i
        if batched:
            quad = torch.einsum("bn,bni->bi", gram, c["Wq"]) - 2 * torch.einsum("bai,bia->bi", zm, c["Lphi"])
        else:
            quad = gram @ c["Wq"] - 2 * torch.einsum("bai,ia->bi", zm, c["Lphi"])
        logp = -0.5 * (quad + c["const"])

        def score(r):  # −Σ_i r_i [P_i⁻¹ (z − φ m_i)]_{k−1}
            coef = torch.einsum("bi,bia->ba", r, c["Lrow"]) if batched else r @ c["Lrow"]
            return (r * c["cs"]) @ like(self.m, z) - torch.einsum("ba,bad->bd", coef, z)

        return logp, (score if need_score else None)


class _DiagonalGroup:
    """C_i = diag(λ_i): P_ij depends on the coordinate; the quadratic form is one product of the per-sample
    block outer products z_aj z_bj, (B, k²d), with a (k²d, K) weight matrix: O(B·K·k²·d)."""

    def __init__(self, comps, means, lam_index):
        self.comps, self.m, self.idx = comps, means, lam_index  # (Kd,), (Kd, d), (Kd, d)

    def per_sample_elems(self, k, d):
        return len(self.comps) * d * k * k

    def coefficients(self, sh, lead, k, d):
        Lam = sh["Lam"][..., self.idx, :, :]  # (..., Kd, d, k, k)
        W = sh["Lphi"][..., self.idx, :] * self.m[..., None]  # μ_ij P_ij⁻¹φ, (..., Kd, d, k)
        return {
            "Wq": Lam.permute(*_lead_perm(lead, -2, -1, -3, -4)).reshape(*lead, k * k * d, -1),
            "Wc": W.permute(*_lead_perm(lead, -1, -2, -3)).reshape(*lead, k * d, -1),
            "const": (self.m**2 * sh["phiLphi"][..., self.idx]).sum(-1)
            + sh["logdet"][..., self.idx].sum(-1)
            + k * d * LOG_2PI,
            "Ls": Lam[..., -1, :].permute(*_lead_perm(lead, -1, -3, -2)),  # (..., k, Kd, d)
            "cs": W[..., -1],  # (..., Kd, d)
        }

    def terms(self, z, c, batched, need_score):
        B, k, d = z.shape
        outer = (z[:, :, None, :] * z[:, None, :, :]).reshape(B, k * k * d)
        flat = z.reshape(B, k * d)
        if batched:
            quad = torch.einsum("bn,bni->bi", outer, c["Wq"]) - 2 * torch.einsum("bn,bni->bi", flat, c["Wc"])
        else:
            quad = outer @ c["Wq"] - 2 * (flat @ c["Wc"])
        logp = -0.5 * (quad + c["const"])

        def score(r):
            if batched:
                coef = torch.einsum("bi,baid->bad", r, c["Ls"])
                return torch.einsum("bi,bid->bd", r, c["cs"]) - (coef * z).sum(1)
            coef = torch.einsum("bi,aid->bad", r, c["Ls"])
            return r @ c["cs"] - (coef * z).sum(1)

        return logp, (score if need_score else None)


class _FullGroup:
    """General C_i = U_i diag(λ_i) U_iᵀ: rotate every block by U_iᵀ (O(B·K·k·d²)), then per-coordinate
    k×k algebra on the rotated (B, K, k, d) state; chunked over the batch to bound memory."""

    def __init__(self, comps, U, means_rot, lam_index, chunk_elems):
        self.comps, self.U, self.mu, self.idx = comps, U, means_rot, lam_index  # (Kf,) (Kf,d,d) (Kf,d) (Kf,d)
        self.chunk_elems = chunk_elems

    def per_sample_elems(self, k, d):
        return len(self.comps) * d * k * (k + 2)

    def coefficients(self, sh, lead, k, d):
        Lam = sh["Lam"][..., self.idx, :, :]  # (..., Kf, d, k_a, k_b)
        return {
            "phi": sh["phi"],
            "Lam": Lam.permute(*_lead_perm(lead, -1, -4, -2, -3)),  # (..., k_b, Kf, k_a, d)
            "const": sh["logdet"][..., self.idx].sum(-1) + k * d * LOG_2PI,
        }

    def _chunk(self, z, c, batched):
        k = z.shape[1]
        y = torch.einsum("bad,ide->biae", z, like(self.U, z))  # U_iᵀ z_a, (B, Kf, k, d)
        phi = c["phi"][:, None, :, None] if batched else c["phi"][None, None, :, None]
        e = y - phi * like(self.mu, z)[None, :, None, :]
        Lam = c["Lam"]
        g = sum((Lam[:, b] if batched else Lam[b]) * e[:, :, b : b + 1, :] for b in range(k))  # P⁻¹ e
        logp = -0.5 * ((e * g).sum((-1, -2)) + c["const"])
        return logp, g[:, :, -1, :]  # last-block residual in the rotated basis

    def terms(self, z, c, batched, need_score):
        B, k, d = z.shape
        step = B if batched else max(1, self.chunk_elems // (len(self.comps) * k * d))
        logps, resid = [], []
        for s in range(0, B, step):
            lp, g = self._chunk(z[s : s + step], c, batched)
            logps.append(lp)
            resid.append(g)
        g_last = torch.cat(resid)

        def score(r):
            return -torch.einsum("bi,ide,bie->bd", r, like(self.U, g_last), g_last)

        return torch.cat(logps), (score if need_score else None)


class ExactScore:
    """Exact score ∇_{z_k} log p_t(z) of the noised (last) block for Gaussian-mixture data (DESIGN.md §6).

    ``score(z, t)`` takes z of shape (B, k, d) and t a float, a 0-d tensor or a (B,) tensor and returns
    (B, d) in z's dtype (all arithmetic in float64). When t is one time for the whole batch (a scalar, or
    a (B,) tensor with equal entries, as samplers pass it) the per-t k×k quantities are cached (LRU).
    """

    def __init__(self, process, gmm: GaussianMixture, cache_size: int = 64, chunk_elems: int = 1 << 22):
        self.process = process
        self.gmm = gmm
        self.k = process.order
        self.d = d = gmm.dim
        self.cache_size = cache_size
        self.chunk_elems = chunk_elems
        self._coefficient_cache = LRUCache(cache_size)  # per-t k×k quantities, for samplers' shared times

        covs = gmm.covs
        diag = torch.diagonal(covs, dim1=-2, dim2=-1)  # (K, d)
        aligned = (covs - torch.diag_embed(diag) == 0).flatten(1).all(dim=1)
        iso = aligned & (diag == diag[:, :1]).all(dim=1)
        comps_i = torch.nonzero(iso).flatten()
        comps_d = torch.nonzero(aligned & ~iso).flatten()
        comps_f = torch.nonzero(~aligned).flatten()
        lam_f, U = torch.linalg.eigh(covs[comps_f])  # C = U diag(λ) Uᵀ (empty when there are no full covs)
        lam_u, inverse = torch.unique(
            torch.cat([diag[comps_i, 0], diag[comps_d].reshape(-1), lam_f.reshape(-1)]), return_inverse=True
        )
        self._lam = lam_u  # distinct eigenvalues of all C_i: the k×k algebra is done once per value
        n_i, n_d = len(comps_i), len(comps_d) * d
        self._groups = []
        if len(comps_i):
            self._groups.append(_IsotropicGroup(comps_i, gmm.means[comps_i], inverse[:n_i]))
        if len(comps_d):
            idx = inverse[n_i : n_i + n_d].reshape(-1, d)
            self._groups.append(_DiagonalGroup(comps_d, gmm.means[comps_d], idx))
        if len(comps_f):
            mu = torch.einsum("ide,id->ie", U, gmm.means[comps_f])  # μ = Uᵀ m
            idx = inverse[n_i + n_d :].reshape(-1, d)
            self._groups.append(_FullGroup(comps_f, U, mu, idx, chunk_elems))
        self._order = torch.cat([g.comps for g in self._groups])  # internal component order
        self.log_w = torch.log(gmm.weights[self._order])

    # ---- per-t coefficients ------------------------------------------------------------------------
    def _coefficients(self, t: torch.Tensor) -> list[dict]:
        """Per-group coefficients for t of shape () or (B,) (leading dims of every entry = t.shape)."""
        Phi, S, _ = self.process.kernel(t)  # (..., k, k): mean matrix and kernel covariance given x_0
        phi = Phi[..., :, 0]  # Φ e_1: how the data block enters the mean
        outer = phi[..., :, None] * phi[..., None, :]
        P = self._lam[:, None, None] * outer[..., None, :, :] + S[..., None, :, :]  # (..., L, k, k)
        chol = torch.linalg.cholesky(P)
        Lam = torch.cholesky_inverse(chol)
        Lam = 0.5 * (Lam + Lam.transpose(-1, -2))
        Lphi = torch.einsum("...lab,...b->...la", Lam, phi)
        shared = {
            "phi": phi,
            "Lam": Lam,  # P⁻¹, (..., L, k, k)
            "Lphi": Lphi,  # P⁻¹φ, (..., L, k)
            "phiLphi": torch.einsum("...la,...a->...l", Lphi, phi),  # φᵀP⁻¹φ, (..., L)
            "logdet": 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1),  # (..., L)
        }
        return [g.coefficients(shared, t.shape, self.k, self.d) for g in self._groups]

    def _scalar_coefficients(self, t: float) -> list[dict]:
        key = float(t)
        return self._coefficient_cache.get(key, lambda: self._coefficients(torch.tensor(key, dtype=F64)))

    # ---- evaluation -------------------------------------------------------------------------------
    def _evaluate_chunk(self, z, coeffs, batched, need_score):
        # coefficients are computed on the host; the cached ones cross to z's device once (core.like)
        coeffs = [{key: like(value, z) for key, value in c.items()} for c in coeffs]
        parts, closures = [], []
        for g, c in zip(self._groups, coeffs):
            lp, fn = g.terms(z, c, batched, need_score)
            parts.append(lp)
            closures.append(fn)
        logits = torch.cat(parts, dim=1) + like(self.log_w, z)  # (B, K), internal order
        if not need_score:
            return logits, None
        r = torch.softmax(logits, dim=1)
        score, start = 0.0, 0
        for g, fn in zip(self._groups, closures):
            score = score + fn(r[:, start : start + len(g.comps)])
            start += len(g.comps)
        return logits, score

    def _evaluate(self, z: torch.Tensor, t, need_score: bool):
        if z.dim() != 3 or z.shape[1] != self.k or z.shape[2] != self.d:
            raise ValueError(f"z must have shape (B, k={self.k}, d={self.d}), got {tuple(z.shape)}")
        z64 = z if z.dtype == F64 else z.to(F64)
        t = torch.as_tensor(t, dtype=F64).detach().cpu()
        if t.dim() > 0:
            t = t.reshape(-1)
            if t.numel() == 1 or bool((t == t[0]).all()):
                t = t[0]
            elif t.numel() != z.shape[0]:
                raise ValueError(f"t must be a scalar or one value per sample; got {t.numel()} for B={len(z)}")
        if t.dim() == 0:
            return self._evaluate_chunk(z64, self._scalar_coefficients(float(t)), False, need_score)
        # per-sample times: coefficients for the distinct times of each chunk, gathered per sample
        per_sample = sum(g.per_sample_elems(self.k, self.d) for g in self._groups)
        step = max(1, self.chunk_elems // per_sample)
        logits, scores = [], []
        for s in range(0, z.shape[0], step):
            t_unique, inverse = torch.unique(t[s : s + step], return_inverse=True)
            coeffs = [{key: v[inverse] for key, v in c.items()} for c in self._coefficients(t_unique)]
            lp, sc = self._evaluate_chunk(z64[s : s + step], coeffs, True, need_score)
            logits.append(lp)
            scores.append(sc)
        return torch.cat(logits), (torch.cat(scores) if need_score else None)

    # ---- public API ---------------------------------------------------------------------------------
    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        """∇_{z_k} log p_t(z) of the noised block: (B, d) in z's dtype."""
        return self._evaluate(z, t, need_score=True)[1].to(z.dtype)

    def component_log_prob(self, z: torch.Tensor, t) -> torch.Tensor:
        """log w_i + log N_i(z; t) for every component, in the mixture's order: (B, K) float64."""
        logits, _ = self._evaluate(z, t, need_score=False)
        out = torch.empty_like(logits)
        out[:, self._order] = logits
        return out

    def log_prob(self, z: torch.Tensor, t) -> torch.Tensor:
        """log p_t(z) of the full phase-space state (B, k, d): (B,) float64, differentiable in z."""
        return torch.logsumexp(self._evaluate(z, t, need_score=False)[0], dim=1)

    def responsibilities(self, z: torch.Tensor, t) -> torch.Tensor:
        """Posterior component probabilities p(i | z_t): (B, K) float64, in the mixture's order."""
        return torch.softmax(self.component_log_prob(z, t), dim=1)
