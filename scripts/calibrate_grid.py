"""Optimise a process's `calibrated` time grid once, on the calibration mixture (samplers/calibrated_grids.py).

    python scripts/calibrate_grid.py hold                       # from w = 1 − u (the power grid ρ = 3)
    python scripts/calibrate_grid.py cld --start 1 .95 .6 .47 .35 .33 0 --sweeps 6

Coordinate search over the interior knots of w (steps ± step, halved when a sweep finds nothing), minimising the
mean log mode-KL of `sampler=expint` (the process's defaults, grid=calibrated) at --nfe with exact scores on
--spec (default: the calibration mixture, no public spec), n = 4000, one seed. Prints each improvement and the
final knots to paste into KNOTS. About 3–15 s per evaluation on the 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from momentum_diffusion.cli.benchmark import benchmark_floors, run_benchmark  # noqa: E402
from momentum_diffusion.exact import load_gmm  # noqa: E402
from momentum_diffusion.reports.benchmark_grid import build  # noqa: E402
from momentum_diffusion.reports.fast_sampling import FAST_CONSTANTS  # noqa: E402
from momentum_diffusion.samplers import calibrated_grids, configure  # noqa: E402

CALIBRATION = REPO / "benchmarks" / "results" / "fast_sampling" / "calibration_random3d.yaml"


def objective(process, sampler, gmm, knots, nfes, n, seed, floors) -> tuple[float, list[float]]:
    """Mean log mode-KL over the budgets with ``knots`` as the process's calibrated grid, and the mode-KLs."""
    calibrated_grids.KNOTS[process.name] = tuple(float(k) for k in calibrated_grids.check_knots(knots))
    rows = run_benchmark(process, sampler, gmm, nfes, n, seed, floors=floors)
    kl = [r["mode_kl"] for r in rows]
    return (float(np.mean(np.log(kl))) if np.all(np.isfinite(kl)) else float("inf")), kl


def coordinate_search(evaluate, start, step: float, sweeps: int, log=print) -> tuple[np.ndarray, float]:
    """Minimise ``evaluate(knots) -> (value, detail)`` over the interior knots, keeping them strictly decreasing."""
    w = np.array(start, dtype=np.float64)
    best, detail = evaluate(w)
    log(f"start {np.round(w, 4).tolist()} {np.round(detail, 4).tolist()}")
    for sweep in range(sweeps):
        improved = False
        for j in range(1, len(w) - 1):
            for d in (step, -step):
                c = w.copy()
                c[j] += d
                if not c[j - 1] > c[j] > c[j + 1]:
                    continue
                value, found = evaluate(c)
                if value < best - 1e-3:
                    best, w, detail, improved = value, c, found, True
                    log(f"sweep {sweep} knot {j}: {np.round(w, 4).tolist()} {np.round(detail, 4).tolist()}")
                    break
        if not improved:
            step /= 2
            log(f"sweep {sweep}: no improvement, step {step:g}")
    return w, best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("process", choices=["vp", "ve", "cld", "hold"])
    p.add_argument("--spec", default=str(CALIBRATION))
    p.add_argument("--nfe", type=int, nargs="+", default=[15, 20, 30])
    p.add_argument("--start", type=float, nargs="+", help="initial knots (default: 1 − u at 7 knots)")
    p.add_argument("--step", type=float, default=0.06)
    p.add_argument("--sweeps", type=int, default=6)
    p.add_argument("--n-samples", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    gmm = load_gmm(args.spec)
    floors = benchmark_floors(gmm, args.n_samples, args.seed)
    process, sampler = build(args.process, "expint", [], FAST_CONSTANTS)
    sampler = configure(sampler, grid="calibrated")
    start = args.start or (1 - np.linspace(0, 1, 7)).tolist()

    def evaluate(knots):
        return objective(process, sampler, gmm, knots, args.nfe, args.n_samples, args.seed, floors)

    knots, _ = coordinate_search(evaluate, start, args.step, args.sweeps, log=lambda s: print(s, flush=True))
    print(f'KNOTS["{args.process}"] = {tuple(round(float(k), 4) for k in knots)}')


if __name__ == "__main__":
    main()
