"""momentum_diffusion: score-based diffusion in phase space (VP/VE, CLD, HOLD) on one linear core."""

from pathlib import Path

__version__ = "0.1.0"

#: the Hydra configs, shipped as package data (in the repository a symlink to its ``conf/``, the one copy users edit)
CONF_DIR = Path(__file__).resolve().parent / "conf"
