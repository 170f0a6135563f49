"""Exact resume (docs/reliability.md): after SIGTERM, SIGINT, SIGKILL (periodic checkpoint) and "train longer",
in-process on tiny configs (GMM vectors + small MLP, digits + tiny UNet with dropout) and through src/train.py
in a subprocess that is really signalled; training is deterministic.
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

from helpers import REPO, cli_env
from momentum_diffusion.data.sampling import ResumableDataLoader, ResumableRandomSampler
from momentum_diffusion.lightning.checkpointing import load_checkpoint
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
        pytest.param("digits", 10, 5, True, marks=pytest.mark.slow),  # the late signal is the gmm rows' too
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


# real processes, really signalled (≈ 25 s); the in-process SIGTERM tests above run by default
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
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
