"""Save ``last.ckpt`` when the job is told to stop (SIGTERM: ``kill``, SLURM preemption/time limit, k8s).

Lightning 2.x installs a SIGTERM handler that only sets ``trainer.received_sigterm``; at the end of the
current batch the loop raises ``SIGTERMException`` (a ``SystemExit``) and the process exits **without** a
checkpoint (only SLURM auto-requeue, on its own signal, saves one). This callback closes the gap:

* ``on_train_batch_end``: if the flag is set, save ``last.ckpt`` right there, at the same point where
  ``ModelCheckpoint`` saves its periodic checkpoints, so resuming from it is exact;
* ``on_exception(SIGTERMException)``: if the flag was raised too late for that (during the last hooks of
  a batch or at the end of an epoch), save it now.

The file goes where ``ModelCheckpoint`` puts ``last.ckpt`` (the trainer's checkpoint I/O, atomic with
``AtomicCheckpointIO``). A ``NonFiniteTrainingError`` or any other crash is *not* saved: the last periodic
checkpoint is the last good state.

SIGINT (Ctrl-C, ``scancel --signal=INT``) is treated like SIGTERM: the first one raises the same flag, so
the step finishes, ``last.ckpt`` is saved and the run stops; a second Ctrl-C aborts at once (Lightning's
KeyboardInterrupt path, nothing saved). ``train.py`` then exits with ``PREEMPTED_EXIT_CODE`` (75,
``EX_TEMPFAIL``: "temporary failure, retry"), never 0, so that a scheduler or wrapper requeues the job
(docs/reliability.md, "Preemption and requeue").
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: stopped by a signal after saving last.ckpt; requeue and resume


class CheckpointOnSigterm(pl.Callback):
    def __init__(self, dirpath: str | None = None, filename: str = "last.ckpt", sigint: bool = True):
        self.dirpath, self.filename, self.sigint = dirpath, filename, sigint
        self._saved_step: int | None = None
        self._signal_name = "SIGTERM"
        self._previous_sigint = None

    # ---- SIGINT = SIGTERM ----------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module):  # after Lightning registered its handlers (it restores them)
        if not self.sigint or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):
            signal.signal(signal.SIGINT, previous)  # a second Ctrl-C aborts without saving
            self._signal_name = "SIGINT"
            log.warning("SIGINT received: saving last.ckpt after this step (Ctrl-C again to abort without saving)")
            trainer._signal_connector.received_sigterm = True

        self._previous_sigint = previous
        signal.signal(signal.SIGINT, on_sigint)

    def teardown(self, trainer, pl_module, stage):
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def path(self, trainer: pl.Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath) / self.filename
        ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.dirpath), None)
        base = ckpt.dirpath if ckpt is not None else Path(trainer.default_root_dir) / "checkpoints"
        return Path(base) / self.filename

    def _save(self, trainer: pl.Trainer) -> None:
        if self._saved_step == trainer.global_step:
            return
        path = self.path(trainer)
        with _as_at_train_batch_end(trainer):
            trainer.save_checkpoint(path)
        self._saved_step = trainer.global_step
        log.warning(
            "%s received: saved %s at step %d; resume with ckpt_path=%s (exit code %d: requeue)",
            self._signal_name,
            path,
            trainer.global_step,
            path,
            PREEMPTED_EXIT_CODE,
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.received_sigterm:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.received_sigterm:
            self._save(trainer)

    def on_exception(self, trainer, pl_module, exception):
        try:
            late = trainer.received_sigterm and isinstance(exception, SystemExit)
            if isinstance(exception, SIGTERMException) or late:
                self._save(trainer)
        finally:
            self.teardown(trainer, pl_module, "fit")


@contextmanager
def _as_at_train_batch_end(trainer: pl.Trainer):
    """Present the loop counters as they are inside ``on_train_batch_end`` while saving.

    Past that hook (end of ``advance``, end of the epoch, ``SIGTERMException``) Lightning has counted the
    batch as completed and, at an epoch boundary, the epoch as processed; a checkpoint of that state is
    restored as "restarted on last" and Lightning 2.6 then runs the next epoch with a stale batch count
    (one batch, then a new epoch). The periodic checkpoints of ``ModelCheckpoint`` are taken inside the hook
    and restore exactly, so the late save is made to look the same. No-op when already inside the hook.
    """
    loop = trainer.fit_loop
    batches, epochs = loop.epoch_loop.batch_progress, loop.epoch_progress
    if batches.current.completed < batches.current.processed or batches.current.processed == 0:
        yield
        return
    saved = [(t, t.processed, t.completed) for t in (epochs.current, epochs.total)]
    saved_batches = [(t, t.completed) for t in (batches.current, batches.total)]
    stepped = loop.epoch_loop._batches_that_stepped
    try:
        for t in (batches.current, batches.total):
            t.completed -= 1
        for t in (epochs.current, epochs.total):
            t.processed = t.completed = t.started - 1
        loop.epoch_loop._batches_that_stepped = stepped - 1  # advanced in on_advance_end (no accumulation)
        yield
    finally:
        for t, processed, completed in saved:
            t.processed, t.completed = processed, completed
        for t, completed in saved_batches:
            t.completed = completed
        loop.epoch_loop._batches_that_stepped = stepped
