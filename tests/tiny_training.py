"""In-process training on tiny configs (GMM vectors + small MLP, digits + tiny UNet), shared by the reliability
tests (test_resume.py, test_update_guard.py, test_checkpoint_files.py) and the bad-input battery (bad_inputs.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers import compose_config
from momentum_diffusion.cli.common import build_module
from momentum_diffusion.lightning.checkpointing import AtomicCheckpointIO, RunCheckpoint
from momentum_diffusion.lightning.preemption import CheckpointOnSigterm

CONFIGS = {
    # 1000 / 128 -> 7 batches per epoch
    "gmm": [
        "data=gmm",
        "data.n_train=1000",
        "data.n_val=10",
        "data.batch_size=128",
        "model.hidden=32",
        "model.depth=2",
        "optim.lr_schedule=constant",  # "train longer" (16 after 10) is the straight run only at a constant lr
    ],
    # 1617 / 400 -> 4 batches per epoch; dropout checks that its RNG draws resume exactly too
    "digits": ["model.base_channels=8", "data.batch_size=400", "model.dropout=0.1"],
    "cli": ["model.base_channels=8", "data.batch_size=400"],  # = CLI_TRAIN below
}


def tiny_config(name: str, *extra: str) -> dict:
    cfg = compose_config("train", *CONFIGS[name], *extra)
    config = {
        k: OmegaConf.to_container(cfg[k], resolve=True)
        for k in ("diffusion", "objective", "model", "sampler", "data", "optim")
    }
    return dict(config, seed=int(cfg.seed))


class Record(pl.Callback):
    """Global RNG state at the end of training (what the next step would draw)."""

    def on_train_end(self, trainer, pl_module):
        pl_module.rng_at_end = torch.get_rng_state()


def fit(
    config: dict, out: Path, max_steps: int, ckpt_path=None, callbacks=(), every_n: int | None = None, module_hook=None
):
    pl.seed_everything(config["seed"], workers=True, verbose=False)
    dm = instantiate(config["data"])
    dm.setup("fit")
    module = build_module(dict(config, data_shape=list(dm.data_shape)))
    if module_hook is not None:
        module_hook(module)
    cbs = [CheckpointOnSigterm(dirpath=str(out / "checkpoints")), Record(), *callbacks]
    if every_n is not None:  # the CLI's checkpoint callback (0: only the end-of-run checkpoint)
        cbs.append(
            RunCheckpoint(dirpath=str(out / "checkpoints"), save_last=True, save_top_k=0, every_n_train_steps=every_n)
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


# the CLI runs' tiny digits training (no evaluation, no progress bar, a loss row per step)
CLI_TRAIN = [
    "model.base_channels=8",
    "data.batch_size=400",
    "callbacks.sample_evaluation=null",
    "callbacks.progress=null",
    "trainer.log_every_n_steps=1",
]
