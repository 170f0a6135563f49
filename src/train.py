"""python src/train.py [group=option …] [key=value …]  (see conf/train.yaml)."""

import hydra

from momentum_diffusion.cli.common import check_output_dir
from momentum_diffusion.cli.launch import check_launcher_args
from momentum_diffusion.cli.train import train


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg):
    train(cfg)


if __name__ == "__main__":
    import sys

    if problem := check_launcher_args(sys.argv[1:]):  # bad hydra/launcher or hydra/sweeper: one line
        print(problem, file=sys.stderr)
        sys.exit(2)
    check_output_dir(sys.argv[1:])
    main()
