"""Samplers: pure functions ``(process, score_fn, prior_z, *, nfe, generator, …) -> (z, nfe_used)``."""

from .ams import adaptive_momentum
from .base import CountingScore, SamplerConfigError, check_options, check_support, configure, time_grid, unwrap
from .em import euler_maruyama
from .expint import exponential_integrator
from .ode import probability_flow
from .pc import predictor_corrector
from .splitting import lie_trotter, sscs

# For error messages only ("valid samplers for this process: …"); Hydra `_target_` builds samplers.
ALL_SAMPLERS = {
    f.sampler_name: f
    for f in (
        euler_maruyama,
        predictor_corrector,
        probability_flow,
        sscs,
        lie_trotter,
        adaptive_momentum,
        exponential_integrator,
    )
}


def valid_samplers(process) -> list[str]:
    return sorted(name for name, f in ALL_SAMPLERS.items() if f.supports(process))


__all__ = [
    "ALL_SAMPLERS",
    "adaptive_momentum",
    "CountingScore",
    "SamplerConfigError",
    "check_options",
    "check_support",
    "configure",
    "euler_maruyama",
    "exponential_integrator",
    "lie_trotter",
    "predictor_corrector",
    "probability_flow",
    "sscs",
    "time_grid",
    "unwrap",
    "valid_samplers",
]
