"""Issue-level guarantee of the exact-score benchmark: at 1000 NFE every listed sampler × process is at the
data (SW2 within 1.5× the noise floor, mode-KL within 2× that of a fresh data set) on every public spec."""

from pathlib import Path

import pytest

from momentum_diffusion.cli.benchmark import benchmark_floors, run_benchmark
from momentum_diffusion.exact import load_gmm
from momentum_diffusion.reports.benchmark_grid import STANDARD_GRID, build

SPECS = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "benchmarks/gmm").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: Path(s).stem)
@pytest.mark.parametrize(
    "diffusion, sampler, overrides",
    STANDARD_GRID,
    ids=[f"{d}-{s}{'-' + o[0].split('=')[-1] if o else ''}" for d, s, o in STANDARD_GRID],
)
def test_every_sampler_reaches_the_data_at_1000_nfe(spec, diffusion, sampler, overrides):
    gmm = load_gmm(spec)
    n = 10_000  # as in the README grid: SW2 between two 5k sets fluctuates by ±50 %
    floors = benchmark_floors(gmm, n, seed=0)
    process, fn = build(diffusion, sampler, overrides)
    row = run_benchmark(process, fn, gmm, [1000], n, seed=0, floors=floors)[0]
    assert row["sw2"] < 1.5 * floors["sw2"], row
    # mode-KL of a fresh set fluctuates by tens of percent at this n; PC's corrector adds an O(snr²) bias.
    assert row["mode_kl"] < 2.0 * floors["mode_kl"] + 1e-3, row
