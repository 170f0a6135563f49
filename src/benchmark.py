"""python src/benchmark.py gmm=SPEC diffusion=NAME sampler=NAME 'sampler.nfe=[…]' n_samples=N (conf/benchmark.yaml)."""

import hydra

from momentum_diffusion.cli.benchmark import benchmark
from momentum_diffusion.cli.common import check_output_dir
from momentum_diffusion.cli.launch import check_launcher_args
from momentum_diffusion.cli.tuning import objective


@hydra.main(config_path="../conf", config_name="benchmark", version_base="1.3")
def main(cfg):
    rows = benchmark(cfg)
    return objective(rows, cfg.get("tune_metric"))  # the value hydra/sweeper=tune minimises


if __name__ == "__main__":
    import sys

    if problem := check_launcher_args(sys.argv[1:]):  # bad hydra/launcher or hydra/sweeper: one line
        print(problem, file=sys.stderr)
        sys.exit(2)
    check_output_dir(sys.argv[1:])
    main()
