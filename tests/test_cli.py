"""The command-line contract (DESIGN.md §8) through the real entry points on one tiny trained checkpoint: train,
sample, evaluate, resume, and the bad-input batteries (this file's and bad_inputs.py's reliability one), all but
one sample sweep in one process (runs that need no checkpoint: test_cli_runs.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bad_inputs import NONFINITE_CLI, bad_input_battery, check_bad_input_battery, check_nonfinite_cli
from helpers import TINY_TRAIN, read_csv
from helpers import run_script as run


def test_train_writes_checkpoint_grid_and_metric_per_nfe(runs):
    trained = succeeded(runs, "train")
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert (trained / "grid.png").is_file()
    rows = read_csv(trained / "eval_metrics.csv")
    assert [int(r["nfe_budget"]) for r in rows] == [4, 8]
    assert all(np.isfinite(float(r["fd_digits"])) for r in rows)
    assert all(int(r["nfe_used"]) <= int(r["nfe_budget"]) for r in rows)


@pytest.fixture(scope="module")
def sample_sweep(runs, tmp_path_factory) -> Path:
    """One multirun for both sample tests, in its own process: 2 samplers x 2 budgets, seeded (em at 6 NFE is
    job 1)."""
    sweep = tmp_path_factory.mktemp("sample_sweep")
    ckpt = succeeded(runs, "train") / "checkpoints" / "last.ckpt"
    run("sample.py", "-m", f"ckpt={ckpt}", "sampler=em,sscs", "sampler.nfe=4,6", "n_samples=5", "seed=3",
        f"hydra.sweep.dir={sweep}")  # fmt: skip
    return sweep


def sweep_job(sweep: Path, *overrides: str) -> Path:
    """The job directory of a multirun whose overrides include ``overrides`` (named ``N_key=value,…``)."""
    jobs = [p for p in sweep.iterdir() if p.is_dir()]
    match = [job for job in jobs if set(overrides) <= set(job.name.partition("_")[2].split(","))]
    assert len(match) == 1, (overrides, [job.name for job in jobs])
    return match[0]


def bad_inputs(ckpt: Path, tmp: Path) -> list[tuple[str, list[str], str]]:
    tmp.mkdir()
    (tmp / "corrupt.ckpt").write_bytes(b"not a checkpoint")
    (tmp / "bad_spec.yaml").write_text("name: bad\ndim: 2\ncomponents:\n- weight: -1\n  mean: [0, 0]\n  std: 1\n")
    (tmp / "npsd.yaml").write_text(
        "name: bad\ndim: 2\ncomponents:\n- weight: 1\n  mean: [0, 0]\n  cov: [[1, 2], [2, 1]]\n"
    )
    (tmp / "a_file").write_text("")
    out = f"hydra.run.dir={tmp / 'out'}"
    return [
        ("train.py", ["sampler=nope", out], "Available options"),
        ("train.py", ["nonexistent_key=1", out], "nonexistent_key"),
        ("train.py", ["diffusion=ve", "sampler=sscs", out], "valid samplers for ve"),
        ("train.py", ["diffusion=hold", "objective=hsm", out], "objective 'hsm'"),
        ("train.py", ["diffusion=cld", "objective=dsm", out], "objective 'dsm'"),
        ("sample.py", [f"ckpt={ckpt}", "sampler=em", "sampler.nfe=0", out], "sampler.nfe"),
        ("sample.py", [f"ckpt={ckpt}", "sampler=em", "sampler.nfe=2.5", out], "sampler.nfe"),
        ("sample.py", [f"ckpt={ckpt}", "n_samples=0", out], "n_samples"),
        ("sample.py", [f"ckpt={ckpt}", "sampler.order=2", out], "sampler 'sscs' has no option order; its options"),
        ("evaluate.py", [f"ckpt={ckpt}", "threads=0", f"hydra.run.dir={tmp / 'threads'}"], "threads"),
        ("sample.py", [f"ckpt={ckpt}", "sampler.nfe=[4,6]", f"hydra.run.dir={tmp / 'nfe1'}"], "one budget"),
        ("evaluate.py", [f"ckpt={ckpt}", "sampler.nfe=[4,0]", f"hydra.run.dir={tmp / 'nfe2'}"], "sampler.nfe must be"),
        ("benchmark.py", ["sampler.nfe=many", f"hydra.run.dir={tmp / 'nfe3'}"], "sampler.nfe must be"),
        ("sample.py", [f"ckpt={tmp / 'missing.ckpt'}", out], "not found"),
        ("sample.py", [f"ckpt={tmp / 'corrupt.ckpt'}", out], "corrupt"),
        ("train.py", ["diffusion=hold", f"ckpt_path={ckpt}", out], "does not match"),
        ("train.py", ["objective.kt=gddim", f"ckpt_path={ckpt}", out], "kt: checkpoint 'cholesky' vs config 'gddim'"),
        ("train.py", ["objective.kt=qr", out], "objective.kt"),
        (
            "train.py",
            ["experiment=graphs_ego_small", "diffusion=cld", out],
            "diffusion.beta_max is not an option of cld",
        ),
        ("train.py", ["+data.foo=1", out], "data.foo is not an option of DigitsDataModule"),
        ("train.py", ["+model.foo=1", out], "UNet has no option foo"),
        ("train.py", ["data=cifar10", f"data.root={tmp / 'no_data'}", out], "CIFAR-10 not found"),
        ("train.py", ["model=ncsnpp", out], "NCSNpp"),
        ("benchmark.py", [f"gmm={tmp / 'bad_spec.yaml'}", "sampler.nfe=[5]", "n_samples=10", out], "weight"),
        ("benchmark.py", [f"gmm={tmp / 'npsd.yaml'}", "sampler.nfe=[5]", "n_samples=10", out], "positive"),
        ("sample.py", [f"ckpt={ckpt}", f"hydra.run.dir={tmp / 'a_file' / 'x'}"], "not writable"),
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_cache) -> SimpleNamespace:
    """Every command line but the seeded sample sweep, in ONE process through the scripts' own __main__ path
    (tests/cli_battery.py): the tiny training run, then the bad inputs, then a single sample run, two
    evaluations and a resume on its checkpoint — one interpreter start-up and one import of
    torch/Lightning/Hydra instead of one per command (each costs ≈ 8 CPU s). Sequential, so the bad cases may
    share the run directory `out`; the checkpoint's digest is taken after training and at the end."""
    tmp = tmp_path_factory.mktemp("runs")
    ckpt = tmp / "train" / "checkpoints" / "last.ckpt"
    bad = bad_inputs(ckpt, tmp / "bad")
    good = {
        "sample": ("sample.py", [f"ckpt={ckpt}", "sampler=em", "sampler.nfe=6", "n_samples=5", "seed=3",
                                 f"hydra.run.dir={tmp / 'sample'}"]),
        "evaluate": ("evaluate.py", [f"ckpt={ckpt}", "sampler=sscs", "nfe=[4,6]", "n_samples=16",
                                     f"hydra.run.dir={tmp / 'evaluate'}"]),
        "evaluate_multirun": ("evaluate.py", ["-m", f"ckpt={ckpt}", "sampler.nfe=4,6", "sampler.grid=quadratic",
                                              "n_samples=16",
                                              f"hydra.sweep.dir={tmp / 'evaluate_multirun'}"]),
        "resume": ("train.py", [*TINY_TRAIN, "trainer.max_steps=18", f"ckpt_path={ckpt}",
                                f"hydra.run.dir={tmp / 'resume'}"]),
    }  # fmt: skip
    digest = ("@sha256", [str(ckpt)])
    train = ("train.py", [*TINY_TRAIN, f"hydra.run.dir={tmp / 'train'}"])
    nonfinite = ("train.py", [*NONFINITE_CLI, f"hydra.run.dir={tmp / 'nonfinite'}"])
    # bad_inputs.py's default reliability battery first, then these cases, in the same process (its cwd,
    # which must stay empty, is then the cwd of these cases too)
    (tmp / "reliability").mkdir()
    reliability = bad_input_battery(
        tmp / "reliability", False, [train, digest, *bad, *good.values(), digest, nonfinite]
    )
    results = reliability["extra"]
    before, after = results[1]["stderr"], results[-2]["stderr"]
    good_results = results[2 + len(bad) : -2]
    return SimpleNamespace(
        dir=tmp,
        bad=list(zip(bad, results[2 : 2 + len(bad)])),
        good={"train": results[0], **dict(zip(good, good_results))},
        ckpt_unchanged=before == after != "missing",
        reliability=reliability,
        nonfinite=results[-1],
    )


