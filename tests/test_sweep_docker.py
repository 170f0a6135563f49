"""The Docker image builds and runs the package as a non-root user (slow; skipped without a Docker engine)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


def test_dockerfile_is_non_root_on_a_cuda_base_with_pinned_dependencies():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "cuda" in text.split("FROM", 1)[1].splitlines()[0] and "\nUSER md" in text
    assert "--constraint docker/constraints.txt" in text
    pins = [ln for ln in (REPO / "docker" / "constraints.txt").read_text().splitlines() if ln and ln[0] != "#"]
    assert pins and all("==" in ln for ln in pins)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


@pytest.mark.slow
def test_docker_image_builds_and_imports_the_package_as_non_root():
    if not docker_available():
        pytest.skip("no Docker engine here")
    tag = "momentum_diffusion:test"
    build = subprocess.run(
        ["docker", "build", "-f", "docker/Dockerfile", "-t", tag, "."], cwd=REPO, capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr[-3000:]
    cmd = "import os, momentum_diffusion; print(os.getuid())"
    out = subprocess.run(["docker", "run", "--rm", tag, "python", "-c", cmd], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() != "0", out.stderr[-2000:]
