"""MMD² between graph sets with GDSS's evaluation settings (GraphRNN / EDP-GNN / GDSS / AMS lineage).

Descriptors and kernels (references/graphs.md §4.2):

- degree: ``nx.degree_histogram`` normalised to a pmf; Gaussian-EMD exp(−EMD²/2σ²), ground distance
  abs(i − j), σ = 1.
- cluster: 100-bin histogram of node clustering coefficients on [0, 1], normalised; Gaussian-EMD with ground
  distance abs(i − j)/100, σ = 0.1.
- orbit: 4-node orbit counts (15 orbits) summed over nodes / n, not normalised; Gaussian on L2, σ = 30.

The MMD² is the biased V-statistic mean k(X,X) + mean k(Y,Y) − 2 mean k(X,Y) (self-pairs included).
Histograms of different lengths are zero-padded to a common support. Empty graphs are dropped from every
metric (GDSS drops them for degree/cluster; an empty graph has no orbits either).
The 1-D EMD between pmfs p, q on 0..S−1 with ground distance abs(i − j)/s is Σ abs(CDF_p − CDF_q)/s, which
makes every kernel matrix one vectorised pairwise-L1 computation (no process pool, no pyemd).
Descriptors are computed graph by graph (orbits with metrics/graph_orbits.py, exact).
"""

from __future__ import annotations

import numpy as np
import torch

from ..choices import check_choice
from .graph_orbits import graph_orbit_counts

SIGMA = {"degree": 1.0, "cluster": 0.1, "orbit": 30.0}
CLUSTER_BINS = 100


def degree_descriptor(G) -> np.ndarray:
    import networkx as nx

    return np.asarray(nx.degree_histogram(G), np.float64)


def cluster_descriptor(G, bins: int = CLUSTER_BINS) -> np.ndarray:
    import networkx as nx

    hist, _ = np.histogram(list(nx.clustering(G).values()), bins=bins, range=(0.0, 1.0))
    return hist.astype(np.float64)


def orbit_descriptor(G) -> np.ndarray:
    counts = graph_orbit_counts(G)
    return counts.sum(0).astype(np.float64) / max(G.number_of_nodes(), 1)


def _pad(rows: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length), np.float64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _gaussian_emd_matrix(p: np.ndarray, q: np.ndarray, sigma: float, scale: float) -> np.ndarray:
    """k(p_i, q_j) = exp(−EMD²/2σ²) for pmf rows p (n, S), q (m, S); EMD = Σ|ΔCDF|/scale."""
    cp, cq = torch.from_numpy(np.cumsum(p, 1)), torch.from_numpy(np.cumsum(q, 1))
    emd = torch.cdist(cp, cq, p=1).numpy() / scale
    return np.exp(-(emd**2) / (2 * sigma**2))


