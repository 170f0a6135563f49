"""MMD² of generated graphs (samples.npz files: `adjacency` n × N × N, optional `node_mask` n × N) against a test
split, as measured and as expected with fewer generated graphs (papers report GDSS's figures with as many
generated graphs as test graphs: 20 for community_small, 40 for ego_small; the V-statistic's self-pair term
raises a figure from fewer graphs). One row per file, then mean ± std over the files.

    python scripts/graph_mmd_at_size.py RUN/samples.npz --ckpt CKPT              # the checkpoint's own split
    python scripts/graph_mmd_at_size.py S0.npz S1.npz --data ego_small --root DIR   # any sampler's graphs

The second form scores graphs from outside the package (e.g. GDSS's released checkpoints, docs/graphs.md) with
the same kernels and split as evaluate.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from momentum_diffusion.data.graphs import arrays_to_graphs, load_graphs, split_graphs  # noqa: E402
from momentum_diffusion.metrics.graph_mmd import graph_mmds_at_size, uniqueness_novelty  # noqa: E402

KEYS = ("degree", "cluster", "orbit", "avg")


def reference_split(args) -> tuple[list, list]:
    """(train, test) graphs: the checkpoint's data module (evaluate.py's split) or a named data set's list."""
    if args.ckpt:
        from hydra.utils import instantiate

        from momentum_diffusion.lightning.checkpointing import load_checkpoint

        data = instantiate(load_checkpoint(args.ckpt)["hyper_parameters"]["config"]["data"])
        data.setup("fit")
        return data.train_graphs, data.test_graphs
    return split_graphs(load_graphs(args.data, args.root))


def score_files(paths, train, test, size: int) -> list[dict]:
    """One row per samples file: n, the MMD²s as measured and `<key>@<size>`, unique / novel fractions."""
    rows = []
    for path in paths:
        arrays = np.load(path)
        gen = arrays_to_graphs(arrays["adjacency"], arrays["node_mask"] if "node_mask" in arrays else None)
        mmds = graph_mmds_at_size(test, gen, size)  # no `@size` keys: fewer non-empty graphs than the size
        row = {"file": str(path), "n": len(gen), "n_empty": int(mmds["n_empty"])}
        row.update({k: mmds[k] for k in KEYS})
        row.update({f"{k}@{size}": mmds.get(f"{k}@{size}", float("nan")) for k in KEYS})
        row.update(uniqueness_novelty(gen, train))
        rows.append(row)
    return rows


def table(rows: list[dict], size: int) -> str:
    cols = [*KEYS, *(f"{k}@{size}" for k in KEYS), "unique", "novel"]
    lines = ["| file | n (empty) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for r in rows:
        lines.append(f"| {r['file']} | {r['n']} ({r['n_empty']}) | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |")
    if len(rows) > 1:
        stats = [np.array([r[c] for r in rows]) for c in cols]
        cells = " | ".join(f"{np.nanmean(s):.4f} ± {np.nanstd(s, ddof=1):.4f}" for s in stats)
        lines.append(f"| mean ± std ({len(rows)}) | | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("samples", nargs="+", help="samples.npz files (adjacency, node_mask)")
    p.add_argument("--ckpt", help="score against this checkpoint's test split")
    p.add_argument("--data", help="or against this data set's published split (community_small, ego_small, …)")
    p.add_argument("--root", help="data root holding the data set's list (with --data)")
    p.add_argument("--size", type=int, help="generated-set size for the expected MMD² (default: |test split|)")
    args = p.parse_args(argv)
    if bool(args.ckpt) == bool(args.data):
        p.error("give exactly one of --ckpt or --data")
    train, test = reference_split(args)
    size = args.size or len(test)
    print(table(score_files(args.samples, train, test, size), size))


if __name__ == "__main__":
    main()
