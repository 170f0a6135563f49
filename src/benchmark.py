"""python src/benchmark.py gmm=SPEC diffusion=NAME sampler=NAME 'sampler.nfe=[…]' n_samples=N seed=S (conf/benchmark.yaml)."""

import hydra

from momentum_diffusion.cli.benchmark import benchmark
from momentum_diffusion.cli.common import check_output_dir


@hydra.main(config_path="../conf", config_name="benchmark", version_base="1.3")
def main(cfg):
    benchmark(cfg)


if __name__ == "__main__":
    import sys

    check_output_dir(sys.argv[1:])
    main()
