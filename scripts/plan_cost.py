"""What building ``sampler=expint``'s stochastic plan costs (issue 16): the whitened Magnus plan
(samplers/expint_plan.py) against the batched ODE route it replaced (tests/expint_reference.py), timed in the
same run, interleaved, median of ``--repeats``. Prints a markdown table with the ratio and the largest per-step
relative difference between the two plans.

    python scripts/plan_cost.py                          # every phase-space process at λ = 0.5, 10 / 20 / 1000 NFE
    python scripts/plan_cost.py --processes hold --lam 0.3 --nfe 50 500

Both routes share the gDDIM factor R_t (built once per process before timing). The plan is the x̂_0-plan of
expint's defaults (order 2 with the corrector on the quadratic grid) with the polynomial in log t; the variable
changes only the Lagrange weights, not the cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from expint_reference import ode_steps  # noqa: E402
from momentum_diffusion.processes import cld, hold, ve, vp  # noqa: E402
from momentum_diffusion.processes.noise_factor import gddim_factor  # noqa: E402
from momentum_diffusion.samplers.base import time_grid  # noqa: E402
from momentum_diffusion.samplers.expint_plan import StepIntervals, magnus_steps, relative_change  # noqa: E402


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", nargs="+", default=["vp", "cld", "hold"])
    parser.add_argument("--nfe", nargs="+", type=int, default=[10, 20, 1000])
    parser.add_argument("--lam", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| process | NFE | Magnus plan (s) | ODE plan (s) | ODE / Magnus | max per-step rel. difference |")
    print("|---|---|---|---|---|---|")
    for name in args.processes:
        process = {"vp": vp, "ve": ve, "cld": cld, "hold": hold}[name]()  # the factories' defaults
        gddim_factor(process)
        for nfe in args.nfe:
            steps = StepIntervals(time_grid(process, nfe, "quadratic"), 2, torch.log, corrector=True)
            times = {"magnus": [], "ode": []}
            for _ in range(args.repeats):
                t_magnus, magnus = timed(magnus_steps, process, steps, args.lam)
                t_ode, ode = timed(ode_steps, process, steps, args.lam)
                times["magnus"].append(t_magnus)
                times["ode"].append(t_ode)
            m, o = statistics.median(times["magnus"]), statistics.median(times["ode"])
            diff = max(relative_change(ode[name], magnus[name]) for name in ode)
            print(f"| {name} | {nfe} | {m:.3f} | {o:.3f} | {o / m:.1f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
