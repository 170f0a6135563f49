"""Graph MMD metrics (metrics/graph_mmd.py) and exact 4-node orbit counts (metrics/graph_orbits.py)."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest

from momentum_diffusion.data.graphs import generate_community_small
from momentum_diffusion.metrics.graph_mmd import graph_mmds, graph_mmds_by_size
from momentum_diffusion.metrics.graph_orbits import N_ORBITS, node_orbit_counts

# Templates with their node orbits, written out by hand (ORCA / Pržulj numbering).
TEMPLATES = [
    (nx.path_graph(2), [0, 0]),
    (nx.path_graph(3), [1, 2, 1]),
    (nx.complete_graph(3), [3, 3, 3]),
    (nx.path_graph(4), [4, 5, 5, 4]),
    (nx.star_graph(3), [7, 6, 6, 6]),
    (nx.cycle_graph(4), [8, 8, 8, 8]),
    (nx.Graph([(0, 1), (1, 2), (2, 0), (2, 3)]), [10, 10, 11, 9]),  # paw: pendant 3, hub 2
    (nx.Graph([(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]), [13, 12, 13, 12]),  # diamond: chord 0-2
    (nx.complete_graph(4), [14, 14, 14, 14]),
]


def brute_force_orbits(G: nx.Graph) -> np.ndarray:
    """Independent count: every 2/3/4-node subset whose induced subgraph is isomorphic to a template adds,
    through the isomorphism, the template's orbit of each node."""
    nodes = list(G.nodes())
    idx = {v: i for i, v in enumerate(nodes)}
    out = np.zeros((len(nodes), N_ORBITS), np.int64)
    for size in (2, 3, 4):
        for sub in itertools.combinations(nodes, size):
            H = G.subgraph(sub)
            for T, orbits in TEMPLATES:
                if T.number_of_nodes() != size:
                    continue
                gm = nx.algorithms.isomorphism.GraphMatcher(H, T)
                if gm.is_isomorphic():
                    for v, tv in gm.mapping.items():
                        out[idx[v], orbits[tv]] += 1
                    break
    return out


def test_orbit_counts_equal_brute_force_on_random_graphs():
    rng = np.random.default_rng(0)
    for i in range(12):
        n = int(rng.integers(4, 9))
        G = nx.gnp_random_graph(n, float(rng.uniform(0.2, 0.8)), seed=int(rng.integers(1 << 30)))
        expected = brute_force_orbits(G)
        for method in ("dense", "sparse"):
            got = node_orbit_counts(nx.to_numpy_array(G), method=method)
            np.testing.assert_array_equal(got, expected, err_msg=f"{method}, graph {i}: {list(G.edges())}")


def test_orbit_counts_of_templates():
    for T, orbits in TEMPLATES:
        counts = node_orbit_counts(nx.to_numpy_array(T))
        for v, o in enumerate(orbits):
            assert counts[v, o] == 1


def test_mmd_zero_against_itself_and_family_separation():
    comm = generate_community_small(12, seed=0)
    comm2 = generate_community_small(12, seed=1)
    grid = [nx.grid_2d_graph(4, 5), nx.grid_2d_graph(3, 6)]  # small grids: the test stays fast
    same = graph_mmds(comm, comm)
    for k in ("degree", "cluster", "orbit"):
        assert abs(same[k]) < 1e-12
    within = graph_mmds(comm, comm2)
    across = graph_mmds(comm, grid)
    for k in ("degree", "cluster", "orbit"):
        assert across[k] > within[k] + 0.05, (k, within[k], across[k])


