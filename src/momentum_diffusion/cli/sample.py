"""Sampling entry point (src/sample.py): checkpoint + sampler → DIR/samples.npz (+ DIR/grid.png)."""

from __future__ import annotations

import logging

import numpy as np
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from ..lightning.evaluation import save_preview
from ..samplers.budget import nfe_budgets
from .common import UserError, module_from_checkpoint, one_line_errors
from .drawing import draw_samples, start_sampling_run

log = logging.getLogger(__name__)


@one_line_errors
def sample(cfg: DictConfig):
    out_dir, n, batch = start_sampling_run(cfg)
    if len(nfe_budgets((cfg.get("sampler") or {}).get("nfe"))) > 1:
        raise UserError("sample.py draws at one budget: sampler.nfe=N (several: -m sampler.nfe=20,50 or evaluate.py)")
    module, config = module_from_checkpoint(cfg.ckpt, cfg.get("sampler"), cfg.device)
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
