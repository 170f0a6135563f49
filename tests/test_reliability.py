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
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from momentum_diffusion.cli.common import build_module
from momentum_diffusion.data.sampling import ResumableDataLoader, ResumableRandomSampler
from momentum_diffusion.lightning.checkpointing import AtomicCheckpointIO, load_checkpoint
from momentum_diffusion.lightning.module import NonFiniteTrainingError
from momentum_diffusion.lightning.preemption import CheckpointOnSigterm

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    # 1000 / 128 -> 7 batches per epoch
    "gmm": [
        "data=gmm",
        "data.n_train=1000",
        "data.n_val=10",
        "data.batch_size=128",
        "model.hidden=32",
        "model.depth=2",
    ],
    # 1617 / 400 -> 4 batches per epoch; dropout checks that its RNG draws resume exactly too
    "digits": ["model.base_channels=8", "data.batch_size=400", "model.dropout=0.1"],
    "cli": ["model.base_channels=8", "data.batch_size=400"],  # = CLI_TRAIN below
}


def tiny_config(name: str, *extra: str) -> dict:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*CONFIGS[name], *extra])
    config = {
        k: OmegaConf.to_container(cfg[k], resolve=True)
        for k in ("diffusion", "objective", "model", "sampler", "data", "optim")
    }
    return dict(config, seed=int(cfg.seed))


class _Record(pl.Callback):
    """Global RNG state at the end of training (what the next step would draw)."""

    def on_train_end(self, trainer, pl_module):
        pl_module.rng_at_end = torch.get_rng_state()


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


def fit(
    config: dict, out: Path, max_steps: int, ckpt_path=None, callbacks=(), every_n: int | None = None, module_hook=None
):
    pl.seed_everything(config["seed"], workers=True, verbose=False)
    dm = instantiate(config["data"])
    dm.setup("fit")
    module = build_module(dict(config, data_shape=list(dm.data_shape)))
    if module_hook is not None:
        module_hook(module)
    cbs = [CheckpointOnSigterm(dirpath=str(out / "checkpoints")), _Record(), *callbacks]
    if every_n:
        cbs.append(
            ModelCheckpoint(dirpath=str(out / "checkpoints"), save_last=True, save_top_k=0, every_n_train_steps=every_n)
        )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        gradient_clip_val=1.0,
        log_every_n_steps=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=None,
        default_root_dir=str(out),
        callbacks=cbs,
        logger=pl.loggers.CSVLogger(str(out), name="logs", version=""),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        except SystemExit:  # Lightning's SIGTERMException
            pass
    return trainer, module


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


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: threads only contend (and results must not depend on them)
    yield
    torch.set_num_threads(threads)


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
    assert state == {"epoch": 0, "batches": 1}
    resumed = ResumableDataLoader(data, batch_size=3, sampler=ResumableRandomSampler(10, seed=5), drop_last=True)
    resumed.load_state_dict(state)
    assert torch.equal(torch.cat(list(resumed)), epochs[0][3:])
    assert resumed.state_dict() == {"epoch": 1, "batches": 0}
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
    with pytest.raises(NonFiniteTrainingError, match="3 consecutive non-finite steps"):
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
CLI_TRAIN = [
    "model.base_channels=8",
    "data.batch_size=400",
    "callbacks.sample_evaluation=null",
    "callbacks.progress=null",
    "trainer.log_every_n_steps=1",
]
CLI_STEPS = 24


def cli(*args: str, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", MPLBACKEND="Agg")
    return subprocess.Popen(
        [sys.executable, str(REPO / "src" / "train.py"), *CLI_TRAIN, *args, f"hydra.run.dir={out}"],
        cwd=REPO,
        env=env,
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
    if sig == signal.SIGTERM:  # Lightning exits normally after SIGTERM; our callback saved and said so
        assert code == 0 and "SIGTERM received: saved" in log, err[-2000:]
    else:
        assert code == -signal.SIGKILL
    step = load_checkpoint(last)["global_step"]
    assert 3 <= step < CLI_STEPS
    resumed = tmp_path / "resumed"
    code, _, err = finish(
        cli(
            f"trainer.max_steps={CLI_STEPS}",
            "callbacks.checkpoint.every_n_train_steps=6",
            f"ckpt_path={last}",
            out=resumed,
        )
    )
    assert code == 0, err[-2000:]
    trainer, module = cli_straight
    ckpt = load_checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == trainer.global_step == CLI_STEPS
    for k, v in module.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    for i, s in trainer.optimizers[0].state_dict()["state"].items():
        for k, v in s.items():
            assert torch.equal(v, ckpt["optimizer_states"][0]["state"][i][k]), f"Adam {k}"


def test_cli_nonfinite_training_stops_with_one_line_and_a_loadable_checkpoint(tmp_path):
    # lr 1e30: the first step blows the weights up, every later loss is non-finite
    code, _, err = finish(
        cli(
            "trainer.max_steps=30",
            "optim.lr=1e30",
            "optim.max_bad_steps=3",
            "callbacks.checkpoint.every_n_train_steps=1",
            out=tmp_path,
        )
    )
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in err
    assert lines[-1].startswith("error: 3 consecutive non-finite steps"), err[-2000:]
    assert sum("non-finite loss" in line for line in lines) == 3  # one warning per skipped step
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
