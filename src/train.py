"""python src/train.py [group=option …] [key=value …]  (see conf/train.yaml).

The repository's entry point: the same app as `python -m momentum_diffusion.train` (configs in conf/).
"""

from momentum_diffusion.cli.launch import run_app
from momentum_diffusion.train import main

if __name__ == "__main__":
    run_app(main)
