"""Per-mode quality of samples from a Gaussian mixture: mode weights (TV) and mode shapes (KL).

Each sample is assigned to its most likely component, argmax_i log w_i + log N(x; m_i, C_i).

* ``mode_tv``  = ½ Σ_i |f_i − w_i|, f_i the fraction of samples assigned to mode i. A sampler that misses
  mode i entirely scores ≈ w_i; dropping modes or mis-weighting them is what this catches.
* ``mode_kl``  = Σ_i w_i KL( N(m̂_i, Ĉ_i) ‖ N(m_i, C_i) ), with m̂_i, Ĉ_i the mean and (unbiased)
  covariance of the samples assigned to mode i: blurred or collapsed modes score high.

Choice for under-populated modes: a mode with fewer than d + 2 assigned samples has no usable covariance
estimate; it contributes ``missing_kl`` instead, by default the KL of a fit whose covariance is 10× too
wide in every direction, d (10 − 1 − ln 10)/2 ≈ 3.35 d — larger than what mild blurring gives, so a
missing mode always shows up in ``mode_kl`` as well as in ``mode_tv``.

Assignment truncates overlapping modes, so even perfect samples have mode_kl > 0 (plus finite-sample
bias ≈ d(d+3)/(4 n_i)); compare against ``reference_mode_kl`` (a fresh data set of the same size).
"""

from __future__ import annotations

import math

import torch

from ..processes.core import F64


def default_missing_kl(dim: int) -> float:
    return 0.5 * dim * (10.0 - 1.0 - math.log(10.0))


def gaussian_kl(mean_p, cov_p, mean_q, cov_q) -> float:
    """KL( N(mean_p, cov_p) ‖ N(mean_q, cov_q) ), float64."""
    d = mean_p.shape[0]
    chol_q = torch.linalg.cholesky(cov_q)
    diff = (mean_q - mean_p)[:, None]
    solve_cov = torch.cholesky_solve(cov_p, chol_q)
    maha = (diff * torch.cholesky_solve(diff, chol_q)).sum()
    logdet_q = 2.0 * torch.log(torch.diagonal(chol_q)).sum()
    sign, logdet_p = torch.linalg.slogdet(cov_p)
    if sign <= 0:
        return math.inf
    return float(0.5 * (torch.trace(solve_cov) + maha - d + logdet_q - logdet_p))


def mode_quality(samples, gmm, missing_kl: float | None = None) -> dict:
    """Mode-weight TV and weighted per-mode KL of ``samples`` (n, d) against a GaussianMixture.

    Returns a dict: ``mode_tv``, ``mode_kl`` (floats), ``n_underpopulated`` (modes with < d + 2 samples),
    ``frequencies`` and ``mode_kls`` (per-mode lists, in the mixture's order).
    """
    x = torch.as_tensor(samples).detach().cpu().to(F64).reshape(len(samples), -1)
    d, K = gmm.dim, gmm.n_components
    if x.shape[1] != d:
        raise ValueError(f"samples have dimension {x.shape[1]}, the mixture has {d}")
    penalty = default_missing_kl(d) if missing_kl is None else float(missing_kl)
    n = x.shape[0]
    finite = torch.isfinite(x).all(dim=1)
    assign = torch.full((n,), -1, dtype=torch.long)
    if finite.any():
        assign[finite] = gmm.component_log_prob(x[finite]).argmax(dim=1)
    counts = torch.bincount(assign[assign >= 0], minlength=K).to(F64)
    freq = counts / max(n, 1)  # non-finite samples count as assigned to no mode
    tv = 0.5 * float((freq - gmm.weights).abs().sum() + (1.0 - freq.sum()))
    kls, underpopulated = [], 0
    for i in range(K):
        xi = x[assign == i]
        if xi.shape[0] < d + 2:
            kls.append(penalty)
            underpopulated += 1
            continue
        mean = xi.mean(0)
        cov = torch.cov(xi.T).reshape(d, d)
        kls.append(min(gaussian_kl(mean, cov, gmm.means[i], gmm.covs[i]), 1e6 * penalty))
    mode_kl = float((gmm.weights * torch.tensor(kls, dtype=F64)).sum())
    return {
        "mode_tv": tv,
        "mode_kl": mode_kl,
        "n_underpopulated": underpopulated,
        "frequencies": freq.tolist(),
        "mode_kls": kls,
    }


def reference_mode_kl(gmm, n: int, generator: torch.Generator | None = None, n_repeats: int = 1) -> float:
    """mode_kl of fresh data sets of size n (median of ``n_repeats``): the floor a perfect sampler reaches."""
    values = sorted(mode_quality(gmm.sample(n, generator), gmm)["mode_kl"] for _ in range(n_repeats))
    return float(values[len(values) // 2])
