"""Shared CLI plumbing: building components from config, loading checkpoints, one-line user errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..lightning.checkpointing import CheckpointError, load_checkpoint
from ..lightning.module import DiffusionModule
from ..samplers import configure, valid_samplers
from ..samplers.base import SamplerConfigError
from ..samplers.budget import single_budget


class UserError(Exception):
    """Bad input that the user must fix; printed as one line, exit code 2."""


USER_ERRORS = (UserError, ValueError, FileNotFoundError, PermissionError, NotADirectoryError, KeyError)


def user_error_in(exc: BaseException) -> BaseException | None:
    """The outermost user error in an exception chain (Hydra wraps errors raised by _target_ calls)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, USER_ERRORS):
            return exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


def check_output_dir(argv: list[str]) -> None:
    """Fail in one line, before Hydra starts, when the run directory cannot be created or written
    (a permission check alone is not enough: root passes os.access on read-only mounts)."""
    import tempfile
    from pathlib import Path

    target = next((a.split("=", 1)[1] for a in argv if a.startswith(("hydra.run.dir=", "hydra.sweep.dir="))), ".")
    try:
        Path(target).expanduser().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=Path(target).expanduser()):
            pass
    except OSError as exc:
        print(
            f"error: output directory {target} is not writable ({exc.strerror or type(exc).__name__})", file=sys.stderr
        )
        sys.exit(2)


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
            sys.exit(2)

    return run


def to_dict(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_sampler(sampler_cfg, process):
    """Instantiate a sampler partial and validate it against the process before any work."""
    sampler = configure(instantiate(sampler_cfg))
    fn = sampler.func
    if not fn.supports(process):
        raise SamplerConfigError(
            f"sampler '{fn.sampler_name}' does not support diffusion '{process.name}' ({fn.requirement}); "
            f"valid samplers for {process.name}: {', '.join(valid_samplers(process))}"
        )
    if "nfe" in sampler.keywords:  # sampler.nfe: N or a list (the largest; loops over it use nfe_budgets)
        sampler = configure(sampler, nfe=single_budget(sampler.keywords["nfe"]))
    return sampler


def run_sampler_config(cli_cfg, stored) -> dict | None:
    """The sampler config of a sample/evaluate run: ``sampler=NAME`` replaces the checkpoint's sampler;
    keys given without a name (``sampler.nfe=N``, ``+sampler.snr=…``) change the checkpoint's own."""
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
    identity = {"model": config["model"]["_target_"], "data": config["data"]["_target_"]}
    return DiffusionModule(
        process,
        objective,
        net_factory,
        tuple(data_shape),
        sampler,
        identity=identity,
        config=config,
        **config.get("optim", {}),
    )


def module_from_checkpoint(path, sampler_cfg=None, device: str = "cpu") -> tuple[DiffusionModule, dict]:
    """Rebuild the trained module from a checkpoint alone (its stored config), EMA weights included."""
    ckpt = load_checkpoint(path)
    config = ckpt["hyper_parameters"]["config"]
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


def make_generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))
