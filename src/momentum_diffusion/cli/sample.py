"""Sampling entry point (src/sample.py): checkpoint + sampler → DIR/samples.npz (+ DIR/grid.png)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..lightning.evaluation import save_preview
from ..samplers.budget import nfe_budgets
from .common import (
    UserError,
    check_device,
    check_positive_int,
    check_seed,
    claim_run_dir,
    make_generator,
    module_from_checkpoint,
    one_line_errors,
)

log = logging.getLogger(__name__)


def draw_samples(module, n: int, batch_size: int, seed: int, sampler=None, description: str = "sampling"):
    """n samples with a Rich progress bar that advances on every score evaluation."""
    sampler = sampler or module.sampler
    budget = getattr(sampler, "keywords", {}).get("nfe")
    n_batches = -(-n // batch_size)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task(description, total=budget * n_batches if budget else None)
        base_score = module.score_fn

        def score_with_progress(ema=True):
            score = base_score(ema)

            def call(z, t):
                bar.advance(task)
                return score(z, t)

            return call

        module.score_fn = score_with_progress
        try:
            gen = make_generator(seed, module.device)
            x, nfe = module.sample(n, sampler, generator=gen, batch_size=batch_size)
        finally:
            module.score_fn = base_score
    bad = int((~x.flatten(1).isfinite().all(1)).sum()) if x.numel() else 0
    if bad:  # never write or score NaN samples (they made evaluate.py fail with "Eigenvalues did not converge")
        name = getattr(getattr(sampler, "func", sampler), "sampler_name", type(sampler).__name__)
        raise UserError(
            f"{bad} of {n} samples are non-finite (sampler {name}, NFE {nfe}); nothing written or scored: "
            "try a larger sampler.nfe or another sampler"
        )
    return x, nfe


@one_line_errors
def sample(cfg: DictConfig):
    claim_run_dir(HydraConfig.get().runtime.output_dir)  # one run per directory
    n = check_positive_int("n_samples", cfg.n_samples)
    batch = check_positive_int("batch_size", cfg.batch_size)
    check_seed(cfg.seed)
    check_device(cfg.device)
    if len(nfe_budgets((cfg.get("sampler") or {}).get("nfe"))) > 1:
        raise UserError("sample.py draws at one budget: sampler.nfe=N (several: -m sampler.nfe=20,50 or evaluate.py)")
    module, config = module_from_checkpoint(cfg.ckpt, cfg.get("sampler"), cfg.device)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    x, nfe = draw_samples(module, n, batch, cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_cls = get_class(config["data"]["_target_"])
    if hasattr(data_cls, "export_samples"):  # graphs: adjacency, node_mask, features + drawn graphs
        datamodule = instantiate(config["data"])
        np.savez(out_dir / "samples.npz", samples=x.numpy(), nfe=nfe, **datamodule.export_samples(x))
        preview = datamodule.save_preview(x, out_dir / "graphs.png")
    else:
        np.savez(out_dir / "samples.npz", samples=x.numpy(), nfe=nfe)
        preview = save_preview(x, out_dir / ("grid.png" if x.dim() == 4 else "scatter.png"))
    log.info(
        "%d samples (NFE %d) with %s → %s, %s",
        n,
        nfe,
        getattr(module.sampler, "func", module.sampler).__name__,
        out_dir / "samples.npz",
        preview,
    )
    return x
