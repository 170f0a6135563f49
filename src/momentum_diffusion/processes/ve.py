"""Variance-exploding SDE (Song et al. 2021, eq. 9): dx = sqrt(dσ²(t)/dt) dW, order 1, A = 0."""

from .core import LinearSDE, Process
from .schedules import GeometricVarianceSchedule


def ve(sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5, t_max: float = 1.0) -> Process:
    schedule = GeometricVarianceSchedule(sigma_min, sigma_max)
    return Process(
        name="ve",
        sde=LinearSDE([[0.0]], [[1.0]]),
        schedule=schedule,
        initial_cov=[[0.0]],
        prior_cov=[[float(schedule.tau(t_max))]],
        t_min=t_min,
        t_max=t_max,
    )
