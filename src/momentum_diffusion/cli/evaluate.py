"""Evaluation entry point (src/evaluate.py): checkpoint × sampler × budgets of sampler.nfe → DIR/metrics.csv."""

from __future__ import annotations

import logging
import time

from hydra.utils import instantiate
from omegaconf import DictConfig

from ..choices import check_choice
from ..lightning.evaluation import evaluate_samples, preview, uses_fid
from ..metrics.fid import FIDUnavailable, check_fid_available
from ..samplers import configure
from ..samplers.budget import nfe_budgets
from ..tables import write_rows
from .common import UserError, module_from_checkpoint, one_line_errors, run_sampler_config
from .drawing import draw_samples, start_sampling_run

log = logging.getLogger(__name__)


@one_line_errors
def evaluate(cfg: DictConfig):
    out_dir, n, batch = start_sampling_run(cfg)
    check_choice("metric", cfg.metric, ("auto", "fid", "nll"), UserError)
    module, config = module_from_checkpoint(cfg.ckpt, cfg.get("sampler"), cfg.device)
    sampler_cfg = run_sampler_config(cfg.get("sampler"), config.get("sampler")) or {}
    nfes = nfe_budgets(sampler_cfg.get("nfe"))  # sampler.nfe: one budget or a list (one row each)
    sampler_name = module.sampler.func.sampler_name
    out_dir.mkdir(parents=True, exist_ok=True)
    datamodule = instantiate(config["data"])
    datamodule.prepare_data()
    datamodule.setup("fit")
    settings = dict(cfg.get("metrics") or {})
    if cfg.metric == "fid" and not uses_fid(datamodule):
        raise UserError(f"metric=fid needs image data; {type(datamodule).__name__} is scored by metric=auto")
    if uses_fid(datamodule) and cfg.metric != "nll":
        try:  # before any sampling: one line naming the weights file and where to get it
            check_fid_available(settings.get("inception_weights"))
        except FIDUnavailable as exc:
            raise UserError(str(exc)) from None
    rows = []
    for nfe in nfes:
        start = time.perf_counter()
        if cfg.metric == "nll":
            from ..metrics.likelihood import nll_bits_per_dim

            x0 = datamodule.reference_data(n).to(module.device)
            tol = float(settings.get("nll_tolerance") or 1e-5)  # dopri5 rtol = atol (score_sde: 1e-5)
            metrics, used = nll_bits_per_dim(module.process, module.score_fn(), x0, seed=cfg.seed, rtol=tol, atol=tol)
        else:
            sampler = configure(module.sampler, nfe=nfe) if nfe is not None else module.sampler
            x, used = draw_samples(module, n, batch, cfg.seed, sampler, f"{sampler_name} NFE {nfe}")
            metrics = evaluate_samples(datamodule, x, cfg.seed, module.device, settings)
            # DIR/samples/nfe<N>.png (grid, scatter or drawn graphs), for sweep reports
            preview(datamodule, x, out_dir / "samples" / f"nfe{nfe if nfe is not None else used}.png")
        rows.append(
            {
                "sampler": sampler_name,
                "nfe_budget": nfe if nfe is not None else used,
                "nfe_used": used,
                **metrics,
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
        log.info("%s", rows[-1])
        write_rows(out_dir / "metrics.csv", rows)
        if cfg.metric == "nll":
            break  # the likelihood does not depend on the sampler's budget
    return rows
