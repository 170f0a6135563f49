"""momentum_diffusion: score-based diffusion in phase space (VP/VE, CLD, HOLD) on one linear core."""

__version__ = "0.1.0"
