"""scripts/compare_processes.py (issue 19): what each run is trained with, and the report's statistics."""

from __future__ import annotations

import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def study():
    return load_script("compare_processes")  # registered in sys.modules: its dataclass looks itself up there


def last_value(overrides, key: str) -> str:
    """What Hydra uses: the last override of ``key`` wins."""
    return [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key][-1]


def test_a_variant_overrides_the_protocol_it_runs_in(study, tmp_path):
    """--set fixes the protocol; a variant (or a grid point) that changes one of its keys must win, or an
    ablation silently trains the baseline (session 7: 'b3' CLD runs that were β = 4)."""
    args = study.parse_args(["--out", str(tmp_path), "--set", "cld:diffusion.beta=4", "--set", "all:optim.lr=4e-3",
                             "--variant", "b3:cld diffusion.beta=3"])  # fmt: skip
    (variant,) = study.variants(args)
    assert last_value(variant.overrides, "diffusion.beta") == "3"
    assert last_value(variant.overrides, "optim.lr") == "4e-3"
    args = study.parse_args(["--out", str(tmp_path), "--processes", "cld", "--set", "all:optim.lr=4e-3",
                             "--grid", "optim.lr=1e-3,2e-3"])  # fmt: skip
    assert [last_value(v.overrides, "optim.lr") for v in study.variants(args)] == ["1e-3", "2e-3"]


def test_report_gives_mean_and_sample_std_over_seeds_and_the_best_nfe(study):
    rows = [
        dict(process="vp", variant="a", seed=str(s), sampler="em", nfe_budget=str(n), fd_digits=str(fd))
        for s, n, fd in [(0, 10, 4.0), (1, 10, 6.0), (0, 20, 3.0), (1, 20, 7.0)]
    ]
    table = study.report(rows)
    assert "5.00 ± 1.41" in table  # NFE 10: mean 5, sample std √2
    assert "5.00 ± 2.83" in table  # NFE 20: mean 5, sample std 2√2
    # best per seed: seed 0 → 3 (@20), seed 1 → 6 (@10): 4.50 ± 2.12
    assert "4.50 ± 2.12" in table
