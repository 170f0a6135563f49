"""Issue-level guarantee of the exact-score benchmark: at 1000 NFE every listed sampler × process is at the
data (SW2 within 1.5× the noise floor, mode-KL within 2× that of a fresh data set) on every public spec."""

from pathlib import Path

import pytest

from momentum_diffusion.cli.benchmark import benchmark_floors, run_benchmark
from momentum_diffusion.exact import load_gmm
from momentum_diffusion.reports.benchmark_grid import STANDARD_GRID, build

# Cells at the edge of the SW2 bound at 1000 NFE (measured 2026-11-29, n = 10,000, seeds 0–4): SW2 / floor
# 1.68, 1.09, 0.68, 0.75, 1.86. At n = 40,000 the means are off by 2–4 standard errors, for Lie–Trotter too,
# always against the data mean. The offset is still there at 4000 NFE (seed 4), so it is not the step size.
# It is the prior gap that conf/diffusion/hold.yaml states: at β = 3 the kernel keeps 0.084 x_0 at t = 1.
MARGINAL = {
    ("hold", "sscs", "anisotropic_4d"): "HOLD + SSCS on anisotropic_4d: SW2 0.7–1.9× the floor over seeds",
}

SPECS = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "benchmarks/gmm").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: Path(s).stem)
@pytest.mark.parametrize(
    "diffusion, sampler, overrides",
    STANDARD_GRID,
    ids=[f"{d}-{s}{'-' + o[0].split('=')[-1] if o else ''}" for d, s, o in STANDARD_GRID],
)
def test_every_sampler_reaches_the_data_at_1000_nfe(spec, diffusion, sampler, overrides, request):
    cell = (diffusion, sampler, Path(spec).stem)
    if cell in MARGINAL:
        request.applymarker(pytest.mark.xfail(strict=False, reason=MARGINAL[cell]))
    gmm = load_gmm(spec)
    n = 10_000  # as in the README grid: SW2 between two 5k sets fluctuates by ±50 %
    floors = benchmark_floors(gmm, n, seed=0)
    process, fn = build(diffusion, sampler, overrides)
    row = run_benchmark(process, fn, gmm, [1000], n, seed=0, floors=floors)[0]
    assert row["sw2"] < 1.5 * floors["sw2"], row
    # mode-KL of a fresh set fluctuates by tens of percent at this n; PC's corrector adds an O(snr²) bias.
    assert row["mode_kl"] < 2.0 * floors["mode_kl"] + 1e-3, row
