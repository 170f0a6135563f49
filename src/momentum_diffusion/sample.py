"""python -m momentum_diffusion.sample ckpt=PATH [group=option …] [key=value …]  (conf/sample.yaml).

The configs ship with the package (``momentum_diffusion/conf``, the repository's ``conf/``), so this runs in any
directory; outputs go under the current directory (``hydra.run.dir=…`` to choose)."""

import hydra

from . import CONF_DIR
from .cli.launch import run_app
from .cli.sample import sample


@hydra.main(config_path=str(CONF_DIR), config_name="sample", version_base="1.3")
def main(cfg):
    sample(cfg)


main.runs_checkpoint_sampler = True  # sampler.KEY=V changes its options (cli/launch.py run_app)

if __name__ == "__main__":
    run_app(main)
