"""The command-line contract through the real entry points, runs that need no shared checkpoint: the benchmark,
HOLD, the gDDIM noise factor with expint, bf16 and DDP (a file of its own so that the xdist workers share the CLI
runs: test_cli.py holds the ones built on its trained checkpoint)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cli_battery import run_battery
from helpers import TINY_TRAIN, read_csv
from helpers import run_script as run

SPEC_3D = (
    "name: new_3d\ndim: 3\ncomponents:\n- weight: 2\n  mean: [1, 0, 0]\n  diag: [0.1, 0.2, 0.05]\n"
    "- weight: 1\n  mean: [-1, 0.5, 0]\n  std: 0.2\n"
)


@pytest.fixture(scope="module")
def cli(tmp_path_factory, digits_cache) -> SimpleNamespace:
    """Every command line of this file in ONE process (tests/cli_battery.py, each through the script's own
    __main__ path): one import of torch/Lightning/Hydra instead of five (≈ 6 CPU s each)."""
    tmp = tmp_path_factory.mktemp("cli_runs")
    (tmp / "new_3d.yaml").write_text(SPEC_3D)
    benchmark = [f"gmm={tmp / 'new_3d.yaml'}", "diffusion=cld", "sampler=sscs", "sampler.nfe=[10,20]", "n_samples=300"]
    gddim = tmp / "gddim"
    cases = {
        "benchmark_a": ("benchmark.py", [*benchmark, f"hydra.run.dir={tmp / 'benchmark_a'}"]),
        "benchmark_b": ("benchmark.py", [*benchmark, f"hydra.run.dir={tmp / 'benchmark_b'}"]),
        "hold": ("train.py", ["diffusion=hold", "sampler=lie_trotter", *TINY_TRAIN, "trainer.max_steps=6",
                              f"hydra.run.dir={tmp / 'hold'}"]),
        "gddim": ("train.py", ["objective.kt=gddim", "sampler=expint", "sampler.stochasticity=0.0",
                               "sampler.prediction=noise", *TINY_TRAIN, "trainer.max_steps=6",
                               "trainer.precision=bf16-mixed", "optim.channels_last=true", f"hydra.run.dir={gddim}"]),
        "gddim_sample": ("sample.py", [f"ckpt={gddim / 'checkpoints' / 'last.ckpt'}", "sampler=expint",
                                       "sampler.nfe=6", "n_samples=8", f"hydra.run.dir={tmp / 'gddim_sample'}"]),
    }  # fmt: skip
    results = dict(zip(cases, run_battery(list(cases.values()), tmp)))
    return SimpleNamespace(dir=tmp, results=results)


def succeeded(cli: SimpleNamespace, name: str) -> Path:
    result = cli.results[name]
    assert result["code"] == 0, result["stderr"][-3000:]
    return cli.dir / name


def test_benchmark_cli_is_deterministic_and_works_on_an_unseen_spec(cli):
    a_dir, b_dir = succeeded(cli, "benchmark_a"), succeeded(cli, "benchmark_b")
    a, b = read_csv(a_dir / "results.csv"), read_csv(b_dir / "results.csv")
    columns = "gmm,diffusion,sampler,nfe_budget,nfe_used,sw2,noise_floor,mode_tv,mode_kl,seconds".split(",")
    assert list(a[0])[: len(columns)] == columns
    assert [r["sw2"] for r in a] == [r["sw2"] for r in b]
    np.testing.assert_array_equal(np.load(a_dir / "samples/nfe20.npy"), np.load(b_dir / "samples/nfe20.npy"))
    assert np.load(a_dir / "samples/nfe20.npy").shape == (300, 3)
    assert (a_dir / "sw2_vs_nfe.png").is_file()


def test_users_hold_command_trains_on_digits(cli):
    out = succeeded(cli, "hold")
    rows = read_csv(out / "eval_metrics.csv")
    assert [int(r["nfe_budget"]) for r in rows] == [4, 8]
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["identity"]["process"] == "hold"
    assert state["hyper_parameters"]["identity"]["order"] == 3


def test_gddim_noise_factor_trains_in_bf16_and_samples_with_expint(cli):
    """objective.kt=gddim end to end: the checkpoint records it and expint samples from it (ε̂ directly); the
    run trains under bf16 autocast with channels_last."""
    out = succeeded(cli, "gddim")
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["identity"]["kt"] == "gddim"
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert state["hyper_parameters"]["config"]["trainer"]["precision"] == "bf16-mixed"
    assert [int(r["nfe_budget"]) for r in read_csv(out / "eval_metrics.csv")] == [4, 8]
    assert np.load(succeeded(cli, "gddim_sample") / "samples.npz")["samples"].shape[0] == 8


@pytest.mark.slow
def test_ddp_on_cpu_with_gloo_trains_two_processes(tmp_path, digits_cache):
    run("train.py", *TINY_TRAIN, "trainer=ddp_cpu", "trainer.max_steps=4", f"hydra.run.dir={tmp_path}", timeout=600)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 4
