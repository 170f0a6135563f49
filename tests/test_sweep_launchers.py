"""Cluster launchers and the tuning sweeper: configs compose (plugins are optional extras: [slurm], [tune]),
submitit_local and Optuna actually run (slow), and a bad strategy name is one line."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from helpers import compose_config
from helpers import run_python as run


def compose_with_hydra(name: str, *overrides: str):
    return compose_config(name, *overrides, hydra=True)


def test_slurm_launcher_composes_with_its_settings():
    """In-process composition (what `train.py … --cfg hydra` prints, without a CLI start-up)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the [slurm] extra is not installed")
    cfg = compose_with_hydra("train", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] > 0 and launcher["array_parallelism"] > 0


def test_multirun_ddp_on_slurm_is_one_task_per_gpu():
    """The README's multi-node command: 2 nodes × 8 GPUs, tasks_per_node follows gpus_per_node."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the [slurm] extra is not installed")
    cfg = compose_with_hydra(
        "train",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.nodes=2",
        "hydra.launcher.gpus_per_node=8",
        "trainer=ddp_multinode",
        "trainer.num_nodes=2",
        "trainer.devices=8",
    )
    launcher = cfg.hydra.launcher
    assert launcher.nodes == cfg.trainer.num_nodes == 2
    assert launcher.gpus_per_node == launcher.tasks_per_node == cfg.trainer.devices == 8
    assert cfg.trainer.strategy._target_.endswith("DDPStrategy") and cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.use_distributed_sampler is False  # the loaders shard themselves (data/sampling.py)


def test_optuna_sweeper_composes_for_the_benchmark():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the [tune] extra is not installed")
    cfg = compose_with_hydra("benchmark", "hydra/sweeper=tune", "sampler=pc", "sampler.nfe=20")
    assert cfg.hydra.sweeper.custom_search_space == "momentum_diffusion.cli.tuning.search_space"
    assert cfg.hydra.sweeper.direction == "minimize" and cfg.tune_metric == "mode_kl"


def test_search_space_tunes_the_samplers_free_parameter():
    from omegaconf import OmegaConf

    from momentum_diffusion.cli.tuning import objective, search_space

    class Trial:
        def __init__(self):
            self.params = {}

        def suggest_float(self, name, low, high, log=False):
            self.params[name] = (low, high, log)

    for sampler, key in (("pc", "sampler.snr"), ("ams", "sampler.snr"), ("expint", "sampler.stochasticity")):
        trial = Trial()
        search_space(compose_with_hydra("benchmark", f"sampler={sampler}"), trial)
        assert list(trial.params) == [key]
    with pytest.raises(ValueError, match="no tuned parameter"):
        search_space(OmegaConf.create({"sampler": {"_target_": "momentum_diffusion.samplers.sscs"}}), Trial())
    assert objective([{"mode_kl": 0.1}, {"mode_kl": 0.001}], "mode_kl") == pytest.approx(-2.0)
    assert objective([{"mode_kl": float("nan")}], "mode_kl") == 9.0 and objective([], None) is None


def test_bad_strategy_name_is_one_line():
    from omegaconf import OmegaConf

    from momentum_diffusion.cli.common import UserError
    from momentum_diffusion.cli.launch import check_strategy

    for strategy, expected in (
        ("dpp", "trainer.strategy='dpp' is not a Lightning strategy"),
        ({"_target_": "lightning.pytorch.strategies.DPPStrategy"}, "cannot be imported"),
    ):
        with pytest.raises(UserError, match=expected) as err:
            check_strategy(OmegaConf.create({"strategy": strategy}))
        assert len(str(err.value).splitlines()) == 1 and "trainer=ddp" in str(err.value)
    check_strategy(OmegaConf.create({"strategy": "ddp"}))
    check_strategy(compose_with_hydra("train", "trainer=ddp_cpu").trainer)


@pytest.mark.slow
def test_submitit_local_runs_a_job(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the [slurm] extra is not installed")
    sweep = tmp_path / "sweep"
    args = ["hydra/launcher=submitit_local", "gmm=ring8_2d", "diffusion=vp", "sampler=em", "n_samples=100"]
    run("src/benchmark.py", "-m", *args, "sampler.nfe=4", f"hydra.sweep.dir={sweep}")
    assert len(list(sweep.glob("*/results.csv"))) == 1


@pytest.mark.slow
def test_optuna_tunes_pc_snr_on_the_exact_score_benchmark(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the [tune] extra is not installed")
    sweep = tmp_path / "tune"
    args = ["hydra/sweeper=tune", "hydra.sweeper.n_trials=3", "gmm=ring8_2d", "diffusion=vp", "sampler=pc"]
    run("src/benchmark.py", "-m", *args, "sampler.nfe=10", "n_samples=300", f"hydra.sweep.dir={sweep}")
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert 0.01 <= best["best_params"]["sampler.snr"] <= 0.6
    assert len(list(sweep.glob("*/results.csv"))) == 3


def test_bad_launcher_or_sweeper_name_is_one_line(monkeypatch, capsys):
    """The entry scripts' run_app, in process: the check comes before Hydra (the app never starts)."""
    from momentum_diffusion.cli.launch import check_launcher_args, run_app

    monkeypatch.setattr("sys.argv", ["src/train.py", "-m", "hydra/launcher=slurm"])
    with pytest.raises(SystemExit) as exit_info:
        run_app(lambda: pytest.fail("Hydra started despite the bad launcher"))
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
        "error: hydra/launcher=slurm is not available; valid: basic, submitit_slurm, submitit_local"
    ]

    assert check_launcher_args(["-m", "hydra/sweeper=optuan"]) == (
        "error: hydra/sweeper=optuan is not available; valid: basic, tune, optuna"
    )


def test_a_missing_plugin_names_the_extra(monkeypatch):
    import importlib.util

    from momentum_diffusion.cli import launch

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert launch.check_launcher_args(["hydra/launcher=submitit_slurm"]) == (
        "error: hydra/launcher=submitit_slurm needs the [slurm] extra: pip install -e '.[slurm]'"
    )
    assert launch.check_launcher_args(["hydra/launcher=basic", "sampler=pc"]) is None


def test_options_of_the_checkpoints_own_sampler_are_added_not_refused():
    """sample.py / evaluate.py without sampler=NAME: sampler.KEY=V is not in the composed config, so it is
    passed as ++sampler.KEY=V (build_sampler checks KEY); sampler.nfe and runs that choose a sampler are kept."""
    from momentum_diffusion.cli.launch import own_sampler_overrides

    argv = ["ckpt=x", "sampler.order=3", "sampler.nfe=[10,20]", "+sampler.snr=0.1", "-m", "sampler.grid=a,b"]
    assert own_sampler_overrides(argv) == [
        "ckpt=x", "++sampler.order=3", "sampler.nfe=[10,20]", "+sampler.snr=0.1", "-m", "++sampler.grid=a,b"
    ]  # fmt: skip
    chosen = ["ckpt=x", "sampler=expint", "sampler.order=3"]
    assert own_sampler_overrides(chosen) == chosen
