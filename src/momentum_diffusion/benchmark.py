"""python -m momentum_diffusion.benchmark gmm=SPEC diffusion=NAME sampler=NAME 'sampler.nfe=[…]' (conf/benchmark.yaml).

The configs ship with the package (``momentum_diffusion/conf``, the repository's ``conf/``), so this runs in any
directory; outputs go under the current directory (``hydra.run.dir=…`` to choose)."""

import hydra

from . import CONF_DIR
from .cli.benchmark import benchmark
from .cli.launch import run_app
from .cli.tuning import objective


@hydra.main(config_path=str(CONF_DIR), config_name="benchmark", version_base="1.3")
def main(cfg):
    rows = benchmark(cfg)
    return objective(rows, cfg.get("tune_metric"))  # the value hydra/sweeper=tune minimises


if __name__ == "__main__":
    run_app(main)
