"""scripts/bench_network.py runs end to end on a CPU with the tiny config (issue 12)."""

from __future__ import annotations

import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_network")


def test_tiny_benchmark_reports_every_figure(bench, tmp_path):
    out = tmp_path / "bench.json"
    res = bench.run(["--preset", "tiny", "--device", "cpu", "--modes", "fp32,bf16+cl", "--samplers", "em,sscs,nosuch",
                     "--sampler-nfe", "10", "--steps", "1", "--warmup", "1", "--json", str(out)])  # fmt: skip
    assert out.exists()
    # FLOPs and parameters of the composed network (CLD on 8×8 digits: 2 input channels, 1 output).
    assert res["params"] > 1e5 and 0 < res["gflop_fwd"] < res["gflop_fwd_bwd"] < 4 * res["gflop_fwd"]
    modes = res["network"]["modes"]
    assert set(modes) == {"fp32", "bf16+cl"}
    assert all(r["train_img_s"] > 0 and r["infer_img_s"] > 0 for r in modes.values())
    assert res["full_step"]["img_s"] > 0 and res["full_step"]["first_step_s"] > 0
    samplers = res["samplers"]
    assert samplers["em"]["nfe"] <= 10 and samplers["sscs"]["share"] > 0
    assert "skipped" in samplers["nosuch"]  # an unknown or unsupported sampler is reported, not fatal
    md = res["markdown"]
    assert "| fp32 |" in md and "Full training step" in md and "| sscs |" in md
