"""Exact node-orbit counts of graphlets with 2–4 nodes (the 15 orbits ORCA computes with ``node 4``).

Orbit numbering (Pržulj 2007; ORCA, Hočevar & Demšar 2014), by induced connected graphlet and the node's
degree inside it:

    edge: 0 · path P3: end 1, middle 2 · triangle: 3 · path P4: end 4, inner 5 · star K1,3: leaf 6, centre 7 ·
    cycle C4: 8 · paw (triangle + pendant): pendant 9, degree-2 10, degree-3 11 ·
    diamond (K4 minus an edge): degree-2 12, degree-3 13 · K4: 14

Every connected graphlet on 4 nodes is identified by its sorted degree sequence and, inside it, each orbit
by the node's degree, so counting reduces to enumerating node subsets. Small graphs enumerate all
3- and 4-subsets (vectorised in numpy, O(n⁴)); larger ones only the connected subsets, grown from
neighbourhoods (cost ∝ their number: fast for sparse graphs such as grids and ENZYMES). Both are exact.
tests/test_graph_metrics.py checks it against an independent networkx-isomorphism enumeration.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..choices import check_choice

N_ORBITS = 15

# 4-node graphlets: sorted degree sequence → {degree: orbit}
_FOUR = {
    (1, 1, 2, 2): {1: 4, 2: 5},  # P4
    (1, 1, 1, 3): {1: 6, 3: 7},  # star
    (2, 2, 2, 2): {2: 8},  # C4
    (1, 2, 2, 3): {1: 9, 2: 10, 3: 11},  # paw
    (2, 2, 3, 3): {2: 12, 3: 13},  # diamond
    (3, 3, 3, 3): {3: 14},  # K4
}


def _table(k: int) -> np.ndarray:
    """(2^(k choose 2), k) orbit id of each position for every edge pattern of a k-subset (−1: not connected)."""
    pairs = list(itertools.combinations(range(k), 2))
    table = -np.ones((1 << len(pairs), k), np.int64)
    for code in range(1 << len(pairs)):
        deg = [0] * k
        for b, (i, j) in enumerate(pairs):
            if code >> b & 1:
                deg[i] += 1
                deg[j] += 1
        seq = tuple(sorted(deg))
        if k == 3:
            orbit = {(1, 1, 2): {1: 1, 2: 2}, (2, 2, 2): {2: 3}}.get(seq)
        else:
            orbit = _FOUR.get(seq)
        if orbit is not None:
            table[code] = [orbit[d] for d in deg]
    return table


_TABLES = {3: _table(3), 4: _table(4)}


def _subsets(n: int, k: int, chunk: int = 200_000):
    """All k-subsets of range(n) as int arrays (rows sorted), in chunks."""
    it = itertools.combinations(range(n), k)
    while True:
        block = np.fromiter(itertools.chain.from_iterable(itertools.islice(it, chunk)), np.int64)
        if block.size == 0:
            return
        yield block.reshape(-1, k)


def _connected_subsets(a: np.ndarray):
    """Every connected 3- and 4-node subset exactly once, as sorted int arrays (3-sets: a node's pairs of
    neighbours; 4-sets: a connected 3-set plus one neighbour of it). Cost ∝ the number of such subsets."""
    nbrs = [np.flatnonzero(row) for row in a]
    three = set()
    for v, nb in enumerate(nbrs):
        for x, y in itertools.combinations(nb.tolist(), 2):
            three.add(tuple(sorted((v, x, y))))
    four = set()
    for s in three:
        for u in set(itertools.chain.from_iterable(nbrs[v].tolist() for v in s)) - set(s):
            four.add(tuple(sorted((*s, u))))
    return {3: [np.array(sorted(three), np.int64).reshape(-1, 3)], 4: [np.array(sorted(four), np.int64).reshape(-1, 4)]}


def node_orbit_counts(adjacency: np.ndarray, method: str = "auto") -> np.ndarray:
    """0/1 symmetric adjacency (n, n) without self-loops → (n, 15) node-orbit counts (int64).

    method: ``dense`` enumerates all 3- and 4-subsets (vectorised; best for small dense graphs), ``sparse``
    only the connected ones (neighbourhood growth; best for large sparse graphs), ``auto`` = dense up to 30
    nodes. Both are exact."""
    a = (np.asarray(adjacency) != 0).astype(np.int64)
    np.fill_diagonal(a, 0)
    n = a.shape[0]
    counts = np.zeros((n, N_ORBITS), np.int64)
    counts[:, 0] = a.sum(1)
    if check_choice("orbit counting method", method, ("auto", "dense", "sparse")) == "auto":
        method = "dense" if n <= 30 else "sparse"
    sparse_sets = _connected_subsets(a) if method == "sparse" else None
    for k in (3, 4):
        table = _TABLES[k]
        pairs = list(itertools.combinations(range(k), 2))
        for sub in sparse_sets[k] if sparse_sets is not None else _subsets(n, k):
            code = np.zeros(len(sub), np.int64)
            for b, (i, j) in enumerate(pairs):
                code |= a[sub[:, i], sub[:, j]] << b
            orbits = table[code]  # (S, k)
            ok = orbits >= 0
            np.add.at(counts, (sub[ok], orbits[ok]), 1)
    return counts


def graph_orbit_counts(G) -> np.ndarray:
    """networkx graph → (n, 15) node-orbit counts (nodes reindexed 0..n−1, self-loops ignored)."""
    import networkx as nx

    return node_orbit_counts(nx.to_numpy_array(G, nodelist=list(G.nodes())))
