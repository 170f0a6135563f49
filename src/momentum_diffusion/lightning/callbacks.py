"""SampleEvaluation: every N steps and at the end, sample at each NFE budget, log the metric and a preview."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch

from ..samplers import configure
from .evaluation import evaluate_samples, save_preview

log = logging.getLogger(__name__)


class SampleEvaluation(pl.Callback):
    def __init__(
        self,
        nfe: list[int] = (20, 50, 100),
        every_n_steps: int = 1000,
        n_samples: int = 1000,
        seed: int = 0,
        out_dir: str | None = None,
    ):
        self.nfe, self.every_n_steps, self.n_samples, self.seed = list(nfe), every_n_steps, n_samples, seed
        self.out_dir = out_dir
        self.last_step = -1
        self.history: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self.last_step:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if trainer.global_step != self.last_step:
            self.run(trainer, pl_module)

    def run(self, trainer, pl_module) -> list[dict]:
        if not trainer.is_global_zero or pl_module.sampler is None:
            return []
        self.last_step = step = trainer.global_step
        out_dir = Path(self.out_dir or trainer.default_root_dir)
        rows = []
        for nfe in self.nfe:
            sampler = configure(pl_module.sampler, nfe=nfe)
            gen = torch.Generator(device=pl_module.device).manual_seed(self.seed)
            x, used = pl_module.sample(self.n_samples, sampler, generator=gen)
            metrics = evaluate_samples(trainer.datamodule, x, seed=self.seed)
            row = {"step": step, "nfe_budget": nfe, "nfe_used": used, **metrics}
            rows.append(row)
            for logger in trainer.loggers:  # logger API directly: self.log is not allowed in on_train_end
                logger.log_metrics({f"eval/{k}_nfe{nfe}": v for k, v in metrics.items()}, step=step)
            ref = trainer.datamodule.reference_data(x.shape[0]) if x.dim() == 2 else None
            save_preview(x, out_dir / "samples" / f"step{step:07d}_nfe{nfe}.png", ref)
            log.info(
                "step %d NFE %d (used %d): %s", step, nfe, used, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            )
        save_preview(x, out_dir / "grid.png", ref)
        self.history.extend(rows)
        write_rows(out_dir / "eval_metrics.csv", self.history)
        return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    """CSV with the union of keys as columns (atomic replace)."""
    import csv
    import os

    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
