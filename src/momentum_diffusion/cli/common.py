"""Shared CLI plumbing: building components from config, loading checkpoints, one-line user errors."""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..choices import check_choice
from ..lightning.checkpointing import (
    CheckpointError,
    check_finite_weights,
    check_identity,
    check_weight_shapes,
    checkpoint_identity,
    load_checkpoint,
    weights_identity,
)
from ..lightning.module import LR_SCHEDULES, DiffusionModule
from ..samplers import check_options, check_support, configure
from ..samplers.budget import single_budget
from .errors import UserError, user_error_in
from .run_dir import remove_new_run_dir


def one_line_errors(fn: Callable) -> Callable:
    """Run a CLI body; user errors become `error: …` on stderr and exit code 2, bugs keep their traceback."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - filtered below
            err = user_error_in(exc)
            if err is None:
                raise
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if isinstance(err, KeyError):
                msg = f"missing key {msg}"
            print(f"error: {msg}", file=sys.stderr)
            remove_new_run_dir()
            sys.exit(2)

    return run


def to_dict(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_sampler(sampler_cfg, process):
    """Instantiate a sampler partial and validate it against the process before any work."""
    sampler = configure(instantiate(sampler_cfg))
    check_options(sampler)
    check_support(sampler, process)
    if "nfe" in sampler.keywords:  # sampler.nfe: N or a list (the largest; loops over it use nfe_budgets)
        sampler = configure(sampler, nfe=single_budget(sampler.keywords["nfe"]))
    return sampler


def run_sampler_config(cli_cfg, stored) -> dict | None:
    """The sampler config of a sample/evaluate run: ``sampler=NAME`` replaces the checkpoint's sampler;
    keys given without a name (``sampler.nfe=N``, ``sampler.snr=…``: cli/launch.py ``own_sampler_overrides``)
    change the checkpoint's own."""
    cli = to_dict(cli_cfg) if cli_cfg is not None else {}
    if "_target_" in cli:
        return cli
    changes = {k: v for k, v in cli.items() if v is not None}
    if stored is None:
        if changes:
            raise UserError(f"the checkpoint stores no sampler to change ({', '.join(changes)}); use sampler=NAME")
        return None
    return {**stored, **changes}


def build_module(config: dict, sampler=None) -> DiffusionModule:
    """The DiffusionModule described by a (resolved) training config."""
    process = instantiate(config["diffusion"], _convert_="all")
    objective = instantiate(config["objective"])
    net_factory = instantiate(config["model"], _convert_="all")
    if sampler is None and config.get("sampler") is not None:
        sampler = build_sampler(config["sampler"], process)
    data_shape = config.get("data_shape")
    if data_shape is None:
        raise UserError("config has no data_shape")
    # What the weights mean: process and its parameters, objective (K_t), network hyper-parameters.
    identity = {"model": config["model"]["_target_"], "data": config["data"]["_target_"], **weights_identity(config)}
    module = DiffusionModule(
        process,
        objective,
        net_factory,
        tuple(data_shape),
        sampler,
        identity=identity,
        config=config,
        **config.get("optim", {}),
    )
    module.allow_identity_change = bool(config.get("allow_identity_change", False))
    return module


def check_resume_checkpoint(path, module: DiffusionModule) -> dict:
    """Before Lightning loads ``ckpt_path``: a readable training checkpoint, finite weights, the same process,
    objective and network as the config (unless allow_identity_change=true), tensors that fit."""
    import logging

    ckpt = load_checkpoint(path)
    check_finite_weights(ckpt["state_dict"], path)
    diffs = check_identity(checkpoint_identity(ckpt), module.identity, module.allow_identity_change)
    if diffs:
        logging.getLogger(__name__).warning("allow_identity_change=true: resuming despite %s", "; ".join(diffs))
    try:
        check_weight_shapes(ckpt["state_dict"], module, path)
    except CheckpointError as exc:
        if not diffs:
            raise
        raise CheckpointError(
            f"{exc}; allow_identity_change=true cannot change the architecture ({'; '.join(diffs)})"
        ) from None
    return ckpt


