"""Linear phase-space processes: one core (core.py) and thin definitions on it."""

from .cld import cld
from .core import LinearSDE, Process, apply_blocks, psd_sqrt, solve_lyapunov
from .hold import critically_damped_chain, hold
from .schedules import ConstantSchedule, GeometricVarianceSchedule, LinearSchedule
from .ve import ve
from .vp import vp

__all__ = [
    "ConstantSchedule",
    "GeometricVarianceSchedule",
    "LinearSDE",
    "LinearSchedule",
    "Process",
    "apply_blocks",
    "cld",
    "critically_damped_chain",
    "hold",
    "psd_sqrt",
    "solve_lyapunov",
    "ve",
    "vp",
]
