"""The standard W&B dashboard spec (scripts/wandb_dashboard.py) builds offline and holds every logged key."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("wandb_workspaces")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "wandb_dashboard.py"


def test_dashboard_spec_has_a_panel_per_metric_and_budget_and_the_media(capsys):
    spec = importlib.util.spec_from_file_location("wandb_dashboard", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(
        ["--entity", "me", "--project", "p", "--metrics", "fid", "sw2", "--nfe", "20", "50", "--dry-run"]
    )
    assert code == 0
    text = capsys.readouterr().out
    json.loads(text)  # a complete JSON document
    for key in (
        "train/loss",
        "train/img_per_s",
        "eval/fid_nfe20",
        "eval/fid_nfe50",
        "eval/sw2_nfe20",
        "eval/sw2_nfe50",
        "samples/nfe20",
        "samples/nfe50",
        "eval/metric_vs_nfe",
    ):
        assert key in text, key
