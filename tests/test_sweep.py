"""Sweep reports: a multirun through the real CLI → scripts/collect_sweep.py → CSV, markdown, plots and a
self-contained HTML page, rendered in headless Chromium (skipped where Debian's chromium is not installed)."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import run_python as run

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-color-profile=srgb",
    "--hide-scrollbars",
]


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def screenshot(page: Path, png: Path, tmp: Path) -> np.ndarray:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    from PIL import Image

    cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium'}", "--window-size=1400,2400"]
    proc = subprocess.run([*cmd, f"--screenshot={png}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert png.is_file(), proc.stderr[-2000:]
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def color_pixels(img: np.ndarray, hex_color: str, tol: int = 6) -> int:
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img - rgb).max(axis=-1) <= tol).sum())


@pytest.mark.slow  # a CLI process of its own (≈ 10 s of imports); .ci/run runs the slow tests too
def test_benchmark_sweep_report_renders_both_runs(tmp_path):
    sweep = tmp_path / "sweep"
    run(
        "src/benchmark.py",
        "-m",
        "gmm=ring8_2d",
        "diffusion=vp",
        "sampler=em",
        "sampler.nfe=4,8",  # two runs: one per budget
        "n_samples=200",
        f"hydra.sweep.dir={sweep}",
    )
    out = run("scripts/collect_sweep.py", str(sweep))
    assert "2 runs" in out.stdout
    report = sweep / "report"
    rows = read_csv(report / "runs.csv")
    assert sorted(int(r["nfe_budget"]) for r in rows) == [4, 8]
    assert {r["sampler"] for r in rows} == {"em"} and all(float(r["sw2"]) > 0 for r in rows)
    table = (report / "table.md").read_text()
    assert table.count("\n") == 4 and "sw2" in table and "mode_kl" in table
    assert (report / "em_vs_nfe.png").is_file()
    page = (report / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained
    assert page.count("data:image/png;base64,") >= 3  # the plot and both runs' sample scatters
    runs = sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert len(runs) == 2 and all(name in page for name in runs)

    img = screenshot(report / "report.html", tmp_path / "shot.png", tmp_path)
    assert img.std() > 20 and (img.min(axis=-1) < 200).mean() > 0.01  # not blank
    # each run has its own colour (swatch, table marker, plot points, frame of its samples): both visible
    assert color_pixels(img, "#1f77b4") > 500 and color_pixels(img, "#ff7f0e") > 500


def test_collect_sweep_refuses_a_directory_without_runs(tmp_path):
    proc = run("scripts/collect_sweep.py", str(tmp_path), check=False)
    assert proc.returncode != 0 and proc.stderr.strip().startswith("error: no runs")


@pytest.mark.slow
def test_train_and_evaluate_sweeps_over_nfe_are_collected(tmp_path):
    """The issue's must-hold: train -m sampler.nfe=a,b runs two jobs, evaluate -m … sampler.nfe=a,b evaluates
    at both budgets, and collect_sweep turns either sweep into the table, plot and HTML."""
    tiny = [
        "data=gmm",
        "data.n_train=2048",
        "data.batch_size=128",
        "diffusion=vp",
        "model.hidden=32",
        "model.depth=2",
        "trainer.max_steps=20",
        "callbacks.sample_evaluation.n_samples=128",
        "~callbacks.progress",
    ]
    train_sweep, eval_sweep = tmp_path / "train", tmp_path / "evaluate"
    run("src/train.py", "-m", *tiny, "sampler.nfe=4,8", f"hydra.sweep.dir={train_sweep}")
    ckpts = sorted(train_sweep.glob("*/checkpoints/last.ckpt"))
    assert len(ckpts) == 2
    # a multirun's paths hold '=' and ',': quote them for Hydra's override grammar
    evaluate = ["-m", f"ckpt='{ckpts[0]}'", "sampler.nfe=4,8", "n_samples=128", f"hydra.sweep.dir={eval_sweep}"]
    run("src/evaluate.py", *evaluate)
    for sweep in (train_sweep, eval_sweep):
        run("scripts/collect_sweep.py", str(sweep))
        rows = read_csv(sweep / "report" / "runs.csv")
        assert sorted(int(r["nfe_budget"]) for r in rows) == [4, 8]
        assert len({r["run"] for r in rows}) == 2
        assert (sweep / "report" / "em_vs_nfe.png").is_file()
        assert (sweep / "report" / "report.html").read_text().count("data:image/png;base64,") >= 3
