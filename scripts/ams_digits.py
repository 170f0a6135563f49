"""AMS vs PC (Langevin corrector) vs EM on a trained digits checkpoint: digits FD per NFE and snr.

Loads the checkpoint once (EMA weights, as src/evaluate.py), then for every sampler and snr draws
--n-samples images at every NFE of the grid with the same seed and scores them with the digits FD (the
metric src/evaluate.py reports). Rows go to --csv as they come (one line per sampler, snr, NFE), so a
long run can be read while it goes; --skip-existing resumes from that file.

    python scripts/ams_digits.py --ckpt /tmp/vp_train/checkpoints/last.ckpt --csv /tmp/ams_digits_vp.csv
    python scripts/ams_digits.py --report /tmp/ams_digits_vp.csv --ref-nfes 100,200,500   # markdown tables
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

from momentum_diffusion.cli.common import make_generator, module_from_checkpoint
from momentum_diffusion.metrics.digits_classifier import digits_fd
from momentum_diffusion.samplers import configure
from momentum_diffusion.samplers.ams import adaptive_momentum
from momentum_diffusion.samplers.em import euler_maruyama
from momentum_diffusion.samplers.pc import predictor_corrector

FIELDS = ["sampler", "snr", "nfe_budget", "nfe_used", "fd_digits", "seconds"]
NAMES = ("em", "pc", "ams_ref", "ams_con")


def report(path: Path, ref_nfes: list[int]) -> str:
    """FD per NFE (best over snr, snr in brackets) and the NFE each AMS variant needs to reach PC's / EM's
    FD at each reference budget (same rule as scripts/ams_speedup.py)."""
    from ams_speedup import nfe_to_reach  # scripts/ is on sys.path when run as a script

    curves: dict[str, dict[int, tuple]] = {n: {} for n in NAMES}
    with path.open() as f:
        for r in csv.DictReader(f):
            n, v, snr = int(r["nfe_budget"]), float(r["fd_digits"]), r["snr"]
            if n not in curves[r["sampler"]] or v < curves[r["sampler"]][n][0]:
                curves[r["sampler"]][n] = (v, snr)
    nfes = sorted({n for c in curves.values() for n in c})
    out = ["| NFE | " + " | ".join(NAMES) + " |", "|---|" + "---|" * len(NAMES)]
    for n in nfes:
        cells = [f"{c[n][0]:.2f}" + (f" [{c[n][1]}]" if c[n][1] else "") if n in c else "–" for c in curves.values()]
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    out += ["", "| reference | FD | AMS-ref NFE (ratio) | AMS-con NFE (ratio) |", "|---|---|---|---|"]
    for ref in ("pc", "em"):
        for n in ref_nfes:
            if n not in curves[ref]:
                continue
            target, cells = curves[ref][n][0], []
            for a in ("ams_ref", "ams_con"):
                if not curves[a]:
                    cells.append("–")
                    continue
                need, top = nfe_to_reach(curves[a], target), max(curves[a])
                cells.append(f">{top} (<{n / top:.2f})" if need is None else f"{need:.0f} ({n / need:.2f})")
            out.append(f"| {ref.upper()}@{n} | {target:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def samplers(names: list[str], snrs: list[float], predictor: str):
    for name in names:
        if name == "em":
            yield name, None, configure(euler_maruyama)
            continue
        for snr in snrs:
            if name == "pc":
                yield name, snr, configure(predictor_corrector, snr=snr, predictor=predictor)
            else:
                noise = "reference" if name == "ams_ref" else "consistent"
                yield name, snr, configure(adaptive_momentum, snr=snr, predictor=predictor, langevin_noise=noise)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt")
    ap.add_argument("--csv")
    ap.add_argument("--report", default="", help="print the markdown tables of a --csv file and exit")
    ap.add_argument("--ref-nfes", type=ints, default=[100, 200, 500])
    ap.add_argument("--samplers", default="em,pc,ams_ref,ams_con")
    ap.add_argument("--nfes", type=ints, default=[20, 50, 100, 200, 500])
    ap.add_argument("--snrs", type=floats, default=[0.05, 0.1, 0.16])
    ap.add_argument("--predictor", default="euler_maruyama")
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-existing", action="store_true")
    args = ap.parse_args(argv)
    if args.report:
        print(report(Path(args.report), args.ref_nfes))
        return 0
    if not (args.ckpt and args.csv):
        ap.error("--ckpt and --csv are required to sample")
    torch.set_num_threads(1)
    module, _ = module_from_checkpoint(args.ckpt)
    path = Path(args.csv)
    done = set()
    if args.skip_existing and path.exists():
        with path.open() as f:
            done = {(r["sampler"], r["snr"], r["nfe_budget"]) for r in csv.DictReader(f)}
    new = not path.exists() or not args.skip_existing
    with path.open("w" if new else "a", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        if new:
            writer.writeheader()
        for name, snr, sampler in samplers(args.samplers.split(","), args.snrs, args.predictor):
            for nfe in args.nfes:
                if (name, str(snr), str(nfe)) in done:
                    continue
                start = time.perf_counter()
                gen = make_generator(args.seed, module.device)
                x, used = module.sample(args.n_samples, configure(sampler, nfe=nfe), generator=gen)
                row = {"sampler": name, "snr": snr, "nfe_budget": nfe, "nfe_used": used}
                row["fd_digits"] = round(float(digits_fd(x)), 4)
                row["seconds"] = round(time.perf_counter() - start, 1)
                writer.writerow(row)
                f.flush()
                print(row, file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