def test_mmd_hand_derived_values():
    K2, P3, K3 = nx.path_graph(2), nx.path_graph(3), nx.complete_graph(3)
    # degree pmfs: K2 (0, 1), P3 (0, 2/3, 1/3), K3 (0, 0, 1); EMD = Σ|ΔCDF|; kernel exp(−EMD²/2)
    a = math.exp(-((1 / 3) ** 2) / 2)  # K2 vs P3
    got = graph_mmds([K2, P3], [K2])
    assert got["degree"] == pytest.approx((1 - a) / 2, abs=1e-12)  # (1+1+2a)/4 + 1 − 2(1+a)/2
    got = graph_mmds([K3], [P3])
    assert got["degree"] == pytest.approx(2 - 2 * math.exp(-((2 / 3) ** 2) / 2), abs=1e-12)
    # clustering: K3 all 1 (last of 100 bins), P3 all 0 (first bin): EMD = 99/100, σ = 0.1
    assert got["cluster"] == pytest.approx(2 - 2 * math.exp(-(0.99**2) / (2 * 0.01)), abs=1e-12)
    # orbits per node: K3 (2, 0, 0, 1, 0…), P3 (4/3, 2/3, 1/3, 0…): ‖Δ‖² = 4/9 + 4/9 + 1/9 + 1 = 2, σ = 30
    assert got["orbit"] == pytest.approx(2 - 2 * math.exp(-2 / (2 * 900)), abs=1e-12)
    # clustering of K2 and P3 is 0 everywhere: identical descriptors
    assert graph_mmds([K2], [P3])["cluster"] == pytest.approx(0.0, abs=1e-12)


def test_empty_generated_graphs_are_dropped():
    G = nx.path_graph(3)
    out = graph_mmds([G], [G, nx.Graph()])
    assert out["n_empty"] == 1 and abs(out["degree"]) < 1e-12


def test_mmd_at_a_smaller_generated_size_is_the_mean_over_all_subsets_of_that_size():
    """gen_size = m gives exactly the average of the V-statistic over every m-subset of the generated graphs
    (enumerated here), so a figure from 1,024 graphs can be set beside a paper's from 40; m = n is the plain
    MMD², and fewer graphs can only raise it (the self-pair term k(y, y) = 1 weighs more)."""
    rng = np.random.default_rng(3)
    ref = [nx.gnp_random_graph(int(rng.integers(5, 9)), 0.4, seed=int(rng.integers(1 << 30))) for _ in range(5)]
    gen = [nx.gnp_random_graph(int(rng.integers(4, 10)), 0.5, seed=int(rng.integers(1 << 30))) for _ in range(7)]
    gen = [G for G in gen if G.number_of_edges() > 0]
    n = len(gen)
    keys = ("degree", "cluster", "orbit")
    full = graph_mmds(ref, gen)
    assert {k: graph_mmds(ref, gen, gen_size=n)[k] for k in keys} == pytest.approx({k: full[k] for k in keys})
    for m in (2, 3):
        subsets = [graph_mmds(ref, [gen[i] for i in idx]) for idx in itertools.combinations(range(n), m)]
        at_m = graph_mmds(ref, gen, gen_size=m)
        for k in keys:
            assert at_m[k] == pytest.approx(np.mean([s[k] for s in subsets]), rel=1e-9, abs=1e-12), (m, k)
            assert at_m[k] >= full[k] - 1e-12
    with pytest.raises(ValueError, match="gen_size must be in 1.."):
        graph_mmds(ref, gen, gen_size=n + 1)


def test_mmds_at_several_sizes_from_one_kernel_pass_equal_separate_calls():
    rng = np.random.default_rng(5)
    ref = [nx.gnp_random_graph(int(rng.integers(5, 9)), 0.4, seed=int(rng.integers(1 << 30))) for _ in range(4)]
    gen = [nx.gnp_random_graph(int(rng.integers(4, 10)), 0.5, seed=int(rng.integers(1 << 30))) for _ in range(6)]
    gen.append(nx.Graph())  # empty: dropped before the sizes apply
    by_size = graph_mmds_by_size(ref, gen, (None, 2, 5))
    for size in (None, 2, 5):
        assert by_size[size] == pytest.approx(graph_mmds(ref, gen, gen_size=size), rel=1e-12)
    assert by_size[2]["avg"] > by_size[None]["avg"]