def succeeded(runs: SimpleNamespace, name: str) -> Path:
    r = runs.good[name]
    assert r["code"] == 0, r["stderr"][-3000:]
    return runs.dir / name


def test_sample_writes_npz_in_data_space_and_is_seeded(runs, sample_sweep):
    """The same seed gives the same samples in another process, whether a single run (after many other
    commands in its process) or a multirun's second job (compared with the sweep's em job at 6 NFE)."""
    out = succeeded(runs, "sample")
    a = np.load(out / "samples.npz")["samples"]
    b = np.load(sweep_job(sample_sweep, "sampler=em", "sampler.nfe=6") / "samples.npz")["samples"]
    assert a.shape == (5, 1, 8, 8) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert (out / "grid.png").is_file()


def test_sample_multirun_over_samplers_and_budgets(sample_sweep):
    outputs = sorted(sample_sweep.glob("*/samples.npz"))
    assert len(outputs) == 4


def test_evaluate_writes_one_row_per_nfe(runs):
    """`nfe=[4,6]` (short for sampler.nfe, over sscs's own default budget): one row per budget."""
    rows = read_csv(succeeded(runs, "evaluate") / "metrics.csv")
    assert [(r["sampler"], int(r["nfe_budget"])) for r in rows] == [("sscs", 4), ("sscs", 6)]
    assert all(float(r["fd_digits"]) > 0 for r in rows)


