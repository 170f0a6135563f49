"""Generic-graph benchmarks of GDSS / EDP-GNN / AMS: community_small, ego_small, ENZYMES, grid.

Sources (``source``):
- ``json``: the published graph lists, ``<root>/<file>.json`` = ``{"graphs": [{"n": N, "edges": [[u, v], …]}]}``
  (nodes 0..n−1, the list order of GDSS's pickles; file names ``community_small.json``, ``ego_small.json``,
  ``grid.json``, ``ENZYMES.json``).
- ``raw``: ego_small from the Planetoid Citeseer adjacency ``ind.citeseer.graph`` and ENZYMES from the TU files
  (``ENZYMES_A.txt``, ``ENZYMES_graph_indicator.txt``), with the recipes that reproduce the published lists.
- ``generate``: community_small and grid drawn with networkx by the standard recipes and a fixed seed (a
  regenerated set is statistically equal to the published one, not identical: its split differs).
- ``auto`` (default): json if the file is there, else raw, else generate (synthetic sets only).

Split (GDSS / EDP-GNN): test = the first int(0.2·len) graphs of the list, train = the rest, no shuffling.
Representation: :mod:`.graph_layout` (one flat vector per graph: X one-hot degree, the strict upper
triangle of A, node mask), scaled per block by ``scale_x`` / ``scale_a`` (the per-block "process
parameters": the core runs one schedule on the whole vector, so a block's scale sets its signal-to-noise
ratio). Samples are quantised with A ≥ 0.5 (in data units, i.e. before scaling) inside the node mask;
isolated nodes are then dropped, as GDSS does before evaluation.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from ..choices import check_choice
from .errors import DataNotFoundError
from .graph_layout import GraphLayout
from .sampling import TensorRows, resumable_loader

log = logging.getLogger(__name__)

DATASETS = {  # name → (json file, raw recipe or None, generator or None)
    "community_small": "community_small.json",
    "ego_small": "ego_small.json",
    "enzymes": "ENZYMES.json",
    "grid": "grid.json",
}


# --------------------------------------------------------------------------- graph lists
def read_graph_json(path: str | Path) -> list:
    """The JSON edge-list format → list of networkx graphs (nodes 0..n−1 in order)."""
    import networkx as nx

    with open(path) as f:
        doc = json.load(f)
    graphs = []
    for g in doc["graphs"]:
        G = nx.Graph()
        G.add_nodes_from(range(int(g["n"])))
        G.add_edges_from((int(u), int(v)) for u, v in g["edges"])
        graphs.append(G)
    return graphs


def write_graph_json(graphs, path: str | Path) -> None:
    """networkx graphs → the JSON edge-list format (nodes relabelled 0..n−1 in iteration order)."""
    out = []
    for G in graphs:
        idx = {v: i for i, v in enumerate(G.nodes())}
        out.append({"n": len(idx), "edges": [[idx[u], idx[v]] for u, v in G.edges()]})
    Path(path).write_text(json.dumps({"graphs": out}))


def generate_community_small(n_graphs: int = 100, seed: int = 0, max_degree: int | None = None) -> list:
    """EDP-GNN/GDSS community generator: c = n//2 with n ~ U{12..20}; two G(c, 0.7) communities drawn with
    the fixed seeds 0 and 1; bridges with p = 0.1/c (at least one), from a seeded RNG (GDSS's is unseeded).
    ``max_degree``: bridges that would give a node a larger degree are redrawn (the one-hot degree features
    hold degrees < data.n_features; the published list's maximum is 9, a fresh draw can reach 10)."""
    import networkx as nx

    rng = np.random.RandomState(seed)
    graphs = []
    for _ in range(n_graphs):
        c = int(rng.randint(12, 21)) // 2
        G = nx.disjoint_union_all([nx.gnp_random_graph(c, 0.7, seed=i) for i in range(2)])
        degree = dict(G.degree())
        p = 2 * 0.05 / ((2 - 1) * c)
        for _ in range(1000):
            bridges = [(u, c + v) for u in range(c) for v in range(c) if rng.rand() < p] or [(0, c)]
            ends = np.bincount(np.ravel(bridges), minlength=2 * c)
            if max_degree is None or all(degree[v] + ends[v] <= max_degree for v in range(2 * c)):
                break
        else:
            raise ValueError(
                f"community_small: no generated graph of {2 * c} nodes keeps every degree below data.n_features="
                f"{max_degree + 1} (one-hot degree classes); raise data.n_features"
            )
        G.add_edges_from(bridges)
        graphs.append(nx.convert_node_labels_to_integers(G))
    return graphs


def generate_grid(n_graphs: int = 100, seed: int = 0) -> list:
    """2-D grids m×n with m, n ~ U{10..19} (GDSS's grid), seeded."""
    import networkx as nx

    rng = np.random.RandomState(seed)
    return [
        nx.convert_node_labels_to_integers(nx.grid_2d_graph(int(rng.randint(10, 20)), int(rng.randint(10, 20))))
        for _ in range(n_graphs)
    ]


def ego_small_from_citeseer(path: str | Path, n_graphs: int = 200) -> list:
    """Citeseer (ind.citeseer.graph, pickled dict of lists) → the first 200 radius-1 ego nets with 4–18 nodes
    of its largest component (relabelled to integers in default order); self-loops removed."""
    import networkx as nx

    with open(path, "rb") as f:
        adj = pickle.load(f, encoding="latin1")
    G = nx.Graph(nx.from_dict_of_lists(adj))
    G = nx.convert_node_labels_to_integers(G.subgraph(max(nx.connected_components(G), key=len)))
    graphs = []
    for i in range(G.number_of_nodes()):
        ego = nx.ego_graph(G, i, radius=1)
        if 4 <= ego.number_of_nodes() <= 18:
            ego = nx.Graph(ego)
            ego.remove_edges_from(nx.selfloop_edges(ego))
            graphs.append(ego)
            if len(graphs) == n_graphs:
                break
    return graphs


def enzymes_from_tu(folder: str | Path, min_nodes: int = 10, max_nodes: int = 1000) -> list:
    """TU ENZYMES files → one graph from the edge list, isolated nodes removed, split by graph indicator,
    graphs with min_nodes ≤ n ≤ max_nodes kept (587 graphs)."""
    import networkx as nx

    folder = Path(folder)
    edges = np.loadtxt(folder / "ENZYMES_A.txt", delimiter=",", dtype=np.int64)
    indicator = np.loadtxt(folder / "ENZYMES_graph_indicator.txt", delimiter=",", dtype=np.int64).reshape(-1)
    G = nx.Graph()
    G.add_nodes_from(range(1, len(indicator) + 1))
    G.add_edges_from(map(tuple, edges))
    G.remove_edges_from(nx.selfloop_edges(G))
    G.remove_nodes_from(list(nx.isolates(G)))
    nodes = np.arange(1, len(indicator) + 1)
    graphs = []
    for gid in range(1, int(indicator.max()) + 1):
        sub = G.subgraph([int(v) for v in nodes[indicator == gid] if v in G])
        if min_nodes <= sub.number_of_nodes() <= max_nodes:
            graphs.append(nx.Graph(sub))
    return graphs


def _raw_paths(name: str, root: Path) -> list[Path]:
    if name == "ego_small":
        return [root / "ind.citeseer.graph", root / "raw" / "citeseer" / "ind.citeseer.graph"]
    if name == "enzymes":
        return [root / "ENZYMES", root / "raw" / "ENZYMES", root]
    return []


def load_graphs(
    name: str,
    root: str | Path | None = None,
    source: str = "auto",
    n_generate: int = 100,
    generate_seed: int = 0,
    max_degree: int | None = None,
) -> list:
    """The graph list of a data set, in its published order (see the module docstring for ``source``);
    generated community graphs keep every degree ≤ ``max_degree``."""
    check_choice("graph data set", name, DATASETS)
    check_choice("data.source", source, ("auto", "json", "raw", "generate"))
    root_path = Path(root).expanduser() if root else None
    if source in ("auto", "json") and root_path is not None and (root_path / DATASETS[name]).is_file():
        return read_graph_json(root_path / DATASETS[name])
    if source in ("auto", "raw") and root_path is not None:
        for p in _raw_paths(name, root_path):
            if name == "ego_small" and p.is_file():
                return ego_small_from_citeseer(p)
            if name == "enzymes" and (p / "ENZYMES_A.txt").is_file():
                return enzymes_from_tu(p)
    if source in ("auto", "generate") and name in ("community_small", "grid"):
        if source == "auto":
            log.warning(
                "%s: no %s under data.root=%s; generating %d graphs (seed %d): statistically equal to the "
                "published list, but not the same split",
                name,
                DATASETS[name],
                root,
                n_generate,
                generate_seed,
            )
        if name == "community_small":
            return generate_community_small(n_generate, generate_seed, max_degree)
        return generate_grid(n_generate, generate_seed)
    raw = {
        "ego_small": " or ind.citeseer.graph (Planetoid Citeseer, in the GDSS repo's dataset/)",
        "enzymes": " or ENZYMES/ENZYMES_A.txt + ENZYMES_graph_indicator.txt (TU Dortmund)",
    }.get(name, "")
    raise DataNotFoundError(
        f"{name}: no graph list under data.root={root}; put {DATASETS[name]} (GDSS's published list as JSON "
        f"edge lists){raw} in that folder and pass data.root=FOLDER"
    )


def split_graphs(graphs: list, test_fraction: float = 0.2) -> tuple[list, list]:
    """(train, test): test = the first int(test_fraction·len) graphs (GDSS; no shuffling)."""
    n_test = int(test_fraction * len(graphs))
    return graphs[n_test:], graphs[:n_test]


# --------------------------------------------------------------------------- encode / decode
def graphs_to_tensors(graphs, max_nodes: int, n_features: int):
    """networkx graphs → X one-hot degree (G, N, F), A (G, N, N), mask (G, N) (float32, padded at the end)."""
    import networkx as nx

    G_n = len(graphs)
    X = np.zeros((G_n, max_nodes, n_features), np.float32)
    A = np.zeros((G_n, max_nodes, max_nodes), np.float32)
    M = np.zeros((G_n, max_nodes), np.float32)
    for i, G in enumerate(graphs):
        n = G.number_of_nodes()
        if n > max_nodes:
            raise ValueError(f"graph {i} has {n} nodes > data.max_nodes={max_nodes}")
        a = nx.to_numpy_array(G, nodelist=list(G.nodes()), dtype=np.float32)
        a = ((a + a.T) > 0).astype(np.float32)
        np.fill_diagonal(a, 0)
        deg = a.sum(1).astype(int)
        if n and deg.max() >= n_features:
            raise ValueError(f"graph {i} has degree {deg.max()} >= data.n_features={n_features} (one-hot degree)")
        A[i, :n, :n] = a
        X[i, np.arange(n), deg] = 1
        M[i, :n] = 1
    return torch.from_numpy(X), torch.from_numpy(A), torch.from_numpy(M)


def vectors_to_arrays(v: torch.Tensor, layout: GraphLayout, scale_x: float = 1.0, scale_a: float = 1.0):
    """Samples (n, D) → adjacency (n, N, N) uint8 {0,1} symmetric zero-diagonal (A ≥ 0.5 in data units),
    node_mask (n, N) bool (m ≥ 0.5), features (n, N, F) float32 (data units, masked)."""
    v = v.detach().float().cpu()
    m = layout.mask(v) >= 0.5
    mf = m.float()
    a = (layout.adjacency(v) / scale_a >= 0.5).float() * layout.node_pair_mask(mf)
    x = layout.features(v) / scale_x * mf[..., None]
    return a.to(torch.uint8).numpy(), m.numpy(), x.numpy()


def arrays_to_graphs(adjacency: np.ndarray, node_mask: np.ndarray | None = None) -> list:
    """0/1 adjacency (n, N, N) (+ node mask) → networkx graphs with isolated nodes and self-loops removed."""
    import networkx as nx

    graphs = []
    for i, a in enumerate(adjacency):
        keep = np.flatnonzero(node_mask[i]) if node_mask is not None else np.arange(a.shape[0])
        G = nx.from_numpy_array(np.asarray(a)[np.ix_(keep, keep)].astype(np.int64))
        G.remove_edges_from(nx.selfloop_edges(G))
        G.remove_nodes_from(list(nx.isolates(G)))
        graphs.append(nx.convert_node_labels_to_integers(G))
    return graphs


def draw_graphs(graphs, path: str | Path, max_graphs: int = 16) -> Path:
    """A PNG of up to 16 graphs (spring layout, fixed seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graphs = list(graphs)[:max_graphs]
    cols = 4
    rows = max(1, -(-len(graphs) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.5 * cols, 2.5 * rows))
    for ax in np.asarray(axes).reshape(-1):
        ax.axis("off")
    for ax, G in zip(np.asarray(axes).reshape(-1), graphs):
        if G.number_of_nodes():
            nx.draw(G, pos=nx.spring_layout(G, seed=0), ax=ax, node_size=20, width=0.6)
        ax.set_title(f"{G.number_of_nodes()} nodes, {G.number_of_edges()} edges", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- data module
class GraphDataModule(pl.LightningDataModule):
    """A generic-graph benchmark as flat vectors (data_shape = (D,), see :mod:`.graph_layout`)."""

    kind = "graph"

    def __init__(
        self,
        name: str = "community_small",
        root: str | None = None,
        source: str = "auto",
        max_nodes: int = 20,
        n_features: int = 10,
        batch_size: int = 128,
        seed: int = 0,
        scale_x: float = 1.0,
        scale_a: float = 1.0,
        test_fraction: float = 0.2,
        n_generate: int = 100,
        generate_seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        self.name, self.root, self.source = name, root, source
        self.layout = GraphLayout(max_nodes, n_features)
        self.max_nodes, self.n_features = max_nodes, n_features
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.scale_x, self.scale_a = float(scale_x), float(scale_a)
        self.test_fraction, self.n_generate, self.generate_seed = test_fraction, n_generate, generate_seed
        self.data_shape = (self.layout.dim,)
        self.train_graphs: list | None = None
        self.test_graphs: list | None = None
        self.train_vectors: torch.Tensor | None = None
        self.test_vectors: torch.Tensor | None = None

    def prepare_data(self) -> None:
        """Nothing to download (missing files fail in setup with one line)."""

    def encode(self, graphs) -> torch.Tensor:
        x, a, m = graphs_to_tensors(graphs, self.max_nodes, self.n_features)
        return self.layout.pack(self.scale_x * x, self.scale_a * a, m)

    def setup(self, stage: str | None = None) -> None:
        if self.train_vectors is not None:
            return
        graphs = load_graphs(
            self.name, self.root, self.source, self.n_generate, self.generate_seed, max_degree=self.n_features - 1
        )
        self.train_graphs, self.test_graphs = split_graphs(graphs, self.test_fraction)
        if not self.train_graphs or not self.test_graphs:
            raise ValueError(f"{self.name}: {len(graphs)} graphs are too few for a train/test split")
        self.train_vectors = self.encode(self.train_graphs)
        self.test_vectors = self.encode(self.test_graphs)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return resumable_loader(
            TensorRows(self.train_vectors),
            batch_size=self.batch_size,
            seed=self.seed,
            drop_last=len(self.train_vectors) > self.batch_size,
            num_workers=self.num_workers,
        )

    def eval_dataloader(self) -> DataLoader:
        """The test split in order (not a Lightning hook: training has no validation step)."""
        self.setup()
        return DataLoader(TensorRows(self.test_vectors), batch_size=self.batch_size, shuffle=False)

    def reference_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n test-split vectors (repeated cyclically; shuffled by ``generator`` if given)."""
        self.setup()
        pool = self.test_vectors
        if generator is not None:
            pool = pool[torch.randperm(len(pool), generator=generator)]
        reps = -(-n // len(pool))
        return pool.repeat(reps, 1)[:n].clone()

    # ---- samples → graphs, metrics, pictures
    def to_arrays(self, samples: torch.Tensor):
        """(adjacency uint8 (n,N,N), node_mask bool (n,N), features float32 (n,N,F))."""
        self.layout.check(samples)
        return vectors_to_arrays(samples, self.layout, self.scale_x, self.scale_a)

    def export_samples(self, samples: torch.Tensor) -> dict[str, np.ndarray]:
        """What sample.py stores next to the raw vectors: adjacency (n,N,N) uint8, node_mask, features."""
        adjacency, node_mask, features = self.to_arrays(samples)
        return {"adjacency": adjacency, "node_mask": node_mask, "features": features}

    def to_graphs(self, samples: torch.Tensor) -> list:
        adjacency, mask, _ = self.to_arrays(samples)
        return arrays_to_graphs(adjacency, mask)

    def evaluate(self, samples: torch.Tensor, seed: int = 0) -> dict[str, float]:
        """MMD² (degree, clustering, orbit; GDSS kernels) of the samples against the test split, their mean,
        the number of empty graphs, the fraction of unique graphs (WL hash) and of graphs not in the training
        set; and ``<metric>@<m>``: the MMD² expected with m = |test split| generated graphs, the size GDSS's
        published figures use (fewer generated graphs raise the V-statistic; docs/graphs.md)."""
        from ..metrics.graph_mmd import graph_mmds_with_test_size, uniqueness_novelty

        self.setup()
        generated = self.to_graphs(samples)
        out = graph_mmds_with_test_size(self.test_graphs, generated)
        out.update(uniqueness_novelty(generated, self.train_graphs))
        return out

    def save_preview(self, samples: torch.Tensor, path: str | Path) -> Path:
        return draw_graphs(self.to_graphs(samples), path)
