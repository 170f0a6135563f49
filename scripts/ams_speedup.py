"""How many NFE does AMS need to match PC (Langevin corrector) and EM? (exact-score GMM benchmark)

For every spec (benchmarks/gmm/*.yaml) and process (VE: reverse-diffusion predictor, VP: Euler–Maruyama as
score_sde's VP configs; CLD/HOLD beyond the paper: reverse diffusion, corrector on the noised block), run
EM, PC and AMS (both noise variants, ``reference`` and ``consistent``) on one NFE grid. ``snr`` is tuned
separately for PC and each AMS variant at every NFE and for every metric (best value over the snr grid).
For each reference sampler (PC, EM), budget N in --ref-nfes and metric (SW2, mode-KL), AMS "reaches" the
reference value at the smallest grid NFE from which it stays at or below it for the rest of the grid
(log–log interpolated with the grid point before); speed-up = N / that NFE. The fresh-data floor band
(mean ± 2 std of the metric for --floor-sets fresh data sets of the same size against the same reference
set) marks targets within noise of the floor: ratios there are not meaningful. Every run shares the seed.

    python scripts/ams_speedup.py                                   # VE+VP, all specs (see docs/ams_speedup.md)
    python scripts/ams_speedup.py --processes cld,hold --specs ring8_2d,anisotropic_4d --out docs/x.md
    python scripts/ams_speedup.py --render results.json --ref-nfes 30,50,70   # re-render only (no sampling)
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from momentum_diffusion.cli.benchmark import benchmark_floors, run_benchmark
from momentum_diffusion.exact import load_gmm
from momentum_diffusion.metrics.mode_quality import mode_quality
from momentum_diffusion.metrics.sliced_wasserstein import sliced_wasserstein2
from momentum_diffusion.processes import cld, hold, ve, vp
from momentum_diffusion.samplers import configure
from momentum_diffusion.samplers.ams import adaptive_momentum
from momentum_diffusion.samplers.em import euler_maruyama
from momentum_diffusion.samplers.pc import predictor_corrector

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("sw2", "mode_kl")
PROCESSES = {
    "ve": (ve, "reverse_diffusion"),
    "vp": (vp, "euler_maruyama"),
    "cld": (cld, "euler_maruyama"),
    "hold": (hold, "euler_maruyama"),
}
SAMPLERS = ("em", "pc", "ams_ref", "ams_con")  # em has no snr
REFS = ("pc", "em")
AMS = ("ams_ref", "ams_con")


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def floor_band(gmm, n: int, seed: int, n_sets: int) -> dict:
    """Mean and std of each metric for fresh data sets scored as run_benchmark scores samples."""
    ref = gmm.sample(n, torch.Generator().manual_seed(seed + 1))
    sw2, kl = [], []
    for i in range(n_sets):
        x = gmm.sample(n, torch.Generator().manual_seed(10_000 + seed + i))
        sw2.append(float(sliced_wasserstein2(x, ref, seed=seed)))
        kl.append(float(mode_quality(x, gmm)["mode_kl"]))
    return {m: (statistics.mean(v), statistics.stdev(v)) for m, v in (("sw2", sw2), ("mode_kl", kl))}


def make_sampler(name: str, snr: float | None, predictor: str):
    if name == "em":
        return configure(euler_maruyama)
    if name == "pc":
        return configure(predictor_corrector, snr=snr, predictor=predictor)
    noise = "reference" if name == "ams_ref" else "consistent"
    return configure(adaptive_momentum, snr=snr, predictor=predictor, langevin_noise=noise)


def best_over_snr(runs: dict, metric: str) -> dict[int, tuple[float, float | None]]:
    """NFE budget → (best metric value over the snr grid, the snr achieving it); NaN runs never win."""
    best: dict[int, tuple[float, float | None]] = {}
    for snr, rows in runs.items():
        for r in rows:
            v, n = r[metric], r["nfe_budget"]
            if math.isfinite(v) and (n not in best or v < best[n][0]):
                best[n] = (v, None if snr == "none" else float(snr))
    return best


def nfe_to_reach(curve: dict[int, tuple], target: float, first: bool = False) -> float | None:
    """Smallest NFE from which the curve stays at or below ``target`` on the rest of the grid (robust to
    noisy early dips; ``first``: the first grid point at or below it), log–log interpolated with the grid
    point before; None if it never gets (or ends) above."""
    nfes = sorted(curve)
    above = [i for i, n in enumerate(nfes) if not curve[n][0] <= target]
    if first:
        below = [i for i in range(len(nfes)) if i not in above]
        if not below:
            return None
        above = [i for i in above if i < below[0]]
    elif above and above[-1] == len(nfes) - 1:
        return None
    i = above[-1] + 1 if above else 0
    n, v = nfes[i], curve[nfes[i]][0]
    if i == 0:
        return float(n)
    n0, v0 = nfes[i - 1], curve[nfes[i - 1]][0]
    if not (math.isfinite(v0) and v0 > target >= v > 0):
        return float(n)
    w = (math.log(v0) - math.log(target)) / (math.log(v0) - math.log(v))
    return math.exp(math.log(n0) + w * (math.log(n) - math.log(n0)))


def fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else (f"{v:.4f}" if abs(v) >= 1e-3 else f"{v:.1e}")


def run_all(args) -> dict:
    specs = args.specs.split(",") if args.specs else sorted(p.stem for p in (ROOT / "benchmarks/gmm").glob("*.yaml"))
    results = {"args": vars(args), "runs": [], "floors": {}}
    start = time.perf_counter()
    for spec in specs:
        gmm = load_gmm(spec)
        floors = benchmark_floors(gmm, args.n_samples, args.seed)
        results["floors"][spec] = floor_band(gmm, args.n_samples, args.seed, args.floor_sets)
        for pname in args.processes.split(","):
            make, predictor = PROCESSES[pname]
            process = make()
            for name in SAMPLERS:
                for snr in [None] if name == "em" else args.snrs:
                    rows = run_benchmark(
                        process,
                        make_sampler(name, snr, predictor),
                        gmm,
                        args.nfes,
                        args.n_samples,
                        args.seed,
                        floors=floors,
                    )
                    results["runs"].append({"spec": spec, "process": pname, "sampler": name, "snr": snr, "rows": rows})
            print(f"[{time.perf_counter() - start:6.0f}s] {spec} {pname} done", file=sys.stderr, flush=True)
            results["seconds"] = time.perf_counter() - start
            if args.json:
                Path(args.json).write_text(json.dumps(results))
    results["seconds"] = time.perf_counter() - start
    return results


def analyse(results: dict):
    """Per (spec, process): best-over-snr curves per sampler and metric, and the speed-up rows."""
    args = results["args"]
    groups: dict[tuple, dict] = {}
    for run in results["runs"]:
        key = (run["spec"], run["process"])
        snr = "none" if run["snr"] is None else run["snr"]
        groups.setdefault(key, {}).setdefault(run["sampler"], {})[snr] = run["rows"]
    curves, summary = {}, []
    for (spec, pname), by_sampler in groups.items():
        mean_sd = results["floors"][spec]
        for metric in METRICS:
            cur = {s: best_over_snr(by_sampler[s], metric) for s in SAMPLERS if s in by_sampler}
            curves[(spec, pname, metric)] = cur
            band = mean_sd[metric][0] + 2 * mean_sd[metric][1]
            for n in args["ref_nfes"]:
                row = {"spec": spec, "process": pname, "metric": metric, "nfe": n, "band": band}
                for ref in REFS:
                    target = cur[ref].get(n, (math.nan, None))[0]
                    row[ref] = target
                    for a in AMS:
                        ok = math.isfinite(target)
                        row[(ref, a)] = nfe_to_reach(cur[a], target) if ok else None
                        row[(ref, a, "first")] = nfe_to_reach(cur[a], target, first=True) if ok else None
                summary.append(row)
    return curves, summary


def ratio_cell(n: int, need: float | None, first: float | None, target: float, band: float, max_grid: int) -> str:
    text = f"<{n / max_grid:.2g}" if need is None else f"{n / need:.2f}"
    if not target > band:  # target within the floor band: noise
        return f"({text})"
    if first is not None and (need is None or abs(need / first - 1) > 0.1):
        text += f" [{n / first:.2f}]"  # first crossing differs from the robust one
    return text


def render(results: dict, argv) -> str:
    args = results["args"]
    curves, summary = analyse(results)
    max_grid = max(args["nfes"])
    cmd = shlex.join(["python", "scripts/ams_speedup.py", *results.get("argv", argv)])
    out = [
        "## Exact-score speed-up table",
        "",
        f"Command: `{cmd}` ({results['seconds'] / 60:.1f} min, 1 thread; n_samples={args['n_samples']}, "
        f"seed={args['seed']}, snr grid {args['snrs']}, NFE grid {args['nfes']}).",
        "",
        "Speed-up = reference NFE / NFE that AMS (best snr per NFE) needs to reach the reference sampler's "
        "value (best snr per NFE for PC) and stay there for the rest of the grid; > 1: AMS is cheaper. "
        f"`<x`: AMS ends the grid (max {max_grid}) above the target. `[y]`: the ratio at AMS's first "
        "crossing of the target where it differs (AMS dips below, then rises above again). In parentheses "
        "(first crossing omitted): the target is inside "
        "the fresh-data floor band (mean + 2 std of fresh data sets), where the comparison is noise.",
        "",
        "| spec | process | metric | N | floor band | PC(N) | EM(N) | ref vs PC | ref vs EM | con vs PC | con vs EM |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        cells = [
            ratio_cell(r["nfe"], r[(ref, a)], r[(ref, a, "first")], r[ref], r["band"], max_grid)
            for a in AMS
            for ref in REFS
        ]
        out.append(
            f"| {r['spec']} | {r['process']} | {r['metric']} | {r['nfe']} | ≤{fmt(r['band'])} | {fmt(r['pc'])} | "
            f"{fmt(r['em'])} | " + " | ".join(cells) + " |"
        )
    out += ["", "### Curves (best value over the snr grid, the snr in brackets)", ""]
    for (spec, pname, metric), cur in curves.items():
        m, s = results["floors"][spec][metric]
        out += [
            f"#### {spec} / {pname} / {metric} (fresh data: {fmt(m)} ± {fmt(s)})",
            "",
            "| NFE | " + " | ".join(SAMPLERS) + " |",
            "|---|" + "---|" * len(SAMPLERS),
        ]
        for n in args["nfes"]:
            cells = []
            for name in SAMPLERS:
                v, snr = cur[name].get(n, (math.nan, None))
                cells.append(fmt(v) + ("" if snr is None else f" [{snr:g}]"))
            out.append(f"| {n} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", default="", help="comma-separated spec names (default: all benchmarks/gmm/*.yaml)")
    ap.add_argument("--processes", default="ve,vp")
    ap.add_argument("--ref-nfes", type=ints, default=[100, 200, 500, 1000], help="reference budgets N")
    ap.add_argument("--nfes", type=ints, default=[10, 20, 30, 50, 70, 100, 150, 200, 300, 500, 1000])
    ap.add_argument("--snrs", type=floats, default=[0.05, 0.1, 0.16, 0.25], help="snr grid, tuned per NFE")
    ap.add_argument("--n-samples", type=int, default=5000)
    ap.add_argument("--floor-sets", type=int, default=8, help="fresh data sets for the floor band")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="write raw results here (after every spec/process)")
    ap.add_argument("--render", default="", help="only render a --json file")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        results["args"]["ref_nfes"] = args.ref_nfes  # a rendering choice: any budgets on the grid
    else:
        results = run_all(args)
        results["argv"] = argv
    report = render(results, argv)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