def module_from_checkpoint(path, sampler_cfg=None, device: str = "cpu") -> tuple[DiffusionModule, dict]:
    """Rebuild the trained module from a checkpoint alone (its stored config), EMA weights included."""
    ckpt = load_checkpoint(path)
    config = ckpt["hyper_parameters"]["config"]
    check_finite_weights(ckpt["state_dict"], path)
    module = build_module(config)
    sampler_cfg = run_sampler_config(sampler_cfg, config.get("sampler"))
    if sampler_cfg is not None:
        module.sampler = build_sampler(sampler_cfg, module.process)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit its own config ({str(exc).splitlines()[0]})") from None
    module.eval().to(device)
    return module, config


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_seed(value, name: str = "seed") -> int:
    """Lightning would pick a random seed (with a warning) outside [0, 2**32), and sample.py truncated 1.5."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise UserError(f"{name} must be an integer in [0, 2**32), got {value!r}")
    return value


def check_threads(value, name: str = "threads") -> int | None:
    if value is None:
        return None
    return check_positive_int(name, value)


def set_threads(value) -> None:
    """torch's CPU threads from the ``threads`` key (null: torch's default), checked first."""
    threads = check_threads(value)
    if threads is not None:
        torch.set_num_threads(threads)


def check_device(value, name: str = "device") -> torch.device:
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise UserError(f"{name} must be cpu, cuda or cuda:N, got {value!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{name}={value}: no CUDA GPU is available on this machine; use {name}=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"{name}={value}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{name}={value}: MPS is not available on this machine; use {name}=cpu")
    elif device.type != "cpu":
        raise UserError(f"{name} must be cpu, cuda or cuda:N, got {value!r}")
    return device


def _number(name: str, value, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise UserError(f"{name} must be a number in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return float(value)


FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def check_optim(optim) -> None:
    """optim.* of train.py, each bad value named (lr=1e41 overflows float32; ema_decay=2 diverges)."""
    optim = dict(optim or {})
    if "lr" in optim:
        _number("optim.lr", optim["lr"], 0.0, FLOAT32_MAX, low_open=True)
    if "weight_decay" in optim:
        _number("optim.weight_decay", optim["weight_decay"], 0.0, FLOAT32_MAX)
    if "ema_decay" in optim:
        _number("optim.ema_decay", optim["ema_decay"], 0.0, 1.0)
    if "ema_warmup" in optim and not isinstance(optim["ema_warmup"], bool):
        raise UserError(f"optim.ema_warmup must be true or false, got {optim['ema_warmup']!r}")
    if "lr_schedule" in optim:
        check_choice("optim.lr_schedule", optim["lr_schedule"], LR_SCHEDULES, UserError)
    if "lr_decay" in optim:
        _number("optim.lr_decay", optim["lr_decay"], 0.0, 1.0, low_open=True)
    if "clip_subnetworks" in optim and not isinstance(optim["clip_subnetworks"], bool):
        raise UserError(f"optim.clip_subnetworks must be true or false, got {optim['clip_subnetworks']!r}")
    if "max_update_ratio" in optim and optim["max_update_ratio"] is not None:
        _number("optim.max_update_ratio", optim["max_update_ratio"], 0.0, FLOAT32_MAX)
    if "max_bad_steps" in optim:
        check_positive_int("optim.max_bad_steps", optim["max_bad_steps"])
    if "warmup_steps" in optim:
        w = optim["warmup_steps"]
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise UserError(f"optim.warmup_steps must be a non-negative integer, got {w!r}")
    if "betas" in optim:
        betas = optim["betas"]
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise UserError(f"optim.betas must be two numbers in [0, 1), got {betas!r}")
        for i, b in enumerate(betas):
            _number(f"optim.betas[{i}]", b, 0.0, 1.0, high_open=True)


def validate_train_config(cfg) -> None:
    """train.py's top-level scalars, before any work: each bad value named in one line."""
    check_seed(cfg.seed)
    check_threads(cfg.get("threads"))
    check_optim(to_dict(cfg.optim) if cfg.get("optim") is not None else {})
    schedule, max_steps = (cfg.get("optim") or {}).get("lr_schedule", "constant"), cfg.trainer.get("max_steps", -1)
    if schedule == "cosine" and not (isinstance(max_steps, int) and max_steps > 0):
        raise UserError(f"optim.lr_schedule={schedule} needs trainer.max_steps > 0, got {max_steps!r}")
    allow = cfg.get("allow_identity_change", False)
    if not isinstance(allow, bool):
        raise UserError(f"allow_identity_change must be true or false, got {allow!r}")


def make_generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))
