"""Graph measurements: evaluate.py over samplers × NFE × seeds for one checkpoint, plus the data's own floor.

    python scripts/graph_measure.py CKPT OUT_DIR --n 256 --seeds 0 1 2 --nfe 50 100 \
        --sampler "pc=ams sampler.fixed_beta=0" --sampler "ams=ams" \
        --sampler "ams_bug=ams sampler.adjacency_momentum=false"

Each --sampler is NAME=SAMPLER [override …] (evaluate.py arguments); --jobs N runs N evaluations at once, one
thread each. Writes OUT_DIR/<name>_seed<s>/metrics.csv (evaluate.py's rows) and OUT_DIR/summary.md: mean ± std
over seeds of the degree / cluster / orbit MMD², their mean and `avg@m` (expected with m = |test| generated graphs,
GDSS's size), the wall time per row, and the test-vs-train floor of the data (same kernels, also at m).

--weights raw samples the trained weights instead of the EMA copy (GDSS's ``use_ema: false`` for community_small
and ego_small): it writes OUT_DIR/raw_weights.ckpt, the checkpoint with its EMA weights replaced by the trained
ones, and evaluates that. Also the way to judge a short run: the EMA (no warm-up) still carries decay^steps of
the initial weights, e.g. 0.999^500 = 61 % after 500 steps.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # the data floor below uses the same tree as the evaluate.py runs


def with_trained_weights_as_ema(ckpt: str | Path, out: str | Path) -> Path:
    """Copy of a DiffusionModule checkpoint whose ``ema.*`` tensors are the trained ``net.*`` ones (evaluate.py
    always samples the EMA network)."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    weights = state["state_dict"]
    for key in [k for k in weights if k.startswith("net.")]:
        weights["ema." + key[len("net.") :]] = weights[key].clone()
    torch.save(state, out)
    return Path(out)


def evaluation_commands(args, ckpt: str, out: Path) -> list[tuple[str, int, Path, list[str]]]:
    """(name, seed, run directory, evaluate.py command) per seed × sampler, seeds outermost (so a run cut short
    has every sampler at the first seeds)."""
    nfe = "[" + ",".join(map(str, args.nfe)) + "]"
    runs = []
    for seed in args.seeds:
        for spec in args.sampler:
            name, rest = spec.split("=", 1)
            sampler, *overrides = rest.split()
            run_dir = out / f"{name}_seed{seed}"
            cmd = [
                sys.executable,
                str(REPO / "src" / "evaluate.py"),
                f"ckpt={ckpt}",
                f"sampler={sampler}",
                *overrides,
                f"sampler.nfe={nfe}",
                f"n_samples={args.n}",
                f"batch_size={args.batch}",
                f"seed={seed}",
                f"hydra.run.dir={run_dir}",
            ]
            runs.append((name, seed, run_dir, cmd))
    return runs


def run_evaluations(args, ckpt: str, out: Path, run=subprocess.run) -> list[dict]:
    """evaluate.py per seed × sampler, ``args.jobs`` at a time (one thread each); a run directory that already
    has its metrics.csv is reused. Rows come back in command order whatever order the runs finish in."""
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    runs = evaluation_commands(args, ckpt, out)

    def evaluate(cmd: list[str]) -> None:
        print(" ".join(cmd[1:]), flush=True)
        run(cmd, check=True, env=env, cwd=REPO, capture_output=True)

    todo = [cmd for _, _, run_dir, cmd in runs if not (run_dir / "metrics.csv").is_file()]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(evaluate, todo))  # list(): the first failure raises here
    rows = []
    for name, seed, run_dir, _ in runs:
        with open(run_dir / "metrics.csv") as f:
            rows += [{"name": name, "seed": seed, **r} for r in csv.DictReader(f)]
    return rows


def summary_lines(rows: list[dict], nfes: list[int], floor: dict, m: int, header: str) -> list[str]:
    """Markdown table: mean ± std over seeds per sampler × NFE of the three MMD², their average and ``avg@m``
    (evaluate.py's expected average with m = |test| generated graphs, GDSS's size), then the data's floor
    (``floor``: graph_mmds_with_test_size of test vs train, the same keys as the rows)."""
    keys = ("degree", "cluster", "orbit", "avg", f"avg@{m}")
    lines = [
        f"{header}; mean ± std over seeds; avg@{m}: the average expected with {m} generated graphs",
        "",
        f"| sampler | NFE | seeds | degree | cluster | orbit | avg | avg@{m} | s/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["name"] for r in rows):
        for nfe in nfes:
            sel = [r for r in rows if r["name"] == name and int(r["nfe_budget"]) == nfe]
            cells = []
            for k in keys:
                v = np.array([float(r.get(k) or "nan") for r in sel])
                cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
            secs = np.mean([float(r["seconds"]) for r in sel])
            lines.append(f"| {name} | {nfe} | {len(sel)} | " + " | ".join(cells) + f" | {secs:.0f} |")
    cells = " | ".join(f"{floor.get(k, float('nan')):.4f}" for k in keys)
    lines.append(f"| data floor (test vs train) | – | – | {cells} | – |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("ckpt")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=256)
    p.add_argument(
        "--batch", type=int, default=128, help="sampling batch (PC / AMS use batch-mean norms; GDSS samples in 128s)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--nfe", type=int, nargs="+", default=[50, 100])
    p.add_argument("--sampler", action="append", required=True)
    p.add_argument("--weights", choices=("ema", "raw"), default="ema")
    p.add_argument("--jobs", type=int, default=1, help="evaluate.py runs at once (one thread each; e.g. one per core)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = args.ckpt if args.weights == "ema" else str(with_trained_weights_as_ema(args.ckpt, out / "raw_weights.ckpt"))
    rows = run_evaluations(args, ckpt, out)
    # the data's floor (test vs train) with the same kernels, on the split the checkpoint was trained and evaluated on
    from hydra.utils import instantiate

    from momentum_diffusion.lightning.checkpointing import load_checkpoint
    from momentum_diffusion.metrics.graph_mmd import graph_mmds_with_test_size

    data = instantiate(load_checkpoint(args.ckpt)["hyper_parameters"]["config"]["data"])
    data.setup("fit")
    train, test = data.train_graphs, data.test_graphs
    floor = graph_mmds_with_test_size(test, train)
    header = (
        f"checkpoint `{args.ckpt}` ({args.weights} weights), {args.n} generated graphs vs the {len(test)} test graphs"
    )
    lines = summary_lines(rows, args.nfe, floor, len(test), f"{header}, seeds {args.seeds}")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