def test_evaluate_multirun_over_nfe_changes_the_checkpoints_own_sampler(runs):
    """-m sampler.nfe=4,6 sampler.grid=quadratic without sampler=NAME: one job per budget, each with the
    checkpoint's sampler (sscs) and the option changed (an option outside the composed config: launch.py)."""
    sweep = succeeded(runs, "evaluate_multirun")
    for job in sorted(sweep.glob("*/.hydra/config.yaml")):
        assert OmegaConf.load(job).sampler.grid == "quadratic"
    rows = [r for path in sorted(sweep.glob("*/metrics.csv")) for r in read_csv(path)]
    assert sorted((r["sampler"], int(r["nfe_budget"])) for r in rows) == [("sscs", 4), ("sscs", 6)]


def test_resume_continues_from_checkpoint(runs):
    out = succeeded(runs, "resume")
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 18


def test_bad_input_battery_one_clear_line_no_traceback_nothing_lost(runs):
    failures = []
    for (script, args, expected), r in runs.bad:
        ok = r["code"] != 0 and "Traceback" not in r["stderr"] and expected in r["stderr"]
        if "Available options" not in expected and "nonexistent_key" not in expected:
            ok = ok and len(r["stderr"].strip().splitlines()) == 1 and r["stderr"].startswith("error: ")
        if not ok:
            failures.append(f"{script} {args}: rc={r['code']}\n{r['stderr'][-800:]}")
    assert not failures, "\n\n".join(failures)
    assert runs.ckpt_unchanged  # after the bad inputs and the good runs
    assert not (runs.dir / "bad" / "out" / "samples.npz").exists()


def test_bad_inputs_each_give_one_line_naming_the_key_and_lose_nothing(runs):
    """bad_inputs.py's default reliability battery (issue 18), run in this file's battery process."""
    check_bad_input_battery(runs.reliability)


def test_cli_nonfinite_training_stops_with_one_line_and_a_loadable_checkpoint(runs):
    """lr 1e30 through src/train.py (bad_inputs.NONFINITE_CLI), in this file's battery process."""
    check_nonfinite_cli(runs.nonfinite, runs.dir / "nonfinite")


@pytest.mark.slow
def test_bad_inputs_each_give_one_line_naming_the_key_and_lose_nothing_all_entry_points(tmp_path):
    """The full battery (every entry point, each in its own process; the default one above runs in one)."""
    check_bad_input_battery(bad_input_battery(tmp_path, True))
