"""The update guard (docs/reliability.md): a non-finite loss or gradient, or an exploding update, is undone
(weights, EMA and Adam state unchanged); k bad steps in a row stop the run and keep the last good checkpoint.
"""

from __future__ import annotations

import csv

import lightning.pytorch as pl
import pytest
import torch

from momentum_diffusion.lightning.checkpointing import load_checkpoint
from momentum_diffusion.lightning.module import NonFiniteTrainingError
from tiny_training import fit, tiny_config


# ---- 2. NaN / Inf guard ------------------------------------------------------------------------------
def inject(module, steps: set[int], where: str):
    """Make the loss (where='loss') or one gradient (where='grad') non-finite at the given global steps."""
    if where == "loss":
        loss = module.objective.loss

        def bad_loss(*args, **kwargs):
            out = loss(*args, **kwargs)
            return out * float("nan") if module.global_step in steps else out

        module.objective.loss = bad_loss
    else:
        p = next(module.net.parameters())
        p.register_hook(lambda g: g * float("inf") if module.global_step in steps else g)


class _Snapshots(pl.Callback):
    """Weights, EMA and Adam moments before and after each batch."""

    def __init__(self):
        self.before, self.after = {}, {}

    @staticmethod
    def snap(trainer, module):
        opt = trainer.optimizers[0].state_dict()["state"]
        return (
            {k: v.clone() for k, v in module.state_dict().items() if "bad_steps" not in k},
            {i: {k: v.clone() for k, v in s.items()} for i, s in opt.items()},
        )

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before[trainer.global_step] = self.snap(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.after[trainer.global_step - 1] = self.snap(trainer, module)


def same(a, b) -> bool:
    (wa, oa), (wb, ob) = a, b
    return (
        all(torch.equal(wa[k], wb[k]) for k in wa)
        and oa.keys() == ob.keys()
        and all(torch.equal(oa[i][k], ob[i][k]) for i in oa for k in oa[i])
    )


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_nonfinite_step_is_skipped_without_touching_weights_ema_or_adam(where, tmp_path):
    snaps = _Snapshots()
    trainer, module = fit(
        tiny_config("gmm"), tmp_path, 8, callbacks=[snaps], module_hook=lambda m: inject(m, {3, 5}, where)
    )
    assert trainer.global_step == 8  # skipped batches still count as steps
    for step in (3, 5):
        assert same(snaps.before[step], snaps.after[step]), f"step {step} changed the state"
    for step in (2, 4, 6):
        assert not same(snaps.before[step], snaps.after[step])
    assert int(module.bad_steps_total) == 2 and module.consecutive_bad_steps == 0
    with open(tmp_path / "logs" / "metrics.csv") as f:
        counts = [float(r["train/bad_steps"]) for r in csv.DictReader(f) if r.get("train/bad_steps")]
    assert counts == [0, 0, 0, 1, 1, 2, 2, 2]  # running count, logged every step
    assert all(torch.isfinite(p).all() for p in module.state_dict().values())


def test_k_consecutive_bad_steps_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    config = tiny_config("gmm", "optim.max_bad_steps=3")
    modules = []
    with pytest.raises(NonFiniteTrainingError, match="3 consecutive bad steps"):
        fit(
            config,
            tmp_path,
            20,
            every_n=1,
            module_hook=lambda m: (inject(m, set(range(6, 20)), "loss"), modules.append(m)),
        )
    module = modules[0]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert 6 <= ckpt["global_step"] <= 8  # written during the streak at the latest, never after the error
    state = module.state_dict()  # skipped steps left the weights as after step 5, the last good one
    for k, v in ckpt["state_dict"].items():
        assert torch.isfinite(v).all(), k
        if k != "bad_steps_total":  # the counter moves on during the streak
            assert torch.equal(v, state[k]), k


class _LrBlowUp(pl.Callback):
    """From global step `step` on, the learning rate is 1e10: finite loss and gradients, garbage weights."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.optimizers[0].param_groups[0]["lr"] = 1e10


def test_exploding_update_is_undone_and_stops_the_run_naming_the_last_good_step(tmp_path):
    """Item 4: an update that blows the weights up (optim.lr=1e10 left loss 4.5e22 and exit 0; 1e30 left a
    last.ckpt with weights ~1e28) is undone like a non-finite step: weights, EMA and Adam state unchanged."""
    snaps, modules = _Snapshots(), []
    with pytest.raises(NonFiniteTrainingError, match=r"3 consecutive bad steps.*exploding update.*after step 4,"):
        fit(
            tiny_config("gmm", "optim.max_bad_steps=3"),
            tmp_path,
            20,
            every_n=1,
            callbacks=[_LrBlowUp(4), snaps],
            module_hook=modules.append,
        )
    for step in (4, 5):  # bad steps: nothing changed (weights, EMA, Adam moments)
        assert same(snaps.before[step], snaps.after[step]), f"step {step} changed the state"
    assert not same(snaps.before[3], snaps.after[3])
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    state = modules[0].state_dict()
    for k, v in ckpt["state_dict"].items():
        assert torch.isfinite(v).all() and v.abs().max() < 100, k
        if k != "bad_steps_total":
            assert torch.equal(v, state[k]), k
    assert ckpt["rng"]["last_good_step"] == 4
