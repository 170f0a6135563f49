"""Variance-preserving SDE (Song et al. 2021, eq. 11): dx = −½ β(t) x dt + sqrt(β(t)) dW, order 1."""

from .core import LinearSDE, Process
from .schedules import LinearSchedule


def vp(beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5, t_max: float = 1.0) -> Process:
    return Process(
        name="vp",
        sde=LinearSDE([[-0.5]], [[1.0]]),
        schedule=LinearSchedule(beta_min, beta_max),
        initial_cov=[[0.0]],
        prior_cov=[[1.0]],
        t_min=t_min,
        t_max=t_max,
    )
