"""What a training run prints: a progress bar over optimiser steps, and the third-party messages a user cannot act
on silenced one by one (never a blanket filter)."""

from __future__ import annotations

import logging
import warnings

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from torch.utils.flop_counter import FlopCounterMode

from .throughput import batch_size_of

log = logging.getLogger(__name__)


class StepProgressBar(RichProgressBar):
    """Rich progress bar over optimiser steps, ``Step ━━━ 30/1500``, for a run bounded by ``trainer.max_steps``.

    Lightning's bar counts the batches of each epoch and labels it ``Epoch 0/-2`` when only ``max_steps`` is set
    (``max_epochs`` is then -1); the digits run has 12 batches an epoch and 1,500 steps. Without ``max_steps``
    it is Lightning's bar unchanged."""

    def _by_steps(self, trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if not self._by_steps(trainer):
            return super().on_train_epoch_start(trainer, pl_module)
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:  # one task for the whole run, never reset at an epoch boundary
            self.train_progress_bar_id = self._add_task(trainer.max_steps, "Step")
            self.progress.update(self.train_progress_bar_id, completed=trainer.global_step)  # resumed runs
        self.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._by_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.train_progress_bar_id is None:
            self.on_train_epoch_start(trainer, pl_module)
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()


class RunSummary(pl.Callback):
    """One line in place of Lightning's model summary (whose FLOPs column reads 0 without an
    ``example_input_array`` and which lists the EMA copy and the parameter-free objective as modules):
    the network, its parameters, and the FLOPs of one example's training forward (counted once, on the first
    batch, by ``torch.utils.flop_counter``; a training step costs ≈ 3× that per example with the backward)."""

    def __init__(self):
        self.flops_per_example: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.flops_per_example is not None:
            return
        x0 = (batch[0] if isinstance(batch, (list, tuple)) else batch)[:1]
        condition = getattr(pl_module.net, "condition_on_data", None)
        cuda = [pl_module.device] if pl_module.device.type == "cuda" else []
        # fork_rng: the count's t, ε and dropout draws must not shift the training's RNG streams (exact resume)
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), FlopCounterMode(display=False) as counter:
            if condition is not None:  # the network's data context (graph node masks), as in training_step
                condition(x0)
            model = pl_module.objective.score_model(pl_module.net, pl_module.process)  # never the compiled net
            pl_module.objective.loss(model, pl_module.process, x0)
        self.flops_per_example = counter.get_total_flops()
        self._report(trainer, pl_module, batch_size_of(batch))

    @rank_zero_only
    def _report(self, trainer, pl_module, batch_size: int) -> None:
        params = sum(p.numel() for p in pl_module.net.parameters())
        per_step = 3 * self.flops_per_example * batch_size * trainer.world_size
        log.info(
            "network %s: %s parameters (and an EMA copy); %s FLOP per example forward, ≈ %s FLOP per training "
            "step (batch %d × %d device(s), forward + backward)",
            type(pl_module.net).__name__, get_human_readable_count(params),
            get_human_readable_count(self.flops_per_example), get_human_readable_count(per_step), batch_size,
            trainer.world_size,
        )  # fmt: skip


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


_LIGHTNING_INFO = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # where rank_zero_info writes
_ADVERT = _DropMessage("💡 Tip: For seamless cloud logging")


def silence_known_noise() -> None:
    """Silence, each by its exact text and origin, the messages of the libraries that a run cannot act on:

    - Lightning ≥ 2.6 advertises its cloud logger (``litlogger``) at every ``Trainer`` with no LitLogger;
    - torch ≥ 2.10 deprecates ``torch.utils._pytree.LeafSpec``, which Lightning (2.6.6, the latest) constructs
      for every training loader (``lightning/pytorch/utilities/_pytree.py``): a FutureWarning about Lightning's
      code, not ours. Lightning's own warnings about the run (a misconfiguration) still show."""
    if _ADVERT not in _LIGHTNING_INFO.filters:
        _LIGHTNING_INFO.addFilter(_ADVERT)
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
