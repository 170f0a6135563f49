"""Checkpoint files (docs/reliability.md): atomic writes that leave the previous file intact, and the
identity that refuses a checkpoint of another process / objective / network unless told otherwise.
"""

from __future__ import annotations

import pytest
import torch

from momentum_diffusion.cli.common import build_module
from momentum_diffusion.lightning.checkpointing import AtomicCheckpointIO
from tiny_training import fit, tiny_config


# ---- atomic checkpoint writes ------------------------------------------------------------------------
def test_interrupted_checkpoint_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}


def test_failed_checkpoint_write_removes_its_temporary_and_keeps_the_previous_file(tmp_path, monkeypatch):
    """Item 7: disk full (or a read-only directory) during a save: one-line CheckpointError, no partial
    temporary left behind (on a full disk it kept the disk full), the previous checkpoint intact."""
    import errno

    from momentum_diffusion.lightning.checkpointing import CheckpointError

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"\(No space left on device\); the previous checkpoint is kept") as info:
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert "\n" not in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert torch.load(path, weights_only=False) == {"step": 1}


def test_identity_names_process_objective_and_network_and_old_checkpoints_still_load(tmp_path):
    """Item 10 (unit part): the identity covers diffusion.*, objective.* (K_t) and model.*; a mismatch names
    the keys; a checkpoint written before the full identity existed is judged by the config it stores."""
    from momentum_diffusion.lightning.checkpointing import (
        CheckpointMismatchError,
        check_identity,
        checkpoint_identity,
        weights_identity,
    )

    def module_for(*extra):
        return build_module(dict(tiny_config("gmm", *extra), data_shape=[2]))

    base = module_for()
    assert base.identity["diffusion.beta"] == 3.0 and base.identity["objective.kt"] == "cholesky"
    assert base.identity["model.hidden"] == 32 and "model.dropout" not in base.identity
    training_only = {
        "model": {"hidden": 3, "compile": True, "dropout": 0.1},
        "objective": {"weighting": "eps", "kt": "qr"},
    }
    assert weights_identity(training_only) == {"model.hidden": 3, "objective.kt": "qr"}
    for extra, key in (("diffusion.beta=8", "diffusion.beta"), ("model.depth=3", "model.depth")):
        with pytest.raises(CheckpointMismatchError, match=rf"{key}: checkpoint .* vs config .*allow_identity_change"):
            check_identity(base.identity, module_for(extra).identity)
    assert check_identity(base.identity, module_for("diffusion.beta=8").identity, allow_change=True)
    config = dict(tiny_config("gmm"), data_shape=[2])
    del config["objective"]["kt"], config["objective"]["input_scaling"]  # written before these keys existed
    old = {"hyper_parameters": {"config": config, "identity": {"process": "cld", "order": 2, "data_shape": [2]}}}
    check_identity(checkpoint_identity(old), base.identity)
    for key in ("objective.kt=gddim", "objective.input_scaling=true"):
        with pytest.raises(CheckpointMismatchError, match=key.split("=")[0]):
            check_identity(checkpoint_identity(old), module_for(key).identity)


def test_resume_with_allow_identity_change_loads_the_weights_and_old_checkpoints_resume(tmp_path):
    """Item 10: the override resumes a checkpoint under changed process parameters (here beta 4 -> 8); a
    checkpoint written before the full identity (old identity keys, a config without objective.kt) resumes
    under the matching config without it."""
    fit(tiny_config("gmm"), tmp_path / "a", 2, every_n=0)
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    config = dict(tiny_config("gmm", "diffusion.beta=8"), allow_identity_change=True)
    trainer, _ = fit(config, tmp_path / "b", 3, ckpt_path=ckpt)
    assert trainer.global_step == 3
    old = torch.load(ckpt, weights_only=False)
    hp = old["hyper_parameters"]
    hp["identity"] = {k: hp["identity"][k] for k in ("model", "data", "process", "order", "objective", "data_shape")}
    del hp["config"]["objective"]["kt"]
    torch.save(old, tmp_path / "old.ckpt")
    trainer, _ = fit(tiny_config("gmm"), tmp_path / "c", 3, ckpt_path=tmp_path / "old.ckpt")
    assert trainer.global_step == 3
