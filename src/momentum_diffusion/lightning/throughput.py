"""Training throughput: images per second, logged while training (issue 12).

Lightning's ``ThroughputMonitor`` synchronises the device after every batch; this callback measures over a
window of ``every_n_steps`` optimizer steps instead (one synchronisation per window on CUDA), so measuring
does not slow down what it measures. The window includes data loading, logging and everything else a step
costs: it is the rate the run actually trains at.

Logged: ``train/img_per_s`` (all devices together: per-device batch × world size), ``train/step_s``
(seconds per step) and, once, ``train/first_step_s`` (the first step, which includes ``torch.compile``).
They go to the loggers directly: ``self.log`` from a callback reaches them only at Lightning's logging steps
(multiples of ``trainer.log_every_n_steps``), which a window's end rarely is, and most windows were lost.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch

__all__ = ["ImagesPerSecond"]


def batch_size_of(batch) -> int:
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else 1


def _log(trainer, metrics: dict) -> None:
    for logger in trainer.loggers:  # rank-zero-only loggers write on rank 0 alone
        logger.log_metrics(metrics, step=trainer.global_step)


class ImagesPerSecond(pl.Callback):
    """Log training images per second every ``every_n_steps`` steps (``history`` keeps the measurements)."""

    def __init__(self, every_n_steps: int = 50):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.history: list[dict] = []  # {"step", "img_per_s", "step_s"} per window
        self.first_step_s: float | None = None
        self._start: float | None = None
        self._t0 = self._images = self._steps = 0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._start is None:
            self._sync(pl_module)
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        world = max(int(getattr(trainer, "world_size", 1) or 1), 1)
        if self.first_step_s is None:  # first step: compile, cuDNN autotuning, allocator warm-up
            self._sync(pl_module)
            self._t0 = time.perf_counter()
            self.first_step_s = self._t0 - self._start
            _log(trainer, {"train/first_step_s": self.first_step_s})
            return
        self._images += batch_size_of(batch) * world
        self._steps += 1
        if self._steps < self.every_n_steps:
            return
        self._sync(pl_module)
        now = time.perf_counter()
        elapsed = max(now - self._t0, 1e-9)
        record = {"step": trainer.global_step, "img_per_s": self._images / elapsed, "step_s": elapsed / self._steps}
        self.history.append(record)
        metrics = {"train/img_per_s": record["img_per_s"], "train/step_s": record["step_s"]}
        if pl_module.device.type == "cuda":  # peak memory of the step (activations included), GiB
            metrics["train/peak_gib"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        _log(trainer, metrics)
        self._t0, self._images, self._steps = now, 0, 0

    def on_train_end(self, trainer, pl_module):
        self._start = None
