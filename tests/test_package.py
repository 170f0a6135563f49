"""The installable package: configs and GMM specs ship as package data, and the entry points run from a wheel
installed outside the repository (issue 15)."""

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from momentum_diffusion import CONF_DIR
from momentum_diffusion.exact import BENCHMARK_DIR, load_gmm

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "momentum_diffusion"


def test_package_data_is_the_repository_copy_and_fully_declared():
    """One source of truth: the package's conf/ and exact/specs/ are the repository's conf/ and benchmarks/gmm/,
    and pyproject's package-data globs reach every config and spec (a new nesting level would be left out)."""
    assert (PACKAGE / "conf").resolve() == (REPO / "conf").resolve() == CONF_DIR.resolve()
    assert (PACKAGE / "exact" / "specs").resolve() == (REPO / "benchmarks" / "gmm").resolve()
    assert BENCHMARK_DIR.resolve() == (REPO / "benchmarks" / "gmm").resolve()
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = globs["momentum_diffusion"]
    shipped = [Path("conf") / p.relative_to(CONF_DIR) for p in CONF_DIR.rglob("*") if p.is_file()]
    shipped += [Path("exact/specs") / p.name for p in BENCHMARK_DIR.glob("*.yaml")]
    for rel in shipped:
        if "__pycache__" in rel.parts:
            continue
        assert any(fnmatch.fnmatch(str(rel), g) and str(rel).count("/") == g.count("/") for g in globs), (
            f"{rel} is not shipped: add a glob to [tool.setuptools.package-data]"
        )
    assert load_gmm("ring8_2d").n_components == 8


def _venv_site(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


@pytest.mark.slow
def test_wheel_installed_outside_the_repository_trains_and_loads_specs(tmp_path):
    """Build a wheel from a copy of the sources, install it into a fresh venv whose only other entry is this
    environment's site-packages (not its editable link to src/), and from another directory: load a GMM spec by
    name, and train the default job for 3 steps with ``python -m momentum_diffusion.train``."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", symlinks=True, ignore=ignore)  # the symlinks, as in git
    shutil.copytree(REPO / "conf", source / "conf", ignore=ignore)
    shutil.copytree(REPO / "benchmarks" / "gmm", source / "benchmarks" / "gmm", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    dist = tmp_path / "dist"
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)], check=True)
    (wheel,) = dist.glob("momentum_diffusion-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    (_venv_site(venv) / "deps.pth").write_text(f"{deps}\n")  # dependencies only: nested .pth files are not read
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)], check=True)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    python = str(venv / "bin" / "python")
    probe = (
        "import momentum_diffusion as m, pathlib; from momentum_diffusion.exact import load_gmm; "
        "print(pathlib.Path(m.__file__).resolve()); print(load_gmm('ring8_2d').n_components)"
    )
    out = subprocess.run([python, "-c", probe], cwd=work, env=env, capture_output=True, text=True, check=True)
    where, n = out.stdout.split()
    assert Path(where).is_relative_to(_venv_site(venv).resolve()), where
    assert not Path(where).is_relative_to(REPO), where
    assert n == "8"

    run_dir = tmp_path / "run"
    args = ["trainer.max_steps=3", "callbacks.sample_evaluation=null", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(
        [python, "-m", "momentum_diffusion.train", *args], cwd=work, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
