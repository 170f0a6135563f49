"""python -m momentum_diffusion.train [group=option …] [key=value …]  (conf/train.yaml).

The configs ship with the package (``momentum_diffusion/conf``, the repository's ``conf/``), so this runs in any
directory; outputs go under the current directory (``hydra.run.dir=…`` to choose)."""

import hydra

from . import CONF_DIR
from .cli.launch import run_app
from .cli.train import train


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg):
    train(cfg)


if __name__ == "__main__":
    run_app(main)
