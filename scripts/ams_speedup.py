"""How many NFE does AMS need to match the Langevin-corrector PC sampler? (exact-score GMM benchmark)

For every public mixture spec (benchmarks/gmm/*.yaml) and VE (reverse-diffusion predictor) / VP
(Euler–Maruyama predictor, as score_sde's VP configs): run PC at the reference budgets (100, 200, 500, 1000
NFE) and AMS on an NFE grid, both with ``snr`` tuned separately per sampler and per budget over a small grid
(best value of each metric over the snr grid). For each reference budget N and metric (SW2, mode-KL), find
the smallest NFE at which AMS reaches PC's value at N (log–log interpolation between the bracketing grid
points), and report the speed-up N / NFE_AMS. Same seed everywhere: every run shares the prior draws.

    python scripts/ams_speedup.py                      # defaults: ~10-15 min on 2 shared CPU cores
    python scripts/ams_speedup.py --n-samples 1000 --specs ring8_2d --out /tmp/ams.md   # quick look
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from momentum_diffusion.cli.benchmark import benchmark_floors, run_benchmark
from momentum_diffusion.exact.gmm import load_gmm
from momentum_diffusion.processes import ve, vp
from momentum_diffusion.samplers import configure
from momentum_diffusion.samplers.ams import adaptive_momentum
from momentum_diffusion.samplers.pc import predictor_corrector

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("sw2", "mode_kl")
PROCESSES = {"ve": (ve, "reverse_diffusion"), "vp": (vp, "euler_maruyama")}


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def best_over_snr(runs: dict[float, list[dict]], metric: str) -> dict[int, tuple[float, float]]:
    """NFE budget → (best metric value over the snr grid, the snr achieving it); NaN runs never win."""
    best: dict[int, tuple[float, float]] = {}
    for snr, rows in runs.items():
        for r in rows:
            v = r[metric]
            if math.isfinite(v) and (r["nfe_budget"] not in best or v < best[r["nfe_budget"]][0]):
                best[r["nfe_budget"]] = (v, snr)
    return best


def nfe_to_reach(curve: dict[int, tuple[float, float]], target: float) -> tuple[float | None, float | None]:
    """Smallest NFE from which the curve stays at or below ``target`` on the rest of the grid (robust to
    noisy early dips), log–log interpolated with the last grid point above it; (None, None) if the curve
    ends above the target. Returns (NFE, snr at the first grid point at or below the target)."""
    nfes = sorted(curve)
    above = [i for i, n in enumerate(nfes) if not curve[n][0] <= target]
    if above and above[-1] == len(nfes) - 1:
        return None, None
    i = above[-1] + 1 if above else 0
    n, (v, snr) = nfes[i], curve[nfes[i]]
    if i == 0:
        return float(n), snr
    n0, v0 = nfes[i - 1], curve[nfes[i - 1]][0]
    if not (v0 > target >= v > 0):
        return float(n), snr
    w = (math.log(v0) - math.log(target)) / (math.log(v0) - math.log(v))
    return math.exp(math.log(n0) + w * (math.log(n) - math.log(n0))), snr


def fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) >= 1e-3 else f"{v:.2e}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", default="", help="comma-separated spec names (default: all benchmarks/gmm/*.yaml)")
    ap.add_argument("--processes", default="ve,vp")
    ap.add_argument("--pc-nfes", type=ints, default=[100, 200, 500, 1000], help="PC reference budgets")
    ap.add_argument("--ams-nfes", type=ints, default=[20, 30, 50, 70, 100, 150, 200, 300, 500, 1000])
    ap.add_argument("--snrs", type=floats, default=[0.05, 0.1, 0.16, 0.25], help="snr grid, tuned per budget")
    ap.add_argument("--n-samples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "docs" / "ams_speedup.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = (
        args.specs.split(",") if args.specs else sorted(p.stem for p in (ROOT / "benchmarks" / "gmm").glob("*.yaml"))
    )

    start = time.perf_counter()
    summary, curves_md = [], []
    for spec in specs:
        gmm = load_gmm(spec)
        floors = benchmark_floors(gmm, args.n_samples, args.seed)
        for pname in args.processes.split(","):
            make, predictor = PROCESSES[pname]
            process = make()
            runs = {"pc": {}, "ams": {}}
            for name, fn, nfes in (
                ("pc", predictor_corrector, args.pc_nfes),
                ("ams", adaptive_momentum, args.ams_nfes),
            ):
                for snr in args.snrs:
                    sampler = configure(fn, snr=snr, predictor=predictor)
                    runs[name][snr] = run_benchmark(
                        process, sampler, gmm, nfes, args.n_samples, args.seed, floors=floors
                    )
            print(f"[{time.perf_counter() - start:6.0f}s] {spec} {pname} done", file=sys.stderr, flush=True)
            for metric in METRICS:
                pc, am = best_over_snr(runs["pc"], metric), best_over_snr(runs["ams"], metric)
                floor = floors["sw2" if metric == "sw2" else "mode_kl"]
                for n in args.pc_nfes:
                    target, pc_snr = pc.get(n, (math.nan, None))
                    need, ams_snr = nfe_to_reach(am, target) if math.isfinite(target) else (None, None)
                    summary.append(
                        {
                            "spec": spec,
                            "process": pname,
                            "metric": metric,
                            "pc_nfe": n,
                            "target": target,
                            "pc_snr": pc_snr,
                            "ams_nfe": need,
                            "ams_snr": ams_snr,
                            "floor": floor,
                            "max_grid": max(args.ams_nfes),
                        }
                    )
                curves_md.append(curve_table(spec, pname, metric, runs, floor))
    elapsed = time.perf_counter() - start
    report = render(summary, curves_md, args, argv, elapsed)
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"wrote {out} ({elapsed:.0f} s)", file=sys.stderr)
    return 0


def curve_table(spec, pname, metric, runs, floor) -> str:
    """Raw results: metric per NFE and snr for both samplers (best in bold)."""
    snrs = sorted(runs["ams"])
    lines = [
        f"#### {spec} / {pname} / {metric} (fresh-data floor {fmt(floor)})",
        "",
        "| sampler | NFE | " + " | ".join(f"snr {s:g}" for s in snrs) + " |",
        "|---|---|" + "---|" * len(snrs),
    ]
    for name in ("pc", "ams"):
        nfes = [r["nfe_budget"] for r in runs[name][snrs[0]]]
        for i, n in enumerate(nfes):
            vals = [runs[name][s][i][metric] for s in snrs]
            finite = [v for v in vals if math.isfinite(v)]
            best = min(finite) if finite else None
            cells = [("**" + fmt(v) + "**") if v == best else fmt(v) for v in vals]
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render(summary, curves_md, args, argv, elapsed) -> str:
    cmd = shlex.join(["python", "scripts/ams_speedup.py", *(sys.argv[1:] if argv is None else argv)])
    out = [
        "# AMS speed-up over the Langevin-corrector PC sampler (exact-score GMM benchmark)",
        "",
        f"Command: `{cmd}` ({elapsed / 60:.1f} min; n_samples={args.n_samples}, seed={args.seed}, "
        f"snr grid {args.snrs}, AMS NFE grid {args.ams_nfes}).",
        "",
        "Exact mixture scores (no network). VE uses the reverse-diffusion predictor, VP Euler–Maruyama; both "
        "samplers take one corrector step per predictor step and the final denoising step (same NFE split). "
        "`snr` is tuned separately for PC and for AMS at every budget and for every metric "
        "(best value over the snr grid). *AMS NFE* is the smallest NFE from which AMS (best snr at each "
        "NFE) stays at or below PC's value at the PC budget for the rest of the grid, log–log interpolated "
        "between grid points; *speed-up* = PC NFE / AMS NFE (> 1: AMS is cheaper). `>max` means AMS ended "
        "the grid above PC's value. Values near the fresh-data floor are within sampling noise, so ratios "
        "there are not meaningful.",
        "",
        "| spec | process | metric | PC NFE | PC value (snr) | floor | AMS NFE (snr) | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        pc_val = f"{fmt(r['target'])} ({r['pc_snr']:g})" if r["pc_snr"] is not None else "nan"
        if r["ams_nfe"] is None:
            ams, ratio = f">{r['max_grid']}", f"<{r['pc_nfe'] / r['max_grid']:.2f}"
        else:
            ams, ratio = f"{r['ams_nfe']:.0f} ({r['ams_snr']:g})", f"{r['pc_nfe'] / r['ams_nfe']:.2f}"
        out.append(
            f"| {r['spec']} | {r['process']} | {r['metric']} | {r['pc_nfe']} | {pc_val} | "
            f"{fmt(r['floor'])} | {ams} | {ratio} |"
        )
    out += ["", "## Raw results (metric per NFE budget and snr; best per row in bold)", ""]
    out += curves_md
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
