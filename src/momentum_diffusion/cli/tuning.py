"""Tuned baselines with ``hydra/sweeper=tune`` (Hydra's Optuna sweeper; the ``[tune]`` extra).

``search_space`` is the sweeper's ``custom_search_space``: it picks the free parameter of the sampler being
tuned — ``sampler.snr`` for PC and AMS (log-uniform in [0.01, 0.6]), ``sampler.stochasticity`` = λ for expint
(uniform in [0, 1]) — so one sweeper config serves every sampler. ``objective`` turns a benchmark's / evaluation's rows
into the number Optuna minimises: the mean over the run's budgets of log10(metric) (non-finite = 1e9). A
study is per NFE budget: run one per ``sampler.nfe`` (README, "Tuned baselines").
"""

from __future__ import annotations

import math

TUNABLE = {
    "predictor_corrector": ("sampler.snr", 0.01, 0.6, True),
    "adaptive_momentum": ("sampler.snr", 0.01, 0.6, True),
    "exponential_integrator": ("sampler.stochasticity", 0.0, 1.0, False),
}


def search_space(cfg, trial) -> None:
    target = str(cfg.sampler.get("_target_", ""))
    name = target.rsplit(".", 1)[-1]
    if name not in TUNABLE:
        raise ValueError(
            f"hydra/sweeper=optuna tunes pc / ams (sampler.snr) and expint (sampler.stochasticity = λ); "
            f"{target} has no tuned parameter"
        )
    key, low, high, log = TUNABLE[name]
    trial.suggest_float(key, low, high, log=log)


def objective(rows: list[dict], metric: str | None) -> float | None:
    """mean over budgets of log10(rows[metric]); None when metric is None (no tuning)."""
    if not metric:
        return None
    values = [r.get(metric) for r in rows]
    if not values or any(v is None for v in values):
        raise ValueError(
            f"tune_metric={metric!r} is not a column of these rows ({', '.join(rows[0]) if rows else 'none'})"
        )
    logs = [math.log10(v) if v is not None and math.isfinite(v) and v > 0 else 9.0 for v in map(float, values)]
    return sum(logs) / len(logs)
