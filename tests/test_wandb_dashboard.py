"""The standard W&B dashboard spec (scripts/wandb_dashboard.py) builds offline and holds every logged key."""

from __future__ import annotations

import json

import pytest

from helpers import load_script

pytest.importorskip("wandb_workspaces")


def test_dashboard_spec_has_a_panel_per_metric_and_budget_and_the_media(capsys):
    module = load_script("wandb_dashboard")
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
