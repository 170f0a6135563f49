"""scripts/graph_measure.py's raw-weights checkpoint and the graph experiment configs (fast)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from helpers import REPO, compose_config


def load_measure_script():
    spec = importlib.util.spec_from_file_location("graph_measure", REPO / "scripts" / "graph_measure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_raw_weights_checkpoint_puts_trained_weights_in_the_ema_slots(tmp_path):
    trained, averaged, buffer = torch.randn(3, 2), torch.zeros(3, 2), torch.arange(4.0)
    ckpt = {
        "state_dict": {"net.w": trained, "ema.w": averaged, "net.hist": buffer, "ema.hist": buffer * 0},
        "global_step": 7,
    }
    torch.save(ckpt, tmp_path / "a.ckpt")
    out = load_measure_script().with_trained_weights_as_ema(tmp_path / "a.ckpt", tmp_path / "raw.ckpt")
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
