"""Graphs through the real entry points (train.py → evaluate.py / sample.py) on a tiny community-style list
written here in the published JSON format. Slow (three Hydra processes per process family)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from helpers import run_script as run
from momentum_diffusion.data.graphs import generate_community_small, write_graph_json

TINY_MODEL = [
    "model.x_depth=1",
    "model.x_hidden=8",
    "model.a_layers=2",
    "model.c_hid=4",
    "model.c_final=2",
    "model.adim=8",
    "model.a_hidden=8",
    "model.heads=2",
]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("diffusion,sampler", [("vp", "ams"), ("cld", "sscs")])
def test_train_evaluate_sample_tiny_community(tmp_path, diffusion, sampler):
    root = tmp_path / "data"
    root.mkdir()
    write_graph_json(generate_community_small(15, seed=0), root / "community_small.json")
    run_dir = tmp_path / "train"
    run(
        "train.py",
        "data=community_small",
        "model=graph_score",
        f"diffusion={diffusion}",
        f"sampler={sampler}",
        f"data.root={root}",
        "trainer.max_steps=15",
        "sampler.nfe=[8]",
        "callbacks.sample_evaluation.n_samples=6",
        *TINY_MODEL,
        f"hydra.run.dir={run_dir}",
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    eval_dir = tmp_path / "eval"
    run(
        "evaluate.py",
        f"ckpt={ckpt}",
        f"sampler={sampler}",
        "sampler.nfe=[6,10]",
        "n_samples=8",
        f"hydra.run.dir={eval_dir}",
    )
    rows = list(csv.DictReader(open(eval_dir / "metrics.csv")))
    assert [int(r["nfe_budget"]) for r in rows] == [6, 10]
    for r in rows:
        assert float(r["n_empty"]) < 8  # some non-empty graphs: the MMDs are defined
        for k in ("degree", "cluster", "orbit"):
            assert math.isfinite(float(r[k])) and float(r[k]) >= -1e-9
    sample_dir = tmp_path / "sample"
    run("sample.py", f"ckpt={ckpt}", "sampler.nfe=10", "n_samples=5", f"hydra.run.dir={sample_dir}")
    out = np.load(sample_dir / "samples.npz")
    a, m = out["adjacency"], out["node_mask"]
    assert a.shape == (5, 20, 20) and m.shape == (5, 20) and out["features"].shape == (5, 20, 10)
    assert set(np.unique(a)) <= {0, 1} and (a == a.transpose(0, 2, 1)).all()
    assert a[:, np.arange(20), np.arange(20)].sum() == 0
    assert a[~(m[:, :, None] & m[:, None, :])].sum() == 0
    assert set(m.sum(1)) <= {12, 14, 16, 18, 20}
    assert (sample_dir / "graphs.png").is_file()
