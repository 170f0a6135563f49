"""``sampler.nfe``: the one NFE knob of every entry point.

A sampler's budget is ``sampler.nfe`` in train.py (its end-of-training / periodic evaluation), sample.py,
evaluate.py and benchmark.py. It is an integer N, or a list ``[N1, N2, …]`` of the same key, meaning "the
same sampler at each of these budgets" (evaluate.py, benchmark.py and the training evaluation loop over
it; a sampler built from it, e.g. the one a checkpoint stores, runs at the largest). A Hydra multirun
``-m sampler.nfe=10,20`` is the other way to get several budgets: one job per budget.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import check_nfe


def nfe_budgets(value) -> list[int] | list[None]:
    """``sampler.nfe`` as a list of budgets (validated by ``check_nfe``: one function, one message);
    ``[None]`` when the sampler has no budget (adaptive ODE configs without ``nfe``)."""
    if value is None:
        return [None]
    if isinstance(value, Sequence) and not isinstance(value, str) or type(value).__name__ == "ListConfig":
        values = list(value)
        if not values:
            check_nfe(value)  # raises with the one message
        return [check_nfe(v) for v in values]
    return [check_nfe(value)]


def single_budget(value) -> int | None:
    """The budget a sampler built from ``sampler.nfe`` runs at: N, or the largest of a list."""
    budgets = nfe_budgets(value)
    return None if budgets == [None] else max(budgets)


__all__ = ["nfe_budgets", "single_budget"]
