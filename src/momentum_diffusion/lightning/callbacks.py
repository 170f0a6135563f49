"""SampleEvaluation: every N steps and at the end, sample at each NFE budget, log the metric and a preview.
RankNoiseStreams: under DDP each rank draws its own t and ε (seed + rank), saved and restored per rank."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch

from ..metrics import HEADLINE_METRICS
from ..samplers import configure
from ..samplers.budget import nfe_budgets
from ..tables import write_rows
from .evaluation import evaluate_samples, fid_available, image_fid, preview, uses_fid

log = logging.getLogger(__name__)


class SampleEvaluation(pl.Callback):
    """Sample with the module's sampler at each budget of ``sampler.nfe`` (the one NFE knob: an int or a
    list, samplers/budget.py), log ``eval/<metric>_nfe<N>`` to every logger, write ``eval_metrics.csv``,
    the per-budget previews and ``metric_vs_nfe.png``; a W&B logger also gets the grids and the plot."""

    def __init__(
        self,
        every_n_steps: int = 1000,
        n_samples: int = 1000,
        seed: int = 0,
        out_dir: str | None = None,
        metrics: dict | None = None,
    ):
        self.every_n_steps, self.n_samples, self.seed = every_n_steps, n_samples, seed
        self.out_dir = out_dir
        self.metrics = dict(metrics or {})  # FID settings (``metrics`` in train.yaml): weights, reference, cache
        self.last_step = -1
        self.history: list[dict] = []

    def on_fit_start(self, trainer, pl_module):
        """Say once, at the start and not after hours of training, when FID cannot be computed (every rank
        checks, so that all of them agree on whether the sharded FID collective runs)."""
        if not fid_available(trainer.datamodule, self.metrics, warn=trainer.is_global_zero):
            self.metrics["fid"] = False

    def draw(self, trainer, pl_module, sampler) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``n_samples`` samples, sharded over the ranks (each draws ⌈n / world⌉ with seed + rank) and gathered,
        so that evaluation time falls as 1/N and no rank idles into the collective timeout.
        Returns (all samples, this rank's shard, NFE used)."""
        world, rank = trainer.world_size, trainer.global_rank
        share = -(-self.n_samples // world)
        gen = torch.Generator(device=pl_module.device).manual_seed(self.seed + rank)
        shard, used = pl_module.sample(share, sampler, generator=gen)
        x = shard
        if world > 1:
            x = trainer.strategy.all_gather(shard.to(pl_module.device)).reshape(-1, *shard.shape[1:])
            x = x[: self.n_samples].cpu()
        return x, shard, used

    def sharded_fid(self, trainer, pl_module, shard) -> float | None:
        """Under DDP with image data: every rank featurises its own shard, the moments are summed, rank 0
        takes the distance (None on the other ranks, and when FID is off or there is one process)."""
        if trainer.world_size == 1 or not uses_fid(trainer.datamodule) or self.metrics.get("fid") is False:
            return None
        fid = image_fid(trainer.datamodule, pl_module.device, self.metrics)
        moments = fid.union_moments(shard, lambda t: trainer.strategy.reduce(t, reduce_op="sum"))
        return fid.distance(moments) if trainer.is_global_zero else None

    @staticmethod
    def budgets(pl_module) -> list:
        """``sampler.nfe`` of the training config (the list form included), else the sampler's own."""
        config = (getattr(pl_module, "hparams", {}) or {}).get("config") or {}
        sampler_cfg = config.get("sampler") or {}
        if "nfe" in sampler_cfg:
            return nfe_budgets(sampler_cfg["nfe"])
        return nfe_budgets(getattr(pl_module.sampler, "keywords", {}).get("nfe"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self.last_step:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if trainer.global_step != self.last_step:
            self.run(trainer, pl_module)

    def run(self, trainer, pl_module) -> list[dict]:
        if pl_module.sampler is None:
            return []
        self.last_step = step = trainer.global_step
        out_dir = Path(self.out_dir or trainer.default_root_dir)
        rows, images = [], {}
        for nfe in self.budgets(pl_module):
            sampler = configure(pl_module.sampler, nfe=nfe) if nfe is not None else pl_module.sampler
            x, shard, used = self.draw(trainer, pl_module, sampler)  # every rank samples its share
            fid = self.sharded_fid(trainer, pl_module, shard)  # a collective: every rank takes part
            if not trainer.is_global_zero:
                continue
            nfe = used if nfe is None else nfe
            if fid is not None:
                metrics = {"fid": fid}
            else:
                metrics = evaluate_samples(trainer.datamodule, x, self.seed, pl_module.device, self.metrics)
            row = {"step": step, "nfe_budget": nfe, "nfe_used": used, **metrics}
            rows.append(row)
            for logger in trainer.loggers:  # logger API directly: self.log is not allowed in on_train_end
                logger.log_metrics({f"eval/{k}_nfe{nfe}": v for k, v in metrics.items()}, step=step)
            images[f"samples/nfe{nfe}"] = preview(
                trainer.datamodule, x, out_dir / "samples" / f"step{step:07d}_nfe{nfe}.png"
            )
            log.info(
                "step %d NFE %d (used %d): %s", step, nfe, used, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            )
        if not trainer.is_global_zero:
            return []
        preview(trainer.datamodule, x, out_dir / "grid.png")
        self.history.extend(rows)
        write_rows(out_dir / "eval_metrics.csv", self.history)
        plot = plot_metric_vs_nfe(rows, out_dir / "metric_vs_nfe.png", title=f"step {step}")
        if plot is not None:
            images["eval/metric_vs_nfe"] = plot
        log_images(trainer.loggers, images, step)
        return rows


def plot_metric_vs_nfe(rows: list[dict], path: Path, title: str = "") -> Path | None:
    """One panel per metric (those of HEADLINE_METRICS the rows hold, else every numeric column): metric vs NFE."""
    metrics = [k for k in HEADLINE_METRICS if any(k in r for r in rows)] or [
        k
        for k in dict.fromkeys(k for r in rows for k in r)
        if k not in ("step", "nfe_budget", "nfe_used", "seconds") and all(_is_number(r.get(k)) for r in rows)
    ]
    if not rows or not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, key in zip(axes[0], metrics):
        pts = sorted((int(r["nfe_budget"]), float(r[key])) for r in rows if _is_number(r.get(key)))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        ax.set(xscale="log", xlabel="NFE", ylabel=key, title=title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _is_number(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def log_images(loggers, images: dict, step: int) -> None:
    """Image files to the loggers that take images (W&B); the CSV logger keeps the files on disk only."""
    for logger in loggers:
        if hasattr(logger, "log_image"):
            keys = [k for k, v in images.items() if v is not None and Path(v).is_file()]
            for key in keys:
                logger.log_image(key=key, images=[str(images[key])], step=step)


class RankNoiseStreams(pl.Callback):
    """Per-rank noise streams under DDP, checkpointed per rank.

    ``seed_everything(seed)`` runs before the processes start, so without this every rank would draw the
    same diffusion times t and noise ε (the noise half of the gradient identical on all ranks). At ``setup``
    rank r of a multi-process run re-seeds its global RNGs (torch CPU + CUDA, numpy, random) with
    ``seed + r``; on save, every rank's torch (and CUDA) RNG state is gathered into the checkpoint
    (``checkpoint["rng_per_rank"]``), and on resume with the same world size each rank gets its own state
    back (the data position is restored by the resumable loader), so an N-process resume continues the
    same streams. On another world size rank r is re-seeded from (seed + r, global step) instead: the run
    is reproducible but not the uninterrupted one. With one process this callback does nothing, so the
    single-device path (and its bit-exact resume via ``DiffusionModule.on_save_checkpoint``) is unchanged.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def setup(self, trainer, pl_module, stage):
        if trainer.world_size > 1:
            pl.seed_everything(self.seed + trainer.global_rank, workers=True, verbose=False)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.world_size <= 1:
            return
        device = trainer.strategy.root_device
        states = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(device)
        gathered = {}
        for key, state in states.items():  # a collective: every rank runs dump_checkpoint, rank 0 writes
            stacked = trainer.strategy.all_gather(state.to(device))
            gathered[key] = [s.cpu().clone() for s in stacked]  # own storage: set_rng_state ignores views' offsets
        checkpoint["rng_per_rank"] = {"world_size": trainer.world_size, **gathered}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.world_size <= 1:
            return
        saved = checkpoint.get("rng_per_rank")
        rank = trainer.global_rank
        if saved is not None and saved["world_size"] == trainer.world_size:
            torch.set_rng_state(saved["torch"][rank].clone())
            device = trainer.strategy.root_device
            if "cuda" in saved and device.type == "cuda":
                torch.cuda.set_rng_state(saved["cuda"][rank].clone(), device)
            return
        step = int(checkpoint.get("global_step", 0))
        log.warning(
            "checkpoint has no per-rank RNG states for %d processes: rank %d re-seeded from (seed + rank, step %d)",
            trainer.world_size,
            rank,
            step,
        )
        pl.seed_everything((self.seed + rank + 1_000_003 * step) % 2**32, workers=True, verbose=False)
