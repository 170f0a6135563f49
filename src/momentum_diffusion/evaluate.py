"""python -m momentum_diffusion.evaluate ckpt=PATH [group=option …] [key=value …]  (conf/evaluate.yaml).

The configs ship with the package (``momentum_diffusion/conf``, the repository's ``conf/``), so this runs in any
directory; outputs go under the current directory (``hydra.run.dir=…`` to choose)."""

import hydra

from . import CONF_DIR
from .cli.evaluate import evaluate
from .cli.launch import run_app


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def main(cfg):
    evaluate(cfg)


main.runs_checkpoint_sampler = True  # sampler.KEY=V changes its options (cli/launch.py run_app)

if __name__ == "__main__":
    run_app(main)
