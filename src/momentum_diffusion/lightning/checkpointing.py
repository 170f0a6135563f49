"""Checkpoints: atomic writes, one ``last.ckpt`` that is always the latest state, clear errors on load, and
the identity of what the weights mean.

* ``AtomicCheckpointIO`` writes a temporary file next to the target, fsyncs it and ``os.replace``s it; a
  failed write (disk full, read-only directory, Ctrl-C) removes the temporary file, keeps the previous
  checkpoint and raises ``CheckpointError`` (one line). ``remove_stale_temporaries`` removes what a
  SIGKILL during a save left behind (called on the run directory at the start of a run).
* ``RunCheckpoint`` is Lightning's ``ModelCheckpoint`` with two fixes: ``last.ckpt`` is never versioned
  (``last-v1.ckpt``) — whoever writes it and whatever the cadence, it is the latest state — and the
  end-of-run checkpoint is taken inside ``on_train_batch_end`` of the last step, so that "train longer"
  from it continues the data order mid-epoch exactly.
* ``weights_identity`` / ``check_identity``: the process and its parameters, the objective (K_t included)
  and the network hyper-parameters a checkpoint's weights were trained for.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint


class CheckpointError(ValueError):
    pass


class CheckpointMismatchError(CheckpointError):
    pass


TMP_MARK = ".tmp"


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same directory, fsync, then os.replace (atomic on POSIX)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        tmp = _tmp_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)  # never leave a partial file (on a full disk it keeps the disk full)
            if isinstance(exc, OSError):
                kept = "the previous checkpoint is kept" if path.is_file() else "no checkpoint was written"
                raise CheckpointError(
                    f"could not write checkpoint {path} ({exc.strerror or type(exc).__name__}); {kept}"
                ) from None
            raise


def remove_stale_temporaries(directory) -> list[Path]:
    """Remove ``.<name>.tmp<pid>`` files that a killed save left in ``directory`` (not this process's own).

    Call it only on a directory this process owns (the locked run directory): another live run's
    temporary file would be removed too.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for p in directory.glob(f".*{TMP_MARK}*"):
        pid = p.name.rsplit(TMP_MARK, 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is always the latest state (see the module docstring)."""

    def _save_last_checkpoint(self, trainer, monitor_candidates):
        # Lightning's version counter writes last-v1.ckpt when last.ckpt exists and this callback's state was
        # not restored (its state key changes with any setting): a later resume from last.ckpt rolled back.
        versioned, self._enable_version_counter = self._enable_version_counter, False
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self._enable_version_counter = versioned

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.save_last and self._last_global_step_saved != trainer.global_step and _run_ends_here(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer, pl_module):
        # Lightning saves last here only if nothing was saved during the run (a periodic save at step 18 of
        # 20 left last.ckpt at step 18). Save whenever the last step is not on disk yet.
        if self.save_last and self._last_global_step_saved != trainer.global_step and not trainer.received_sigterm:
            from .preemption import _as_at_train_batch_end

            with _as_at_train_batch_end(trainer):
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _run_ends_here(trainer) -> bool:
    """Inside ``on_train_batch_end``: is this the last step of the run (max_steps, or last batch of max_epochs)?"""
    if trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step:
        return True
    loop = trainer.fit_loop
    max_epochs = loop.max_epochs
    if max_epochs is None or max_epochs < 0 or trainer.current_epoch + 1 < max_epochs:
        return False
    return loop.epoch_loop._num_ready_batches_reached()


# ---- loading --------------------------------------------------------------------------------------------
def load_checkpoint(path) -> dict:
    """Read a checkpoint written by train.py; one clear error if it is missing, corrupt or foreign."""
    path = Path(str(path))
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, wrong format, pickle errors …
        reason = type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or not a PyTorch checkpoint ({reason})") from None
    config = ckpt.get("hyper_parameters", {}).get("config") if isinstance(ckpt, dict) else None
    if config is None or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a momentum_diffusion training checkpoint")
    return ckpt


def check_finite_weights(state_dict: dict, path) -> None:
    """Refuse weights (network or EMA) that hold NaN/Inf: sampling from them writes all-NaN samples."""
    bad = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CheckpointError(f"checkpoint {path} holds non-finite weights ({bad[0]}{more}); use an earlier checkpoint")


def check_weight_shapes(state_dict: dict, module, path) -> None:
    """One line instead of Lightning's hundreds when the checkpoint's tensors do not fit the network."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} tensors differ in shape, e.g. {k}: checkpoint {tuple(state_dict[k].shape)} vs "
                f"config {tuple(own[k].shape)}"
            )
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise CheckpointMismatchError(f"checkpoint {path} does not fit the network of the config ({'; '.join(parts)})")


# ---- identity of the weights ------------------------------------------------------------------------------
# Config keys that change how the network is trained or run, not what its weights mean.
TRAINING_ONLY_KEYS = {"objective.weighting", "objective.reduction", "model.dropout", "model.compile"}
IDENTITY_GROUPS = ("diffusion", "objective", "model")
IDENTITY_DEFAULTS = {  # what checkpoints before a key existed used
    "kt": "cholesky",
    "objective.kt": "cholesky",
    "objective.input_scaling": False,
}


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = list(value) if isinstance(value, tuple) else value


def weights_identity(config: dict | None) -> dict:
    """``diffusion.*``, ``objective.*`` and ``model.*`` of a resolved training config, flattened."""
    out: dict = {}
    for group in IDENTITY_GROUPS:
        if isinstance((config or {}).get(group), dict):
            _flatten(group, config[group], out)
    return {k: v for k, v in out.items() if k not in TRAINING_ONLY_KEYS}


def checkpoint_identity(ckpt: dict) -> dict:
    """The identity a checkpoint records; checkpoints written before the full identity existed get it from
    the config they store (every checkpoint of this project stores its config)."""
    hp = ckpt.get("hyper_parameters", {})
    return {**weights_identity(hp.get("config")), **(hp.get("identity") or {})}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a == b


def identity_differences(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ. A key that only one side has is not compared (configs gain keys over time;
    an old checkpoint must still load), except those with a known old default (``kt``)."""
    saved, current = {**IDENTITY_DEFAULTS, **saved}, {**IDENTITY_DEFAULTS, **current}
    return [
        f"{k}: checkpoint {saved[k]!r} vs config {current[k]!r}"
        for k in sorted(set(saved) & set(current))
        if not _same(saved[k], current[k])
    ]


def check_identity(saved: dict, current: dict, allow_change: bool = False) -> list[str]:
    """Refuse a checkpoint trained for another process/objective/network, naming the differing keys."""
    diffs = identity_differences(saved, current)
    if diffs and not allow_change:
        raise CheckpointMismatchError(
            "checkpoint does not match the config (" + "; ".join(diffs) + "); "
            "set allow_identity_change=true to load the weights anyway"
        )
    return diffs
