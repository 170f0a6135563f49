"""Run-level settings: the trainer's strategy checked before any work (one line); the CSV logger always on."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .common import UserError

PRESETS = "trainer=ddp (one node) | ddp_multinode (trainer.num_nodes) | ddp_cpu (gloo)"


def check_strategy(trainer_cfg) -> None:
    """``trainer.strategy`` is a Lightning strategy name or a ``_target_`` that imports; else one line."""
    strategy = trainer_cfg.get("strategy") if trainer_cfg is not None else None
    if strategy is None:
        return
    if isinstance(strategy, str):
        from lightning.pytorch.strategies import StrategyRegistry

        names = ["auto", *StrategyRegistry.available_strategies()]
        if strategy not in names:
            common = [n for n in names if n in ("auto", "ddp", "ddp_spawn", "fsdp", "deepspeed", "single_device")]
            raise UserError(
                f"trainer.strategy={strategy!r} is not a Lightning strategy (e.g. {', '.join(common)}); "
                f"or use {PRESETS}"
            )
        return
    target = strategy.get("_target_") if hasattr(strategy, "get") else None
    if target is None:
        return
    module, _, name = str(target).rpartition(".")
    try:
        found = hasattr(importlib.import_module(module), name) if module else False
    except ImportError:
        found = False
    if not found:
        raise UserError(f"trainer.strategy._target_={target!r} cannot be imported; use {PRESETS}")


def with_csv_logger(loggers: list, save_dir) -> list:
    """The loggers, plus a CSVLogger writing ``save_dir/logs/metrics.csv`` when none is configured (e.g. a
    ``logger=wandb`` run with ``logger.csv=null``): the CSV log is what sweep reports and resumes read."""
    from lightning.pytorch.loggers import CSVLogger

    if any(isinstance(lg, CSVLogger) for lg in loggers):
        return loggers
    return [CSVLogger(save_dir=str(save_dir), name="logs", version=""), *loggers]


# hydra/launcher and hydra/sweeper choices: Hydra's own, this project's conf/hydra/*, and the plugins they need
CHOICES = {
    "hydra/launcher": {"basic": None, "submitit_slurm": "slurm", "submitit_local": "slurm"},
    "hydra/sweeper": {"basic": None, "tune": "tune", "optuna": "tune"},
}
PLUGIN_MODULES = {"slurm": "hydra_plugins.hydra_submitit_launcher", "tune": "hydra_plugins.hydra_optuna_sweeper"}


def check_launcher_args(argv: list[str]) -> str | None:
    """One line for a bad ``hydra/launcher=…`` / ``hydra/sweeper=…`` or a missing optional plugin (else None);
    the entry points print it and exit 2 before Hydra starts (Hydra's own message spans many lines)."""
    import importlib.util

    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in CHOICES:
            continue
        options = CHOICES[key]
        if value not in options:
            return f"error: {key}={value} is not available; valid: {', '.join(options)}"
        extra = options[value]
        if extra is not None and importlib.util.find_spec(PLUGIN_MODULES[extra]) is None:
            return f"error: {key}={value} needs the [{extra}] extra: pip install -e '.[{extra}]'"
    return None


def own_sampler_overrides(argv: list[str]) -> list[str]:
    """sample.py / evaluate.py without ``sampler=NAME`` run the checkpoint's own sampler, whose options the
    composed config does not have (conf/evaluate.yaml holds only sampler.nfe): ``sampler.KEY=V`` becomes
    ``++sampler.KEY=V``, and ``build_sampler`` checks KEY against that sampler (one line for a typo)."""
    if any(arg.lstrip("+~").startswith("sampler=") for arg in argv):
        return argv
    out = []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        out.append(f"++{arg}" if sep and key.startswith("sampler.") and key != "sampler.nfe" else arg)
    return out


def run_app(main: Callable[[], object]) -> None:
    """Run a ``@hydra.main`` entry point after the one-line checks that must come before Hydra starts: a bad
    ``hydra/launcher=…`` / ``hydra/sweeper=…`` (exit 2) and an unusable output directory (``check_output_dir``).
    An app marked ``runs_checkpoint_sampler`` (sample, evaluate) gets ``own_sampler_overrides``."""
    import sys

    from .run_dir import check_output_dir

    if problem := check_launcher_args(sys.argv[1:]):
        print(problem, file=sys.stderr)
        sys.exit(2)
    check_output_dir(sys.argv[1:])
    if getattr(main, "runs_checkpoint_sampler", False):
        sys.argv[1:] = own_sampler_overrides(sys.argv[1:])
    main()
