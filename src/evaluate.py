"""python src/evaluate.py [group=option …] [key=value …]  (see conf/evaluate.yaml)."""

import hydra

from momentum_diffusion.cli.common import check_output_dir
from momentum_diffusion.cli.evaluate import evaluate


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg):
    evaluate(cfg)


if __name__ == "__main__":
    import sys

    check_output_dir(sys.argv[1:])
    main()
