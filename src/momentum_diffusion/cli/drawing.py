"""Drawing samples from a checkpoint's module with a progress bar, shared by sample.py and evaluate.py."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .common import UserError, make_generator


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
