"""A quiet quick start (issue 15): a step-counting progress bar, no loaders Lightning would skip, no third-party
noise (the cloud-logger advert, torch's LeafSpec deprecation inside Lightning)."""

import csv
import logging
import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from momentum_diffusion.data.digits import DigitsDataModule
from momentum_diffusion.data.images import _ImageDataModule
from momentum_diffusion.data.vectors import _VectorDataModule
from momentum_diffusion.lightning.console import RunSummary, StepProgressBar, silence_known_noise
from momentum_diffusion.lightning.throughput import ImagesPerSecond
from tiny_training import fit, tiny_config


@pytest.mark.parametrize("cls", [DigitsDataModule, _ImageDataModule, _VectorDataModule])
def test_data_modules_define_no_loader_that_training_skips(cls):
    """Training has no validation_step: a val/test loader would only make Lightning warn that it skips it."""
    for hook in ("val_dataloader", "test_dataloader"):
        assert getattr(cls, hook) is getattr(pl.LightningDataModule, hook), f"{cls.__name__}.{hook}"


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = ((x - self.w) ** 2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_progress_bar_counts_steps_over_epochs_and_the_run_is_quiet(tmp_path, caplog):
    """5 steps over 2-batch epochs: one task 'Step' with total 5 that ends at 5 (Lightning's own: 'Epoch 2/-2'
    over 2 batches); neither the LeafSpec FutureWarning nor the litlogger advert is emitted."""
    silence_known_noise()
    bar = StepProgressBar()
    loader = DataLoader(TensorDataset(torch.randn(4, 1)), batch_size=2)
    trainer = pl.Trainer(
        max_steps=5, callbacks=[bar], logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
        log_every_n_steps=1, enable_model_summary=False,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        silence_known_noise()  # re-installed inside catch_warnings, as train() does before building its Trainer
        trainer.fit(_Tiny(), train_dataloaders=loader)
    tasks = bar.progress.tasks if bar.progress is not None else []
    (task,) = [t for t in tasks if t.id == bar.train_progress_bar_id]
    assert "Step" in task.description and task.total == 5 and task.completed == 5
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    assert "litlogger" not in caplog.text


def test_throughput_reaches_the_logger_at_every_window_end(tmp_path):
    """Windows of 3 steps under log_every_n_steps=10: every window's step_s is in metrics.csv, at the global step
    where it ended (1 warm-up step, then windows end at 4, 7, 10, 13), and first_step_s once at step 1."""
    loader = DataLoader(TensorDataset(torch.randn(8, 1)), batch_size=2)
    logger = pl.loggers.CSVLogger(str(tmp_path), name="logs", version="")
    trainer = pl.Trainer(
        max_steps=14, callbacks=[ImagesPerSecond(every_n_steps=3)], logger=logger, enable_checkpointing=False,
        default_root_dir=tmp_path, log_every_n_steps=10, enable_model_summary=False, enable_progress_bar=False,
    )  # fmt: skip
    trainer.fit(_Tiny(), train_dataloaders=loader)
    rows = list(csv.DictReader(open(tmp_path / "logs" / "metrics.csv")))
    assert sorted(int(r["step"]) for r in rows if r.get("train/step_s")) == [4, 7, 10, 13]
    assert [int(r["step"]) for r in rows if r.get("train/first_step_s")] == [1]
    assert all(float(r["train/img_per_s"]) > 0 for r in rows if r.get("train/step_s"))


def test_run_summary_counts_the_training_forward_flops(tmp_path, caplog):
    """The MLP's forward is its Linear layers, each applied once per example: 2·(its weights) FLOP apiece; the
    HSM loss around it adds only the 2×2 kernel and mixed-score algebra, a few hundred FLOP whatever the network."""
    summary = RunSummary()
    with caplog.at_level(logging.INFO, logger="momentum_diffusion.lightning.console"):
        _, module = fit(tiny_config("gmm", "diffusion=cld"), tmp_path, 1, callbacks=[summary])
    linear = sum(2 * m.weight.numel() for m in module.net.modules() if isinstance(m, torch.nn.Linear))
    assert linear <= summary.flops_per_example <= linear + 500
    assert "network MLP" in caplog.text and "FLOP per training step (batch 128" in caplog.text
