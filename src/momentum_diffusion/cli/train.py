"""Training entry point (src/train.py): Hydra config → data, process, objective, network → Lightning fit."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ..lightning.callbacks import RankNoiseStreams
from ..lightning.checkpointing import AtomicCheckpointIO
from ..lightning.console import silence_known_noise
from ..lightning.module import NonFiniteTrainingError
from ..lightning.preemption import PREEMPTED_EXIT_CODE, SIGTERMException
from .common import (
    UserError,
    build_module,
    build_sampler,
    check_resume_checkpoint,
    one_line_errors,
    set_threads,
    to_dict,
    validate_train_config,
)
from .launch import check_strategy, with_csv_logger
from .run_dir import claim_run_dir

log = logging.getLogger(__name__)


@one_line_errors
def train(cfg: DictConfig):
    claim_run_dir(HydraConfig.get().runtime.output_dir)  # one run per directory; stale save temporaries removed
    validate_train_config(cfg)  # seed, threads, optim.*: one line naming the key
    check_strategy(cfg.trainer)  # a bad trainer.strategy: one line, before any work
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    set_threads(cfg.get("threads"))
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    process = instantiate(cfg.diffusion, _convert_="all")
    build_sampler(cfg.sampler, process)  # fail on a bad sampler before loading data or building nets
    instantiate(cfg.objective).check_process(process)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")  # missing or malformed data fails here, with the path in the message
    with open_dict(cfg):
        cfg.data_shape = list(datamodule.data_shape)
    config = to_dict(cfg)
    module = build_module(config)
    if cfg.ckpt_path is not None:  # refuse a checkpoint of another process/model before Lightning loads it
        check_resume_checkpoint(cfg.ckpt_path, module)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    callbacks.append(RankNoiseStreams(cfg.seed))  # DDP: seed + rank per process; no-op on one device
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    loggers = with_csv_logger(loggers, out_dir)  # the CSV log is always kept (logs/metrics.csv)
    silence_known_noise()  # Lightning's cloud-logger advert, its torch LeafSpec deprecation
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()])
    OmegaConf.save(cfg, out_dir / "config.yaml")
    log.info(
        "training %s with %s on %s; outputs in %s",
        module.process.describe(),
        cfg.objective._target_,
        type(datamodule).__name__,
        out_dir,
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    except NonFiniteTrainingError as exc:  # one line for the user; the last good checkpoint stays as it was
        raise UserError(str(exc)) from None
    except SIGTERMException:  # SIGTERM/SIGINT: last.ckpt saved; not 0, so that the job is requeued
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
    return trainer
