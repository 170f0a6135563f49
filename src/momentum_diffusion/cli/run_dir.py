"""The run directory of a CLI call: checked before Hydra starts, locked for one run at a time, and removed again
when this process made it and a user error ended the run before anything was written."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ..lightning.checkpointing import remove_stale_temporaries
from .errors import UserError

_NEW_RUN_DIR: tuple[Path, Path] | None = None  # (run dir, its topmost new ancestor): made by this process


def _output_dir_override(argv: list[str]) -> str | None:
    """The value of hydra.run.dir (or hydra.sweep.dir with -m), parsed as Hydra parses it (quotes, escapes)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    candidates = [a for a in argv if not a.startswith("-") and a.lstrip("+~").startswith(key + "=")]
    if not candidates:
        return None
    try:
        value = OverridesParser.create().parse_overrides(candidates[-1:])[0].value()
    except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself, in one line
        return None
    return value if isinstance(value, str) and "${" not in value else None


def check_output_dir(argv: list[str]) -> None:
    """Fail in one line, before Hydra starts, when the run directory cannot be created or written, or when
    another run holds it. Creates nothing: the writability test makes and removes a temporary entry in the
    nearest existing directory (a permission check alone is not enough: root passes os.access on read-only
    mounts), so a run that Hydra then rejects leaves no directory behind."""
    import tempfile

    global _NEW_RUN_DIR
    _NEW_RUN_DIR = None
    value = _output_dir_override(argv)
    target = Path(value).expanduser() if value is not None else Path(".")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        with tempfile.TemporaryDirectory(dir=existing):
            pass
    except OSError as exc:
        print(
            f"error: output directory {target} is not writable ({exc.strerror or type(exc).__name__})", file=sys.stderr
        )
        sys.exit(2)
    if value is None or any(a in ("-m", "--multirun") for a in argv):
        return
    if existing == target:
        try:
            lock_run_dir(target)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    else:
        top = existing / target.resolve().relative_to(existing.resolve()).parts[0]
        _NEW_RUN_DIR = (target.resolve(), top.resolve())


LOCK_FILE = ".lock"
_LOCKS: dict[str, int] = {}


def _secondary_rank() -> bool:
    """DDP/SLURM processes other than the first share rank 0's run directory (Lightning passes it on)."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"))


def lock_run_dir(directory) -> None:
    """Hold an exclusive lock on the run directory for the life of this process; refuse, in one line naming
    the holder, when another run has it (two runs in one directory lose a checkpoint and interleave logs).
    The kernel releases the lock when the process ends, however it ends (SIGKILL included)."""
    import fcntl
    import socket

    if _secondary_rank():
        return
    path = Path(directory).expanduser().resolve()
    if str(path) in _LOCKS:
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(
            f"run directory {path} is in use by {holder}; wait for it to finish or choose another hydra.run.dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _LOCKS[str(path)] = fd


def release_run_dir(directory) -> None:
    """Give the lock back before the process ends (tests; a sequence of runs in one process)."""
    fd = _LOCKS.pop(str(Path(directory).expanduser().resolve()), None)
    if fd is not None:
        os.close(fd)


def claim_run_dir(directory) -> Path:
    """Lock the run directory and remove temporary checkpoint files that a killed save left in it."""
    directory = Path(directory)
    lock_run_dir(directory)
    if not _secondary_rank():
        remove_stale_temporaries(directory / "checkpoints")
    return directory


def remove_new_run_dir() -> None:
    """After a user error: remove the run directory if this process created it and it holds nothing but
    Hydra's own records (a rejected command leaves no directory behind)."""
    from hydra.core.hydra_config import HydraConfig

    if _NEW_RUN_DIR is None:
        return
    path, top = _NEW_RUN_DIR
    try:
        out = Path(HydraConfig.get().runtime.output_dir).resolve()
    except Exception:  # noqa: BLE001 - no Hydra run (called as a function)
        return
    if out != path or not path.is_dir():
        return
    allowed = {".hydra", LOCK_FILE} | {p.name for p in path.glob("*.log")}
    if {p.name for p in path.iterdir()} <= allowed:
        release_run_dir(path)
        shutil.rmtree(path, ignore_errors=True)
        parent = path.parent
        while path != top and parent != parent.parent:  # the empty parents it created too
            try:
                parent.rmdir()
            except OSError:
                break
            path, parent = parent, parent.parent
