"""Reliability (docs/reliability.md): exact resume after SIGTERM/SIGKILL, NaN guard, determinism, atomic saves.

In-process Trainer runs on tiny configs (GMM vectors + small MLP, digits + tiny UNet with dropout) check the
bit-exact guarantees; the real-kill tests run src/train.py in a subprocess and signal it.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from bad_inputs import bad_input_battery, check_bad_input_battery
from helpers import REPO, cli_env
from momentum_diffusion.cli.common import build_module
from momentum_diffusion.data.sampling import ResumableDataLoader, ResumableRandomSampler
from momentum_diffusion.lightning.checkpointing import AtomicCheckpointIO, load_checkpoint
from momentum_diffusion.lightning.module import NonFiniteTrainingError
from momentum_diffusion.lightning.preemption import PREEMPTED_EXIT_CODE
from tiny_training import CLI_TRAIN, fit, tiny_config


class _Sigterm(pl.Callback):
    """Raise Lightning's SIGTERM flag at a step: before the batch (the usual case: the signal arrives during
    the step) or after the checkpoint callbacks of that batch ran (late: saved at epoch end/on exception)."""

    def __init__(self, step: int, late: bool):
        self.step, self.late = step, late

    def on_train_batch_start(self, trainer, *args):
        if not self.late and trainer.global_step == self.step - 1:
            trainer._signal_connector.received_sigterm = True

    def on_train_batch_end(self, trainer, *args):
        if self.late and trainer.global_step == self.step:
            trainer._signal_connector.received_sigterm = True


def logged_losses(out: Path) -> dict[int, str]:
    with open(out / "logs" / "metrics.csv") as f:
        return {int(r["step"]): r["train/loss"] for r in csv.DictReader(f) if r.get("train/loss")}


def assert_same_training_state(a: tuple, b: tuple) -> None:
    (ta, ma), (tb, mb) = a, b
    assert ta.global_step == tb.global_step
    sa, sb = ma.state_dict(), mb.state_dict()  # net, EMA and the bad-step counter
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"
    oa, ob = ta.optimizers[0].state_dict(), tb.optimizers[0].state_dict()
    for i in oa["state"]:
        for k in oa["state"][i]:
            assert torch.equal(oa["state"][i][k], ob["state"][i][k]), f"Adam {k} of param {i} differs"
    assert ta.lr_scheduler_configs[0].scheduler.state_dict() == tb.lr_scheduler_configs[0].scheduler.state_dict()
    assert torch.equal(ma.rng_at_end, mb.rng_at_end), "global RNG stream differs"


_straight: dict = {}


def straight_run(name: str, n: int, tmp_path_factory) -> tuple:
    if (name, n) not in _straight:
        out = tmp_path_factory.mktemp(f"straight_{name}")
        _straight[(name, n)] = (*fit(tiny_config(name), out, n), out)
    return _straight[(name, n)]


# ---- 1. exact resume ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,n,stop,late",
    [
        ("gmm", 16, 9, False),  # mid-epoch, signal during the step
        ("gmm", 16, 7, True),  # last batch of epoch 0, signal after the checkpoint hooks (epoch-end save)
        ("gmm", 16, 10, True),  # mid-epoch, late signal (saved on SIGTERMException)
        ("digits", 10, 4, False),  # epoch boundary, dropout in the network
        ("digits", 10, 5, True),
    ],
)
def test_resume_after_sigterm_is_bit_exact(name, n, stop, late, tmp_path, tmp_path_factory):
    ta, ma, out_a = straight_run(name, n, tmp_path_factory)
    config = tiny_config(name)
    tb, _ = fit(config, tmp_path / "b", n, callbacks=[_Sigterm(stop, late)])
    assert tb.global_step == stop  # stopped there and saved
    ckpt = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt)["global_step"] == stop
    tc, mc = fit(config, tmp_path / "c", n, ckpt_path=ckpt)
    assert_same_training_state((ta, ma), (tc, mc))
    la, lb, lc = logged_losses(out_a), logged_losses(tmp_path / "b"), logged_losses(tmp_path / "c")
    assert sorted(lb) == list(range(stop)) and sorted(lc) == list(range(stop, n))
    assert {**lb, **lc} == la  # the same loss, bit for bit, at the same logged step


def test_resume_from_periodic_checkpoint_is_bit_exact(tmp_path, tmp_path_factory):
    """What a SIGKILL leaves: the last periodic checkpoint (here at an epoch boundary, step 14 = 2 x 7)."""
    ta, ma, _ = straight_run("gmm", 16, tmp_path_factory)
    config = tiny_config("gmm")
    fit(config, tmp_path / "b", 14, every_n=7)
    tc, mc = fit(config, tmp_path / "c", 16, ckpt_path=tmp_path / "b" / "checkpoints" / "last.ckpt")
    assert_same_training_state((ta, ma), (tc, mc))


def test_training_is_deterministic(tmp_path, tmp_path_factory):
    ta, ma, _ = straight_run("gmm", 16, tmp_path_factory)
    assert_same_training_state((ta, ma), fit(tiny_config("gmm"), tmp_path, 16))


def test_resumable_loader_order_depends_on_seed_and_epoch_only():
    data = torch.arange(10.0)
    loader = ResumableDataLoader(data, batch_size=3, sampler=ResumableRandomSampler(10, seed=5), drop_last=True)
    epochs = [torch.cat(list(loader)) for _ in range(3)]
    assert not torch.equal(epochs[0], epochs[1]) and len(epochs[2]) == 9
    again = ResumableDataLoader(data, batch_size=3, sampler=ResumableRandomSampler(10, seed=5), drop_last=True)
    it = iter(again)
    next(it)
    state = again.state_dict()
    assert {k: state[k] for k in ("epoch", "batches")} == {"epoch": 0, "batches": 1}
    resumed = ResumableDataLoader(data, batch_size=3, sampler=ResumableRandomSampler(10, seed=5), drop_last=True)
    resumed.load_state_dict(state)
    assert torch.equal(torch.cat(list(resumed)), epochs[0][3:])
    assert {k: resumed.state_dict()[k] for k in ("epoch", "batches")} == {"epoch": 1, "batches": 0}
    assert torch.equal(torch.cat(list(resumed)), epochs[1])


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


# ---- atomic checkpoint writes ------------------------------------------------------------------------
def test_interrupted_checkpoint_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}


# ---- real kills through the CLI ----------------------------------------------------------------------
CLI_STEPS = 24


def cli(*args: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "src" / "train.py"), *CLI_TRAIN, *args, f"hydra.run.dir={out}"],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > end:
            proc.kill()
            raise AssertionError(f"{path} never appeared:\n{proc.stderr.read()[-2000:]}")
        time.sleep(0.05)


def finish(proc: subprocess.Popen, timeout: float = 180.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def cli_straight(tmp_path_factory):
    """The uninterrupted run, in-process (one process start-up less): the CLI builds the same module."""
    out = tmp_path_factory.mktemp("cli_straight")
    trainer, module = fit(tiny_config("cli"), out, CLI_STEPS)
    return trainer, module


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)])
def test_killed_cli_run_resumes_exactly(sig, cli_straight, tmp_path):
    killed = tmp_path / "killed"
    proc = cli(f"trainer.max_steps={CLI_STEPS}", "callbacks.checkpoint.every_n_train_steps=3", out=killed)
    last = killed / "checkpoints" / "last.ckpt"
    wait_for(last, proc)  # a periodic checkpoint exists: the run is mid-training
    proc.send_signal(sig)
    code, log, err = finish(proc)
    if sig == signal.SIGTERM:  # saved, said so, and exit code 75 (EX_TEMPFAIL) so that a scheduler requeues
        assert code == PREEMPTED_EXIT_CODE == 75 and "SIGTERM received: saved" in log, err[-2000:]
    else:
        assert code == -signal.SIGKILL
    step = load_checkpoint(last)["global_step"]
    assert 3 <= step < CLI_STEPS
    # Resume as the message advises, into the same run directory, with another checkpoint cadence (issue 18
    # item 1: Lightning then versioned the file, last-v1.ckpt got the new state and last.ckpt rolled back).
    # Cadence 5: the last periodic save is at step 20, so the final state comes from the end-of-run save.
    code, _, err = finish(
        cli(
            f"trainer.max_steps={CLI_STEPS}",
            "callbacks.checkpoint.every_n_train_steps=5",
            f"ckpt_path={last}",
            out=killed,
        )
    )
    assert code == 0, err[-2000:]
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["last.ckpt"]
    trainer, module = cli_straight
    ckpt = load_checkpoint(last)
    assert ckpt["global_step"] == trainer.global_step == CLI_STEPS
    for k, v in module.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    for i, s in trainer.optimizers[0].state_dict()["state"].items():
        for k, v in s.items():
            assert torch.equal(v, ckpt["optimizer_states"][0]["state"][i][k]), f"Adam {k}"


@pytest.mark.slow
def test_ctrl_c_on_the_cli_saves_and_exits_with_the_requeue_code(tmp_path):
    """Item 8 through src/train.py: SIGINT as Ctrl-C sends it; saved, said so, exit code 75 (not 1)."""
    proc = cli(f"trainer.max_steps={CLI_STEPS}", "callbacks.checkpoint.every_n_train_steps=3", out=tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    wait_for(last, proc)
    proc.send_signal(signal.SIGINT)
    code, log, err = finish(proc)
    assert code == PREEMPTED_EXIT_CODE and "SIGINT received: saved" in log, err[-2000:]
    assert 3 <= load_checkpoint(last)["global_step"] < CLI_STEPS


# ---- issue 18: no silent rollback, no silent wrong data, no garbage checkpoints ---------------------------
class _DrawsAtTrainEnd(pl.Callback):
    """Work at the end of training that draws from the global RNG (the end-of-run evaluation did, e.g. the
    first-use training of the digits classifier). Lightning runs checkpoint callbacks last, so its
    end-of-run checkpoint stored the RNG state after this draw, not the one of the last step."""

    def on_train_end(self, trainer, pl_module):
        torch.rand(1)


def test_train_longer_from_the_end_of_run_checkpoint_is_bit_exact(tmp_path, tmp_path_factory):
    """Item 6: 10 steps end mid-epoch (7 batches per epoch; periodic saves at 4 and 8), then 'train longer'
    to 16 gives the straight 16-step run. Lightning wrote the end-of-run checkpoint in on_train_end, after
    the other callbacks' end-of-training work and with the epoch marked completed, and after a periodic
    save it did not write it at all (last.ckpt stayed at step 8)."""
    ta, ma, _ = straight_run("gmm", 16, tmp_path_factory)
    config = tiny_config("gmm")
    fit(config, tmp_path / "b", 10, every_n=4, callbacks=[_DrawsAtTrainEnd()])
    ckpt = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt)["global_step"] == 10
    tc, mc = fit(config, tmp_path / "c", 16, ckpt_path=ckpt)
    assert_same_training_state((ta, ma), (tc, mc))
    assert tc.current_epoch == ta.current_epoch  # the interrupted epoch was not counted as completed


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


def test_failed_checkpoint_write_removes_its_temporary_and_keeps_the_previous_file(tmp_path, monkeypatch):
    """Item 7: disk full (or a read-only directory) during a save: one-line CheckpointError, no partial
    temporary left behind (on a full disk it kept the disk full), the previous checkpoint intact."""
    import errno

    from momentum_diffusion.lightning.checkpointing import CheckpointError

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"\(No space left on device\); the previous checkpoint is kept") as info:
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert "\n" not in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert torch.load(path, weights_only=False) == {"step": 1}


class _Sigint(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the step


def test_sigint_is_treated_like_sigterm(tmp_path, tmp_path_factory):
    """Item 8: Ctrl-C saved nothing (exit 1). Now the step finishes, last.ckpt is saved and resuming from it
    is exact; the original SIGINT handler is back afterwards (a second Ctrl-C aborts)."""
    handler = signal.getsignal(signal.SIGINT)
    ta, ma, _ = straight_run("gmm", 16, tmp_path_factory)
    config = tiny_config("gmm")
    tb, _ = fit(config, tmp_path / "b", 16, callbacks=[_Sigint(5)])
    assert tb.global_step == 5 and signal.getsignal(signal.SIGINT) is handler
    ckpt = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt)["global_step"] == 5
    assert_same_training_state((ta, ma), fit(config, tmp_path / "c", 16, ckpt_path=ckpt))


def test_identity_names_process_objective_and_network_and_old_checkpoints_still_load(tmp_path):
    """Item 10 (unit part): the identity covers diffusion.*, objective.* (K_t) and model.*; a mismatch names
    the keys; a checkpoint written before the full identity existed is judged by the config it stores."""
    from momentum_diffusion.lightning.checkpointing import (
        CheckpointMismatchError,
        check_identity,
        checkpoint_identity,
        weights_identity,
    )

    def module_for(*extra):
        return build_module(dict(tiny_config("gmm", *extra), data_shape=[2]))

    base = module_for()
    assert base.identity["diffusion.beta"] == 3.0 and base.identity["objective.kt"] == "cholesky"
    assert base.identity["model.hidden"] == 32 and "model.dropout" not in base.identity
    training_only = {
        "model": {"hidden": 3, "compile": True, "dropout": 0.1},
        "objective": {"weighting": "eps", "kt": "qr"},
    }
    assert weights_identity(training_only) == {"model.hidden": 3, "objective.kt": "qr"}
    for extra, key in (("diffusion.beta=8", "diffusion.beta"), ("model.depth=3", "model.depth")):
        with pytest.raises(CheckpointMismatchError, match=rf"{key}: checkpoint .* vs config .*allow_identity_change"):
            check_identity(base.identity, module_for(extra).identity)
    assert check_identity(base.identity, module_for("diffusion.beta=8").identity, allow_change=True)
    config = dict(tiny_config("gmm"), data_shape=[2])
    del config["objective"]["kt"]  # written before objective.kt existed
    old = {"hyper_parameters": {"config": config, "identity": {"process": "cld", "order": 2, "data_shape": [2]}}}
    check_identity(checkpoint_identity(old), base.identity)
    with pytest.raises(CheckpointMismatchError, match="objective.kt"):
        check_identity(checkpoint_identity(old), module_for("objective.kt=gddim").identity)


def test_resume_with_allow_identity_change_loads_the_weights_and_old_checkpoints_resume(tmp_path):
    """Item 10: the override resumes a checkpoint under changed process parameters (here beta 4 -> 8); a
    checkpoint written before the full identity (old identity keys, a config without objective.kt) resumes
    under the matching config without it."""
    fit(tiny_config("gmm"), tmp_path / "a", 2, every_n=0)
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    config = dict(tiny_config("gmm", "diffusion.beta=8"), allow_identity_change=True)
    trainer, _ = fit(config, tmp_path / "b", 3, ckpt_path=ckpt)
    assert trainer.global_step == 3
    old = torch.load(ckpt, weights_only=False)
    hp = old["hyper_parameters"]
    hp["identity"] = {k: hp["identity"][k] for k in ("model", "data", "process", "order", "objective", "data_shape")}
    del hp["config"]["objective"]["kt"]
    torch.save(old, tmp_path / "old.ckpt")
    trainer, _ = fit(tiny_config("gmm"), tmp_path / "c", 3, ckpt_path=tmp_path / "old.ckpt")
    assert trainer.global_step == 3


@pytest.mark.slow
def test_bad_inputs_each_give_one_line_naming_the_key_and_lose_nothing_all_entry_points(tmp_path):
    check_bad_input_battery(bad_input_battery(tmp_path, True))
