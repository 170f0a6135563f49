"""python src/sample.py [group=option …] [key=value …]  (see conf/sample.yaml).

The repository's entry point: the same app as `python -m momentum_diffusion.sample` (configs in conf/).
"""

from momentum_diffusion.cli.launch import run_app
from momentum_diffusion.sample import main

if __name__ == "__main__":
    run_app(main)
