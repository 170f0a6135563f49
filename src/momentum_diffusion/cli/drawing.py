"""What sample.py and evaluate.py share: the run's checks, and drawing samples with a progress bar."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .common import (
    UserError,
    check_device,
    check_positive_int,
    check_seed,
    make_generator,
    set_threads,
)
from .run_dir import claim_run_dir


def start_sampling_run(cfg) -> tuple[Path, int, int]:
    """Claim the run directory (one run per directory) and check the options of a checkpoint-sampling run
    before any work; returns (run directory, n_samples, batch_size)."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    claim_run_dir(out_dir)
    n = check_positive_int("n_samples", cfg.n_samples)
    batch = check_positive_int("batch_size", cfg.batch_size)
    check_seed(cfg.seed)
    check_device(cfg.device)
    set_threads(cfg.get("threads"))
    if cfg.get("nfe") is not None:  # `nfe=…` is short for sampler.nfe=… (and wins over it)
        with open_dict(cfg):
            cfg.sampler = cfg.get("sampler") or {}
            cfg.sampler.nfe = cfg.nfe
    return out_dir, n, batch


def draw_samples(module, n: int, batch_size: int, seed: int, sampler=None, description: str = "sampling"):
    """n samples with a Rich progress bar that advances on every network evaluation; non-finite samples are an
    error (never written or scored)."""
    sampler = sampler or module.sampler
    budget = getattr(sampler, "keywords", {}).get("nfe")
    n_batches = -(-n // batch_size)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task(description, total=budget * n_batches if budget else None)
        gen = make_generator(seed, module.device)
        x, nfe = module.sample(n, sampler, generator=gen, batch_size=batch_size, observer=lambda: bar.advance(task))
    bad = int((~x.flatten(1).isfinite().all(1)).sum()) if x.numel() else 0
    if bad:  # never write or score NaN samples (they made evaluate.py fail with "Eigenvalues did not converge")
        name = getattr(getattr(sampler, "func", sampler), "sampler_name", type(sampler).__name__)
        raise UserError(
            f"{bad} of {n} samples are non-finite (sampler {name}, NFE {nfe}); nothing written or scored: "
            "try a larger sampler.nfe or another sampler"
        )
    return x, nfe
