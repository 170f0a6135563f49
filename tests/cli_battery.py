"""Run many command lines of the entry points (src/train.py, sample.py, evaluate.py, benchmark.py) in ONE
Python process: each case goes through the script's own ``__main__`` path (``run_app``: the checks before
Hydra, then the Hydra main), with its stderr captured and its exit code recorded. One interpreter start-up
and one import of torch/Lightning/Hydra for the whole battery instead of one per case.

    python tests/cli_battery.py CASES.json RESULTS.json     (or run_battery(cases, tmp_path) from a test)

CASES.json: a list of [script, [args…]]; RESULTS.json: a list of {"code": int, "stderr": str, "seconds": float}.
A case ["@sha256", [path]] records the digest of a file at that point of the battery (in "stderr").
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

from helpers import REPO, cli_env, run_python  # tests/ is on sys.path: as a script and under pytest (conftest)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"entry_{name[:-3]}", REPO / "src" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    task = module.main
    while hasattr(task, "__wrapped__"):
        task = task.__wrapped__
    task.__module__ = "__main__"  # Hydra then finds config_path relative to the script, as when run directly
    return module


def run_case(script, args: list[str]) -> dict:
    from hydra.core.global_hydra import GlobalHydra

    from momentum_diffusion.cli.launch import run_app

    err, code, start = io.StringIO(), 0, time.perf_counter()
    sys.argv = [script.__file__, *args]
    GlobalHydra.instance().clear()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            run_app(script.main)  # the script's own __main__ line
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - reported like an uncaught exception would be
            import traceback

            traceback.print_exc(file=err)
            code = 1
    return {"code": code, "stderr": err.getvalue(), "seconds": round(time.perf_counter() - start, 3)}


def run_battery(cases, workdir: Path, cwd: Path = REPO, timeout: int = 600) -> list[dict]:
    """Run [(script, args, …), …] in one subprocess; one {"code", "stderr", "seconds"} per case."""
    workdir = Path(workdir)
    (workdir / "battery_cases.json").write_text(json.dumps([[c[0], list(c[1])] for c in cases]))
    env = cli_env(PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    run_python(__file__, workdir / "battery_cases.json", workdir / "battery_results.json", cwd=cwd, env=env,
               timeout=timeout)  # fmt: skip
    return json.loads((workdir / "battery_results.json").read_text())


def sha256_case(path: str) -> dict:
    """The pseudo-case ``("@sha256", [path])``: the file's digest as "stderr" (between cases, to show that
    the cases after it leave the file alone)."""
    import hashlib

    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else "missing"
    return {"code": 0, "stderr": digest, "seconds": 0.0}


def main() -> None:
    cases_path, results_path = sys.argv[1], sys.argv[2]
    cases = json.loads(Path(cases_path).read_text())
    os.environ.setdefault("MPLBACKEND", "Agg")
    scripts = {name: load_script(name) for name in {c[0] for c in cases} if not name.startswith("@")}
    results = [sha256_case(*args) if name == "@sha256" else run_case(scripts[name], list(args)) for name, args in cases]
    Path(results_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
