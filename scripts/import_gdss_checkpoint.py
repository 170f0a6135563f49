"""GDSS's released checkpoint → a momentum_diffusion checkpoint that sample.py / evaluate.py / graph_measure.py load.

    python scripts/import_gdss_checkpoint.py GDSS/checkpoints/community_small/gdss_community_small.pth \
        --data-root GRAPHS --out gdss_community_small.ckpt
    python src/evaluate.py ckpt=gdss_community_small.ckpt 'nfe=[2000]' n_samples=1024

The network is GraphScoreNetwork with GDSS's sizes and weights (networks/gdss_weights.py: the same function,
checked to the bit against GDSS's code); the process is VP with GDSS's β range; the stored sampler is GDSS's
(PC, Euler predictor + one Langevin step, its snr and corrector noise scale, 1000 steps = 2000 NFE). The sampled
copy (``ema.*``) holds the weights GDSS samples with (``sample.use_ema`` of its config: the trained weights for
community_small and ego_small); ``--weights ema|raw`` overrides. Node counts are drawn from the data set's training
split (GDSS's ``init_flags``), so ``--data-root`` must hold the data set (the folder of the published lists).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from momentum_diffusion.cli.common import build_module, to_dict  # noqa: E402
from momentum_diffusion.networks.gdss_weights import (  # noqa: E402
    GdssCheckpointError,
    gdss_ema_state,
    gdss_settings,
    graph_score_state_from_gdss,
    read_gdss_checkpoint,
)


def compose_config(settings: dict, data_root: str | None, nfe: int):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    data = settings["data"]["name"]
    overrides = [
        f"data={data}",
        f"data.root={data_root}" if data_root else "data.root=null",
        f"data.max_nodes={settings['data']['max_nodes']}",
        f"data.n_features={settings['data']['n_features']}",
        "diffusion=vp",
        *(f"diffusion.{k}={v}" for k, v in settings["diffusion"].items()),
        f"model=for_{data}",
        *(f"model.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in settings["model"].items()),
        "sampler=pc",
        f"sampler.nfe=[{nfe}]",
        *(f"sampler.{k}={v}" for k, v in settings["sampler"].items()),
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def without_run_dir(cfg, folder: Path):
    """The config with Hydra's run directory (unset outside a Hydra run) replaced by ``folder``."""
    from omegaconf import OmegaConf

    def swap(value):
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        if isinstance(value, str):
            return value.replace("${hydra:runtime.output_dir}", str(folder))
        return value

    return OmegaConf.create(swap(OmegaConf.to_container(cfg, resolve=False)))


def import_gdss(path, data_root: str | None, out, weights: str = "gdss", nfe: int = 2000) -> Path:
    """Write ``out``: a checkpoint of GDSS's model at ``path`` (module docstring); returns its path."""
    from hydra.utils import instantiate
    from omegaconf import open_dict

    gdss = read_gdss_checkpoint(path)
    settings = gdss_settings(gdss)
    cfg = compose_config(settings, data_root, nfe)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # missing data: one line naming the folder and the files
    with open_dict(cfg):
        cfg.data_shape = list(datamodule.data_shape)
    config = to_dict(without_run_dir(cfg, Path(out).parent))
    module = build_module(config)
    trained = graph_score_state_from_gdss(gdss["x_state_dict"], gdss["adj_state_dict"], module.net)
    ema_x = gdss_ema_state(gdss["ema_x"], gdss["x_state_dict"])
    averaged = graph_score_state_from_gdss(ema_x, gdss_ema_state(gdss["ema_adj"], gdss["adj_state_dict"]), module.net)
    use_ema = settings["use_ema"] if weights == "gdss" else weights == "ema"
    module.net.load_state_dict(trained)
    module.ema.load_state_dict(averaged if use_ema else trained)
    for net in (module.net, module.ema):  # node counts recorded as in training (GDSS: init_flags from the train split)
        net.train().condition_on_data(datamodule.train_vectors)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = {"path": str(path), "sampled_weights": "ema" if use_ema else "trained"}
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": {"identity": module.identity, "config": config},
            "global_step": 0,
            "gdss": source,
        },
        out,
    )
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("gdss_checkpoint", help="GDSS's .pth (checkpoints/<data>/gdss_<data>.pth)")
    p.add_argument("--data-root", default=None, help="folder of the data set (the published graph lists)")
    p.add_argument("--out", required=True, help="the checkpoint to write")
    weights = ("gdss", "ema", "raw")
    p.add_argument("--weights", choices=weights, default="gdss", help="weights to sample (gdss: its config's)")
    p.add_argument("--nfe", type=int, default=2000, help="stored sampler budget (GDSS: 1000 PC steps = 2000 NFE)")
    args = p.parse_args(argv)
    try:
        out = import_gdss(args.gdss_checkpoint, args.data_root, args.out, args.weights, args.nfe)
    except (GdssCheckpointError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
