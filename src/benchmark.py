"""python src/benchmark.py gmm=SPEC diffusion=NAME sampler=NAME 'sampler.nfe=[…]' n_samples=N (conf/benchmark.yaml).

The repository's entry point: the same app as `python -m momentum_diffusion.benchmark` (configs in conf/).
"""

from momentum_diffusion.benchmark import main
from momentum_diffusion.cli.launch import run_app

if __name__ == "__main__":
    run_app(main)
