"""MMD² of generated graphs (sample.py's samples.npz) against the checkpoint's test split, as measured and as
expected with fewer generated graphs (papers report GDSS's figures with as many generated graphs as test graphs:
20 for community_small, 40 for ego_small; the V-statistic's self-pair term raises a figure from fewer graphs).

    python scripts/graph_mmd_at_size.py RUN/samples.npz CKPT --size 40
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from momentum_diffusion.data.graphs import arrays_to_graphs  # noqa: E402
from momentum_diffusion.lightning.checkpointing import load_checkpoint  # noqa: E402
from momentum_diffusion.metrics.graph_mmd import graph_mmds_by_size  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("samples", help="samples.npz of src/sample.py (adjacency, node_mask)")
    p.add_argument("ckpt", help="the checkpoint that made them (its data config names the test split)")
    p.add_argument("--size", type=int, required=True, help="generated-set size to report the expected MMD² at")
    args = p.parse_args()
    data = instantiate(load_checkpoint(args.ckpt)["hyper_parameters"]["config"]["data"])
    data.setup("fit")  # the split evaluate.py scores against
    test = data.test_graphs
    arrays = np.load(args.samples)
    gen = arrays_to_graphs(arrays["adjacency"], arrays["node_mask"])
    keys = ("degree", "cluster", "orbit", "avg")
    by_size = graph_mmds_by_size(test, gen, (None, args.size))
    measured, at_size = by_size[None], by_size[args.size]
    print(f"| generated graphs | {' | '.join(keys)} |\n|---|---|---|---|---|")
    print(
        f"| {len(gen)} (measured, {int(measured['n_empty'])} empty dropped) | "
        + " | ".join(f"{measured[k]:.4f}" for k in keys)
        + " |"
    )
    print(f"| {args.size} (expected) | " + " | ".join(f"{at_size[k]:.4f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