def _gaussian_l2_matrix(x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    d = torch.cdist(torch.from_numpy(x), torch.from_numpy(y), p=2).numpy()
    return np.exp(-(d**2) / (2 * sigma**2))


def mmd2_from_kernel(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, gen_size: int | None = None) -> float:
    """Biased MMD² (V-statistic). ``gen_size`` = m: its expectation had m of the n generated samples (Y) been
    drawn without replacement; the self-pair term mean k(Y,Y) = mean diag / m + (1 − 1/m) · off-diagonal mean
    grows as m shrinks, so papers' figures with few generated graphs (GDSS: as many as the test split) are
    compared at their size."""
    self_term = kyy.mean()
    n = len(kyy)
    if gen_size is not None and not 1 <= gen_size <= n:
        raise ValueError(f"gen_size must be in 1..{n} (the generated samples), got {gen_size}")
    if gen_size is not None and n > 1:  # n = 1: the only subset is the set itself
        diag = np.trace(kyy)
        self_term = diag / n / gen_size + (1 - 1 / gen_size) * (kyy.sum() - diag) / (n * (n - 1))
    return float(kxx.mean() + self_term - 2 * kxy.mean())


def histogram_kernels(ref: list[np.ndarray], gen: list[np.ndarray], sigma: float, scale: float = 1.0):
    """Gaussian-EMD kernel matrices (k(X,X), k(Y,Y), k(X,Y)) of two lists of (unnormalised) histograms."""
    length = max(len(h) for h in [*ref, *gen])
    x, y = _pad(ref, length), _pad(gen, length)
    x /= x.sum(1, keepdims=True).clip(min=1e-300)
    y /= y.sum(1, keepdims=True).clip(min=1e-300)
    k = _gaussian_emd_matrix
    return k(x, x, sigma, scale), k(y, y, sigma, scale), k(x, y, sigma, scale)


def vector_kernels(ref: np.ndarray, gen: np.ndarray, sigma: float):
    """Gaussian (L2) kernel matrices (k(X,X), k(Y,Y), k(X,Y)) of two sets of vectors."""
    k = _gaussian_l2_matrix
    return k(ref, ref, sigma), k(gen, gen, sigma), k(ref, gen, sigma)


def _metric_kernels(name: str, ref: list, gen: list):
    if name == "degree":
        return histogram_kernels(
            [degree_descriptor(G) for G in ref], [degree_descriptor(G) for G in gen], SIGMA["degree"]
        )
    if name == "cluster":
        return histogram_kernels(
            [cluster_descriptor(G) for G in ref],
            [cluster_descriptor(G) for G in gen],
            SIGMA["cluster"],
            scale=CLUSTER_BINS,
        )
    return vector_kernels(  # orbit
        np.stack([orbit_descriptor(G) for G in ref]), np.stack([orbit_descriptor(G) for G in gen]), SIGMA["orbit"]
    )


def graph_mmds_by_size(
    ref_graphs, gen_graphs, gen_sizes=(None,), metrics=("degree", "cluster", "orbit")
) -> dict[int | None, dict[str, float]]:
    """graph_mmds at several ``gen_size`` values (None = as measured) from one set of descriptors and
    kernel matrices: {gen_size: {degree, cluster, orbit, avg, n_empty}}."""
    for name in metrics:
        check_choice("graph metric", name, ("degree", "cluster", "orbit"))
    ref = [G for G in ref_graphs if G.number_of_nodes() > 0]
    gen = [G for G in gen_graphs if G.number_of_nodes() > 0]
    kernels = {name: _metric_kernels(name, ref, gen) for name in metrics} if ref and gen else {}
    out: dict[int | None, dict[str, float]] = {}
    for size in gen_sizes:
        row = {m: mmd2_from_kernel(*kernels[m], gen_size=size) if kernels else float("nan") for m in metrics}
        row["avg"] = float(np.mean([row[m] for m in metrics]))
        row["n_empty"] = float(len(gen_graphs) - len(gen))
        out[size] = row
    return out


def graph_mmds(
    ref_graphs, gen_graphs, metrics=("degree", "cluster", "orbit"), gen_size: int | None = None
) -> dict[str, float]:
    """{degree, cluster, orbit, avg} MMD² of gen_graphs against ref_graphs (empty graphs dropped; nan if a
    set is empty) and ``n_empty`` = the number of empty generated graphs. ``gen_size``: the expected MMD² with
    that many of the non-empty generated graphs (mmd2_from_kernel), to compare with figures from fewer."""
    return graph_mmds_by_size(ref_graphs, gen_graphs, (gen_size,), metrics)[gen_size]


def graph_mmds_at_size(ref_graphs, gen_graphs, size: int) -> dict[str, float]:
    """graph_mmds plus ``<metric>@<size>``: the MMD² expected with ``size`` of the generated graphs (to compare
    with figures from fewer); present when at least ``size`` generated graphs are non-empty."""
    n_gen = sum(G.number_of_nodes() > 0 for G in gen_graphs)
    by_size = graph_mmds_by_size(ref_graphs, gen_graphs, (None, size) if size <= n_gen else (None,))
    out = dict(by_size[None])
    if size in by_size:
        out.update({f"{k}@{size}": v for k, v in by_size[size].items() if k != "n_empty"})
    return out


def graph_mmds_with_test_size(ref_graphs, gen_graphs) -> dict[str, float]:
    """graph_mmds_at_size with as many generated as test graphs: the size of GDSS's published figures."""
    return graph_mmds_at_size(ref_graphs, gen_graphs, len(ref_graphs))


def uniqueness_novelty(gen_graphs, train_graphs) -> dict[str, float]:
    """Fraction of distinct generated graphs and of generated graphs absent from the training set, up to
    isomorphism as seen by the Weisfeiler–Lehman hash (3 iterations; WL-equal non-isomorphic graphs count
    as equal, so both fractions are lower bounds)."""
    import warnings

    import networkx as nx

    def h(G):
        with warnings.catch_warnings():  # networkx ≥ 3.5 notes that unlabelled hashes changed (harmless here)
            warnings.simplefilter("ignore", UserWarning)
            return nx.weisfeiler_lehman_graph_hash(G, iterations=3)

    gen = [h(G) for G in gen_graphs]
    train = {h(G) for G in train_graphs}
    n = max(len(gen), 1)
    return {"unique": len(set(gen)) / n, "novel": sum(g not in train for g in gen) / n}
