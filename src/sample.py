"""python src/sample.py [group=option …] [key=value …]  (see conf/sample.yaml)."""

import hydra

from momentum_diffusion.cli.common import check_output_dir
from momentum_diffusion.cli.sample import sample


@hydra.main(config_path="../conf", config_name="sample", version_base="1.3")
def main(cfg):
    sample(cfg)


if __name__ == "__main__":
    import sys

    check_output_dir(sys.argv[1:])
    main()
