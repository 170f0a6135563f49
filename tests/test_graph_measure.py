"""scripts/graph_measure.py's raw-weights checkpoint and the graph experiment configs (fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import compose_config, load_script


def test_raw_weights_checkpoint_puts_trained_weights_in_the_ema_slots(tmp_path):
    trained, averaged, buffer = torch.randn(3, 2), torch.zeros(3, 2), torch.arange(4.0)
    ckpt = {
        "state_dict": {"net.w": trained, "ema.w": averaged, "net.hist": buffer, "ema.hist": buffer * 0},
        "global_step": 7,
    }
    torch.save(ckpt, tmp_path / "a.ckpt")
    out = load_script("graph_measure").with_trained_weights_as_ema(tmp_path / "a.ckpt", tmp_path / "raw.ckpt")
    state = torch.load(out, weights_only=False)
    assert torch.equal(state["state_dict"]["ema.w"], trained)
    assert torch.equal(state["state_dict"]["ema.hist"], buffer)
    assert torch.equal(state["state_dict"]["net.w"], trained)
    assert state["global_step"] == 7
    assert torch.equal(torch.load(tmp_path / "a.ckpt", weights_only=False)["state_dict"]["ema.w"], averaged)


@pytest.mark.parametrize("name,sampler", [("community_small", "predictor_corrector"), ("ego_small", "euler_maruyama")])
def test_graph_experiments_use_gdss_schedule(name, sampler):
    cfg = compose_config("train", f"experiment=graphs_{name}")
    assert cfg.data.name == name
    assert cfg.diffusion.beta_max == 1.0 and cfg.diffusion.beta_min == 0.1
    assert cfg.sampler._target_.endswith(sampler)
    assert cfg.optim.ema_decay == 0.999 and cfg.trainer.gradient_clip_val == 1.0
    assert cfg.model._target_.endswith("GraphScoreNetwork")


def test_community_experiment_is_gdss_network_and_loss():
    """GDSS's network exactly (t-free, no linear skip) and GDSS's summed loss, so that its weight decay and clip
    weigh as in GDSS (docs/graphs.md, "Tenth session"); the objective built from the config sums."""
    from hydra.utils import instantiate

    cfg = compose_config("train", "experiment=graphs_community_small")
    assert not cfg.model.time_conditioning and not cfg.model.linear_skip
    assert instantiate(cfg.objective).reduction == "sum"
    assert cfg.optim.lr_schedule == "exponential" and cfg.optim.clip_subnetworks


def test_parallel_evaluations_run_each_unfinished_command_once_and_keep_the_order(tmp_path):
    """--jobs 2: every seed × sampler whose run directory has no metrics.csv runs exactly once, finished ones are
    reused, and the rows come back seeds outermost whatever order the runs finish in."""
    import threading
    import time
    from types import SimpleNamespace

    measure = load_script("graph_measure")
    args = SimpleNamespace(nfe=[50], n=8, batch=8, seeds=[0, 1], sampler=["pc=pc sampler.snr=0.05", "em=em"], jobs=2)
    (tmp_path / "em_seed0").mkdir()
    (tmp_path / "em_seed0" / "metrics.csv").write_text("nfe_budget,avg\n50,0.5\n")  # finished earlier
    ran, lock = [], threading.Lock()

    def fake_run(cmd, **kwargs):
        run_dir = next(a.split("=", 1)[1] for a in cmd if a.startswith("hydra.run.dir="))
        time.sleep(0.05 if "seed=0" in cmd else 0.0)  # seed 1 finishes first
        with lock:
            ran.append(run_dir)
        (tmp_path / run_dir).mkdir(exist_ok=True)
        (tmp_path / run_dir / "metrics.csv").write_text(f"nfe_budget,avg\n50,{len(ran)}\n")
        assert kwargs["env"]["OMP_NUM_THREADS"] == "1"

    rows = measure.run_evaluations(args, "x.ckpt", tmp_path, run=fake_run)
    assert sorted(Path(r).name for r in ran) == ["em_seed1", "pc_seed0", "pc_seed1"]
    assert [(r["name"], r["seed"]) for r in rows] == [("pc", 0), ("em", 0), ("pc", 1), ("em", 1)]
    assert rows[1]["avg"] == "0.5"


def test_summary_averages_seeds_and_reports_the_test_size_figure():
    measure = load_script("graph_measure")
    rows = [
        {
            "name": "pc",
            "nfe_budget": "50",
            "degree": d,
            "cluster": "0.2",
            "orbit": "0.1",
            "avg": a,
            "avg@4": b,
            "seconds": "10",
        }
        for d, a, b in (("0.1", "0.2", "0.3"), ("0.3", "0.4", "0.5"))
    ]
    rows.append(
        {"name": "em", "nfe_budget": "50", "degree": "1", "cluster": "1", "orbit": "1", "avg": "1", "seconds": "4"}
    )  # written before evaluate.py reported avg@m: nan, not an error
    floor = {"degree": 0.01, "cluster": 0.02, "orbit": 0.03, "avg": 0.02, "avg@4": 0.05, "n_empty": 0.0}
    lines = measure.summary_lines(rows, [50], floor, 4, "hdr")
    assert "| avg@4 |" in lines[2]
    assert (
        lines[4]
        == "| pc | 50 | 2 | 0.200 ± 0.141 | 0.200 ± 0.000 | 0.100 ± 0.000 | 0.300 ± 0.141 | 0.400 ± 0.141 | 10 |"
    )
    assert lines[5].startswith("| em | 50 | 1 |") and "nan ± 0.000" in lines[5]
    assert lines[-1] == "| data floor (test vs train) | – | – | 0.0100 | 0.0200 | 0.0300 | 0.0200 | 0.0500 | – |"


def test_samples_scored_against_a_named_data_set_equal_the_metric_functions(tmp_path, capsys):
    """graph_mmd_at_size.py --data: the rows are graph_mmds_by_size of the npz's graphs against the list's first
    20 % (the published split), at the measured size and at |test|; two files add a mean ± std row."""
    import networkx as nx
    import numpy as np

    from momentum_diffusion.data.graphs import arrays_to_graphs, write_graph_json
    from momentum_diffusion.metrics.graph_mmd import graph_mmds_by_size

    script = load_script("graph_mmd_at_size")
    data = [nx.star_graph(k) for k in range(3, 8)] + [nx.cycle_graph(k) for k in range(4, 9)]  # 10 → test: first 2
    write_graph_json(data, tmp_path / "ego_small.json")
    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        upper = np.triu(rng.random((6, 8, 8)) < 0.4, 1)
        np.savez(tmp_path / f"s{i}.npz", adjacency=(upper | upper.transpose(0, 2, 1)).astype(np.uint8))
        files.append(str(tmp_path / f"s{i}.npz"))
    script.main([*files, "--data", "ego_small", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    gen = arrays_to_graphs(np.load(files[0])["adjacency"])
    expected = graph_mmds_by_size(data[:2], gen, (None, 2))
    row = next(line for line in out.splitlines() if line.startswith(f"| {files[0]} "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"6 ({int(expected[None]['n_empty'])})"
    assert [float(c) for c in cells[2:6]] == pytest.approx([expected[None][k] for k in script.KEYS], abs=1e-4)
    assert [float(c) for c in cells[6:10]] == pytest.approx([expected[2][k] for k in script.KEYS], abs=1e-4)
    assert "mean ± std (2)" in out
    with pytest.raises(SystemExit):
        script.main(files)  # neither --ckpt nor --data


def test_a_samples_file_with_fewer_non_empty_graphs_than_the_size_reports_nan_at_size(tmp_path, capsys):
    import networkx as nx
    import numpy as np

    from momentum_diffusion.data.graphs import write_graph_json

    script = load_script("graph_mmd_at_size")
    write_graph_json([nx.star_graph(k) for k in range(3, 13)], tmp_path / "ego_small.json")  # test split: 2 graphs
    adjacency = np.zeros((3, 5, 5), dtype=np.uint8)
    adjacency[0, 0, 1:] = adjacency[0, 1:, 0] = 1  # one star, two empty graphs
    np.savez(tmp_path / "s.npz", adjacency=adjacency)
    script.main([str(tmp_path / "s.npz"), "--data", "ego_small", "--root", str(tmp_path)])
    cells = [c.strip() for c in capsys.readouterr().out.splitlines()[-1].strip("|").split("|")]
    assert cells[1] == "3 (2)" and all(c == "nan" for c in cells[6:10]) and float(cells[5]) >= 0
