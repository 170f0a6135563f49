"""Sampling entry point (src/sample.py): checkpoint + sampler → DIR/samples.npz (+ DIR/grid.png)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from ..lightning.evaluation import save_preview
from ..samplers.budget import nfe_budgets
from .common import (
    UserError,
    check_device,
    check_positive_int,
    check_seed,
    claim_run_dir,
    module_from_checkpoint,
    one_line_errors,
)
from .drawing import draw_samples

log = logging.getLogger(__name__)


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
