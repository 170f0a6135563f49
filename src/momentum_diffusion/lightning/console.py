"""What a training run prints: a progress bar over optimiser steps, and the third-party messages a user cannot act
on silenced one by one (never a blanket filter)."""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.callbacks import RichProgressBar


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
