"""Checkpoint I/O that never leaves a half-written file, and checkpoint loading with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class CheckpointError(ValueError):
    pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same directory, fsync, then os.replace (atomic on POSIX)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


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
