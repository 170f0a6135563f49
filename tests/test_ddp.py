"""DDP through the real CLI: two gloo processes on CPU (trainer=ddp_cpu).

A probe callback (this module, imported by the spawned ranks through PYTHONPATH) records per rank what the
objective is about to draw, which data rows it sees, every checkpoint file it writes, and its final weights.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from helpers import REPO, cli_env, run_script

# three CLI processes (≈ 40 s): slow; .ci/run runs the slow tests too
pytestmark = pytest.mark.slow

STEPS = 30
VECTORS = [
    "data=gmm",
    "data.spec=ring8_2d",
    "data.n_train=4096",
    "data.n_val=64",
    "diffusion=vp",
    "model.hidden=64",
    "model.depth=2",
    "threads=1",
    "trainer.log_every_n_steps=1",
    "optim.warmup_steps=5",
    "optim.lr_schedule=constant",  # cosine ends at max_steps: a 15-step run would not be the 30-step run's start
    "callbacks.checkpoint.every_n_train_steps=15",
    "callbacks.sample_evaluation.n_samples=64",
    "sampler.nfe=4",
    "~callbacks.progress",
]


class RankProbe(pl.Callback):
    """Writes DIR/rank<r>.json: the next numbers of the global stream at each step (the objective's t and ε
    come from it), a checksum of each batch, the checkpoint files this rank wrote, and its final weights."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.next_draws: list[list[float]] = []
        self.batches: list[float] = []
        self.writes: list[str] = []

    def setup(self, trainer, pl_module, stage):
        io = trainer.strategy.checkpoint_io
        save = io.save_checkpoint

        def counted(checkpoint, path, *args, **kwargs):
            self.writes.append(str(path))
            return save(checkpoint, path, *args, **kwargs)

        io.save_checkpoint = counted

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        gen = torch.Generator()
        gen.set_state(torch.get_rng_state())
        self.next_draws.append(torch.rand(4, generator=gen).tolist())
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        self.batches.append(float(x.double().sum()))

    def on_train_end(self, trainer, pl_module):
        digest = hashlib.sha256()
        for p in pl_module.net.parameters():
            digest.update(p.detach().cpu().numpy().tobytes())
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "next_draws": self.next_draws,
            "batches": self.batches,
            "writes": self.writes,
            "weights": digest.hexdigest(),
        }
        Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def train(out: Path, *args: str, timeout: int = 600) -> None:
    if not any(a.startswith("trainer.max_steps=") for a in args):
        args = (f"trainer.max_steps={STEPS}", *args)
    env = cli_env(PYTHONPATH=os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    probe = [f"+callbacks.probe._target_={__name__.split('.')[-1]}.RankProbe", f"+callbacks.probe.out_dir={out}"]
    run_script("train.py", *VECTORS, *probe, *args, f"hydra.run.dir={out}", env=env, timeout=timeout)


def losses(out: Path) -> np.ndarray:
    with open(out / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    return np.array([float(r["train/loss"]) for r in sorted(rows, key=lambda r: int(r["step"]))])


def probe(out: Path, rank: int) -> dict:
    return json.loads((out / f"rank{rank}.json").read_text())


@pytest.fixture(scope="module")
def ddp_and_single(tmp_path_factory):
    ddp, single = tmp_path_factory.mktemp("ddp"), tmp_path_factory.mktemp("single")
    train(ddp, "trainer=ddp_cpu", "data.batch_size=32")
    train(single, "data.batch_size=64")  # the same global batch on one process
    return ddp, single


def test_ranks_draw_different_noise_and_data(ddp_and_single):
    ddp, _ = ddp_and_single
    r0, r1 = probe(ddp, 0), probe(ddp, 1)
    assert r0["world_size"] == r1["world_size"] == 2
    assert len(r0["next_draws"]) == len(r1["next_draws"]) == STEPS
    # seed + rank: the objective's next t/ε draws differ at every step, and so do the data shards
    assert all(a != b for a, b in zip(r0["next_draws"], r1["next_draws"]))
    assert all(a != b for a, b in zip(r0["batches"], r1["batches"]))


def test_gradients_are_all_reduced_weights_equal_on_both_ranks(ddp_and_single):
    ddp, _ = ddp_and_single
    assert probe(ddp, 0)["weights"] == probe(ddp, 1)["weights"]


def test_checkpoint_written_once_by_rank_zero_with_every_ranks_rng(ddp_and_single):
    ddp, _ = ddp_and_single
    r0, r1 = probe(ddp, 0), probe(ddp, 1)
    assert r1["writes"] == []  # rank 1 never writes a file
    assert len(r0["writes"]) == 2 and all(Path(w).name == "last.ckpt" for w in r0["writes"])  # steps 15 and 30
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["last.ckpt"]
    state = torch.load(ddp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == STEPS
    rng = state["rng_per_rank"]
    assert rng["world_size"] == 2 and not torch.equal(rng["torch"][0], rng["torch"][1])
    loader = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader["world_size"] == 2


def test_loss_curve_close_to_one_process_with_the_same_global_batch(ddp_and_single):
    ddp, single = ddp_and_single
    a, b = losses(ddp), losses(single)
    assert len(a) == len(b) == STEPS
    # rank 0 logs its own half of the global batch: compare 10-step means, not single steps
    ma, mb = a.reshape(3, 10).mean(1), b.reshape(3, 10).mean(1)
    assert ma[-1] < 0.8 * ma[0] and mb[-1] < 0.8 * mb[0]  # both learn
    np.testing.assert_allclose(ma, mb, rtol=0.2)


def test_two_process_resume_mid_epoch_continues_every_ranks_streams(ddp_and_single, tmp_path):
    """15 steps, then resume to 30 on 2 processes: the same noise draws, data shards and final weights
    (bit for bit) as the uninterrupted 30-step run."""
    ddp, _ = ddp_and_single
    first, second = tmp_path / "first", tmp_path / "second"
    train(first, "trainer=ddp_cpu", "data.batch_size=32", "trainer.max_steps=15")
    train(second, "trainer=ddp_cpu", "data.batch_size=32", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    for rank in (0, 1):
        whole, resumed = probe(ddp, rank), probe(second, rank)
        assert resumed["next_draws"] == whole["next_draws"][15:]
        assert resumed["batches"] == whole["batches"][15:]
        assert resumed["weights"] == whole["weights"]
