"""python src/evaluate.py [group=option …] [key=value …]  (see conf/evaluate.yaml).

The repository's entry point: the same app as `python -m momentum_diffusion.evaluate` (configs in conf/).
"""

from momentum_diffusion.cli.launch import run_app
from momentum_diffusion.evaluate import main

if __name__ == "__main__":
    run_app(main)
