"""Mixing of the forward process: how fast the kernel of a point mass reaches the prior.

HOLD's claim: "reduce the mixing time by two orders of magnitude" (Shi & Liu, arXiv 2404.12814, abstract).
For each process: spectral abscissa of A (slowest decay rate per unit τ), and the τ at which
KL(kernel of x_0 ‖ prior) first drops below 1e-3, for a point mass x_0 = 1 (per coordinate; KL is per
coordinate). "Matched noise": τ is also reported times Q_kk, the noise variance injected per unit τ, so
processes are compared at equal injected noise; and as the t of each process's default schedule.

    python scripts/mixing_time.py
"""

from __future__ import annotations

import math

import torch

from momentum_diffusion.processes import cld, critically_damped_chain, hold, vp


def gaussian_kl(mean: torch.Tensor, cov: torch.Tensor, cov_q: torch.Tensor) -> float:
    """KL(N(mean, cov) ‖ N(0, cov_q)) for k×k matrices (float64)."""
    k = cov.shape[0]
    prec_q = torch.linalg.inv(cov_q)
    return 0.5 * float(torch.trace(prec_q @ cov) + mean @ prec_q @ mean - k + torch.logdet(cov_q) - torch.logdet(cov))


def mixing_tau(process, x0: float = 1.0, threshold: float = 1e-3, tau_max: float = 200.0) -> float:
    taus = torch.linspace(1e-3, tau_max, 200_001, dtype=torch.float64)
    Phi, Sigma = process.sde.transition(taus)
    z0 = torch.zeros(process.order, dtype=torch.float64)
    z0[0] = x0
    lo, hi = 0, len(taus) - 1
    for _ in range(40):  # KL decreases monotonically here; bisection on the grid
        mid = (lo + hi) // 2
        cov = Phi[mid] @ process.initial_cov @ Phi[mid].T + Sigma[mid]
        if gaussian_kl(Phi[mid] @ z0, cov, process.prior_cov) < threshold:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1:
            break
    return float(taus[hi])


def t_of_tau(process, tau: float) -> float:
    ts = torch.linspace(0, 50, 500_001, dtype=torch.float64)
    return float(ts[torch.searchsorted(process.tau(ts), torch.tensor(tau, dtype=torch.float64))])


def main():
    processes = [vp(), cld(), hold(), critically_damped_chain(order=4), critically_damped_chain(order=5)]
    rows = []
    for p in processes:
        abscissa = float(torch.linalg.eigvals(p.sde.A).real.max())
        tau = mixing_tau(p)
        rows.append((p.name, p.order, abscissa, tau, tau * p.noise_scale, t_of_tau(p, tau), float(p.tau(p.t_max))))
    print(
        "| process | order | spectral abscissa of A | τ to KL<1e-3 | τ·Q_kk (matched noise) | "
        "t (default schedule) | τ(T) of default |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, k, a, tau, noise, t, tau_T in rows:
        print(f"| {name} | {k} | {a:.3f} | {tau:.2f} | {noise:.2f} | {t:.3f} | {tau_T:.2f} |")
    base = rows[0]
    print()
    print("Ratios to VP (τ to KL<1e-3): " + ", ".join(f"{r[0]} {base[3] / r[3]:.2f}×" for r in rows[1:]))
    print("Ratios to VP at matched noise: " + ", ".join(f"{r[0]} {base[4] / r[4]:.2f}×" for r in rows[1:]))
    print("(1/e time of the slowest mode: " + ", ".join(f"{r[0]} {1 / abs(r[2]):.2f}" for r in rows) + ")")
    print(f"log(1e3)={math.log(1e3):.2f}")


if __name__ == "__main__":
    main()
