"""VP vs CLD vs HOLD on the digits at equal training steps and network width (issue 19): FD vs NFE, one table.

Every run trains through the real entry point (src/train.py: one thread, no evaluation callback) into
OUT/runs/<variant>_s<seed>; a run whose checkpoint exists is reused, so an interrupted study resumes. Every
checkpoint is then sampled (EMA weights, 1,000 samples, one seed) with each sampler listed for its process at
every NFE and scored with the digits FD; rows go to OUT/fd.csv as they come (existing rows are skipped). The
report gives FD mean ± std over seeds per NFE and the best FD at any NFE (per seed, then mean ± std).

A variant is a process plus Hydra overrides. By default one variant per process and per point of ``--grid``
(the same grid for each process); ``--variant 'tag:process key=value …'`` lists them explicitly (ablations).

    # tuning grid, one seed, FD at a few NFE
    python scripts/compare_processes.py --out /tmp/cmp --seeds 0 --nfes 20,50 \\
        --grid optim.lr=1e-3,2e-3 --grid optim.ema_decay=0.995,0.999
    # one ablation: the mixed score's data std
    python scripts/compare_processes.py --out /tmp/cmp --seeds 0 --nfes 20,50 \\
        --variant 'std1:cld objective.data_std=1.0' --variant 'std05:cld objective.data_std=0.5'
    # the table of a study (any subset: --processes / --tags filter it)
    python scripts/compare_processes.py --out /tmp/cmp --report --processes cld --tags lr2e-3,lr4e-3
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ["process", "variant", "seed", "sampler", "nfe_budget", "nfe_used", "fd_digits", "seconds"]
# Each process's own sampler and the exponential integrator (stochastic, λ = 1: best on trained networks).
DEFAULT_SAMPLERS = {
    "vp": ["em", "pc:snr=0.25", "expint:stochasticity=1.0,prediction=data"],
    "cld": ["sscs", "expint:stochasticity=1.0,prediction=data"],
    "hold": ["lie_trotter", "expint:stochasticity=1.0,prediction=data"],
}


@dataclass(frozen=True)
class Variant:
    tag: str
    process: str
    overrides: tuple[str, ...]

    def run_dir(self, out: Path, seed: int) -> Path:
        return out / "runs" / f"{self.process}_{self.tag}_s{seed}"


def slug(overrides) -> str:
    """A short tag from overrides: 'optim.lr=1e-3 optim.ema_decay=0.995' → 'lr1e-3_ema_decay0.995'."""
    parts = [f"{k.split('.')[-1]}{v}" for k, v in (o.split("=", 1) for o in overrides)]
    return re.sub(r"[^A-Za-z0-9._-]", "", "_".join(parts)) or "default"


def fixed(args, process: str) -> tuple[str, ...]:
    """The --set overrides of every run of ``process``: those for 'all', then its own."""
    return tuple(args.set.get("all", ())) + tuple(args.set.get(process, ()))


def variants(args) -> list[Variant]:
    if args.variant:
        out = []
        for text in args.variant:
            tag, _, rest = text.partition(":")
            process, *overrides = rest.split()
            out.append(Variant(tag, process, fixed(args, process) + tuple(overrides)))  # the variant's own win
        return out
    axes = [[f"{key}={v}" for v in values.split(",")] for key, _, values in (g.partition("=") for g in args.grid)]
    return [
        Variant(slug(point), p, fixed(args, p) + tuple(point))
        for p in args.processes
        for point in itertools.product(*axes)
    ]


def train(variant: Variant, seed: int, args) -> Path:
    """Train one run through src/train.py (skipped when its checkpoint exists); returns the checkpoint."""
    run_dir = variant.run_dir(args.out, seed)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        return ckpt
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), f"diffusion={variant.process}", f"seed={seed}"]
    cmd += ["threads=1", f"trainer.max_steps={args.steps}", "callbacks.sample_evaluation=null"]
    cmd += ["callbacks.progress=null", f"hydra.run.dir={run_dir}", *variant.overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not ckpt.exists():
        raise RuntimeError(f"training failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    print(f"trained {run_dir.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return ckpt


def sampler_spec(spec: str) -> tuple[str, dict]:
    """'expint:stochasticity=1.0,order=3' → ('expint', {'stochasticity': 1.0, 'order': 3})."""
    import yaml

    name, _, rest = spec.partition(":")
    options = {k: yaml.safe_load(v) for k, _, v in (kv.partition("=") for kv in rest.split(",") if kv)}
    return name, options


def evaluate_run(job: tuple) -> list[dict]:
    """Sample one checkpoint with each sampler at each NFE (skipping ``done`` keys); returns the rows."""
    import torch
    from omegaconf import OmegaConf

    from momentum_diffusion.cli.common import build_sampler, make_generator, module_from_checkpoint
    from momentum_diffusion.metrics.digits_classifier import digits_fd
    from momentum_diffusion.samplers import configure

    variant, seed, ckpt, specs, nfes, n_samples, eval_seed, done = job
    torch.set_num_threads(1)
    module, _ = module_from_checkpoint(ckpt)
    rows = []
    for spec in specs:
        name, options = sampler_spec(spec)
        cfg = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "sampler" / f"{name}.yaml"), options)
        sampler = build_sampler(cfg, module.process)
        for nfe in nfes:
            if (variant.process, variant.tag, str(seed), spec, str(nfe)) in done:
                continue
            start = time.perf_counter()
            try:  # one failing budget (e.g. a plan that does not converge at 3 NFE) must not end the study
                x, used = module.sample(
                    n_samples, configure(sampler, nfe=nfe), generator=make_generator(eval_seed, "cpu")
                )
                fd = float(digits_fd(x))
            except (RuntimeError, ValueError) as exc:
                print(f"{variant.tag} s{seed} {spec} @{nfe}: {exc}", file=sys.stderr, flush=True)
                fd, used = math.nan, nfe
            row = dict(zip(FIELDS, (variant.process, variant.tag, seed, spec, nfe, used)))
            rows.append(dict(row, fd_digits=round(fd, 4), seconds=round(time.perf_counter() - start, 1)))
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.2f} ± {std:.2f}"


def report(rows: list[dict], nfes: list[int] | None = None) -> str:
    """Markdown: one row per (process, variant, sampler): FD mean ± std over seeds per NFE, best FD at any NFE
    (the minimum over NFE per seed, then mean ± std; the NFE that reached it most often in brackets)."""
    groups: dict[tuple, dict[int, dict[str, float]]] = {}
    for r in rows:
        key = (r["process"], r["variant"], r["sampler"])
        if math.isfinite(float(r["fd_digits"])):  # a failed budget is recorded as nan and left out
            groups.setdefault(key, {}).setdefault(int(r["nfe_budget"]), {})[r["seed"]] = float(r["fd_digits"])
    if not groups:
        return "(no FD rows)\n"
    nfes = nfes or sorted({n for g in groups.values() for n in g})
    head = "| process | variant | sampler | seeds | " + " | ".join(f"NFE {n}" for n in nfes) + " | best |"
    out = [head, "|" + "---|" * (5 + len(nfes))]
    for (process, tag, spec), by_nfe in sorted(groups.items()):
        seeds = sorted({s for per_seed in by_nfe.values() for s in per_seed})
        cells = [mean_std(list(by_nfe.get(n, {}).values())) for n in nfes]
        best, where = [], []
        for s in seeds:
            curve = {n: v[s] for n, v in by_nfe.items() if s in v}
            n_best = min(curve, key=curve.get)
            best.append(curve[n_best])
            where.append(n_best)
        mode = max(set(where), key=where.count)
        line = f"| {process} | {tag} | {spec} | {len(seeds)} | " + " | ".join(cells)
        out.append(line + f" | **{mean_std(best)}** (@{mode}) |")
    return "\n".join(out) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="study directory: runs/, fd.csv")
    ap.add_argument("--processes", type=lambda s: s.split(","), default=["vp", "cld", "hold"])
    ap.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1500, help="training steps (equal for every process)")
    ap.add_argument("--grid", action="append", default=[], help="KEY=V1,V2: one tuning axis (repeatable)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        help="PROCESS:KEY=VALUE for every run of that process (all:KEY=VALUE: every run)",
    )
    ap.add_argument("--variant", action="append", default=[], help="'TAG:PROCESS KEY=VALUE …' (repeatable)")
    ap.add_argument("--sampler", action="append", default=[], help="PROCESS=SPEC,SPEC (replaces its default)")
    ap.add_argument("--nfes", type=lambda s: [int(v) for v in s.split(",")], default=[10, 20, 50, 100, 200, 500])
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--eval-seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="runs trained / evaluated at once (one thread each)")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--report", action="store_true", help="print the table of OUT/fd.csv and exit")
    ap.add_argument("--tags", type=lambda s: s.split(","), default=None, help="--report: only these variants")
    args = ap.parse_args(argv)
    sets: dict[str, list[str]] = {}
    for text in args.set:
        process, _, override = text.partition(":")
        sets.setdefault(process, []).append(override)
    args.set = sets
    args.samplers = dict(DEFAULT_SAMPLERS)
    for text in args.sampler:  # 'cld=sscs;expint:stochasticity=1.0,order=3' (';' separates specs with commas)
        process, _, specs = text.partition("=")
        args.samplers[process] = specs.split(";")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    path = args.out / "fd.csv"
    if args.report:
        rows = [r for r in read_rows(path) if r["process"] in args.processes]
        print(report([r for r in rows if args.tags is None or r["variant"] in args.tags]))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [(v, s) for v in variants(args) for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:  # the work runs in the train.py subprocesses
        ckpts = list(pool.map(lambda vs: train(*vs, args), runs))
    if args.train_only:
        return 0
    done = {(r["process"], r["variant"], r["seed"], r["sampler"], r["nfe_budget"]) for r in read_rows(path)}
    jobs = [
        (v, s, c, args.samplers[v.process], args.nfes, args.n_samples, args.eval_seed, done)
        for (v, s), c in zip(runs, ckpts)
    ]
    new = not path.exists()
    with path.open("a", newline="") as f, ProcessPoolExecutor(args.jobs) as pool:
        writer = csv.DictWriter(f, FIELDS)
        if new:
            writer.writeheader()
        for rows in pool.map(evaluate_run, jobs):
            writer.writerows(rows)
            f.flush()
    print(report([r for r in read_rows(path) if (r["process"], r["variant"]) in {(v.process, v.tag) for v, _ in runs}]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
