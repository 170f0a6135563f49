"""One-command GPU check (`make gpu-check`): the image pipeline end to end on one GPU, through the real CLIs.

Writes CIFAR-10 files in the official pickle layout and a folder of 256² CelebA-HQ-style JPEGs, then
  1. trains experiment=cifar10_cld and cifar10_hold for a few steps (bf16, NCSN++; the end-of-training
     evaluation samples and scores at a small NFE, the path that used to fail on the GPU);
  2. runs sample.py with every sampler that supports each process (one Hydra multirun per process);
  3. runs evaluate.py with metric=fid through the FID Inception (the real weights with --inception-weights or
     $MOMENTUM_DIFFUSION_INCEPTION_WEIGHTS; otherwise a randomly initialised Inception, which checks the path
     but gives a meaningless value) and metric=nll;
  4. trains experiment=celebahq_cld and celebahq_hold for a few steps at 256².
Prints one table (check, status, seconds, img/s, peak GiB) and exits non-zero if any row failed.

    python scripts/gpu_check.py [--steps 20] [--nfe 10] [--out DIR]
    python scripts/gpu_check.py --device cpu --tiny     # the same checks, small, on a CPU (tests/test_gpu_check.py)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from momentum_diffusion.data.images import write_cifar10_batches
from momentum_diffusion.metrics.fid import save_random_inception

REPO = Path(__file__).resolve().parents[1]
SAMPLERS = ["em", "pc", "sscs", "lie_trotter", "ams", "expint"]  # every sampler of CLD and HOLD (+ ode below)


def write_celebahq(root: Path, n: int, size: int) -> None:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        Image.fromarray(rng.randint(0, 256, size=(size, size, 3)).astype(np.uint8)).save(root / f"{i:05d}.jpg")


def peak_memory(run_dir: Path) -> str:
    """The last train/peak_gib a training run logged (CSV logger), if any."""
    import csv

    for path in sorted(run_dir.rglob("metrics.csv")):
        values = [r["train/peak_gib"] for r in csv.DictReader(open(path)) if r.get("train/peak_gib")]
        if values:
            return f"{float(values[-1]):.1f}"
    return ""


class Checks:
    def __init__(self, out: Path, timeout: int):
        self.out, self.timeout, self.rows = out, timeout, []

    def run(self, name: str, script: str, *args: str, images: int = 0) -> Path | None:
        """Run one CLI; a row with its status, time and images per second. Returns its run directory."""
        run_dir = self.out / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        multirun = "-m" in args
        hydra_dir = f"hydra.sweep.dir={run_dir}" if multirun else f"hydra.run.dir={run_dir}"
        cmd = [sys.executable, str(REPO / "src" / script), *args, hydra_dir]
        env = dict(os.environ, MPLBACKEND="Agg", WANDB_MODE="offline", HYDRA_FULL_ERROR="1")
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=self.timeout, cwd=REPO)
            ok, tail = proc.returncode == 0, proc.stderr.strip().splitlines()[-1:] or [""]
        except subprocess.TimeoutExpired:
            ok, tail = False, [f"timed out after {self.timeout} s"]
        seconds = time.perf_counter() - start
        peak = peak_memory(run_dir) if ok else ""
        self.rows.append(
            {
                "check": name,
                "status": "ok" if ok else f"FAIL: {tail[0][:90]}",
                "seconds": f"{seconds:.1f}",
                "img/s": f"{images / seconds:.3g}" if ok and images else "",
                "peak GiB": peak,
                "command": " ".join([script, *args]),
            }
        )
        print(f"{'ok  ' if ok else 'FAIL'} {seconds:7.1f} s  {name}", flush=True)
        return run_dir if ok else None

    def table(self) -> str:
        keys = ["check", "status", "seconds", "img/s", "peak GiB", "command"]
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in self.rows]
        return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small networks and images (CPU smoke run)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--n-samples", type=int, default=256)
    parser.add_argument("--inception-weights", default=os.environ.get("MOMENTUM_DIFFUSION_INCEPTION_WEIGHTS"))
    parser.add_argument("--timeout", type=int, default=600, help="per check, seconds")
    parser.add_argument("--out", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check_")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA GPU on this machine (use --device cpu --tiny for a CPU smoke run)", file=sys.stderr)
            return 2
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    batch = 8 if args.tiny else 128
    write_cifar10_batches(out / "cifar10", per_batch=max(batch, 64 if args.tiny else 512))
    write_celebahq(out / "celebahq", n=16 if args.tiny else 64, size=256)
    weights = Path(args.inception_weights) if args.inception_weights else save_random_inception(out / "inception.pth")
    tiny = ["model=unet_small", "model.base_channels=8", "trainer=cpu", "data.num_workers=0"] if args.tiny else []
    n_ref, n_eval = (16, 8) if args.tiny else (2048, 256)
    fid = [
        f"metrics.inception_weights={weights}",
        f"metrics.fid_reference_images={n_ref}",
        f"metrics.fid_cache={out}/fid",
    ]
    checks = Checks(out, args.timeout)
    for process in ("cld", "hold"):
        run_dir = checks.run(
            f"train cifar10_{process}",
            "train.py",
            f"experiment=cifar10_{process}",
            f"data.root={out / 'cifar10'}",
            f"data.batch_size={batch}",
            f"trainer.max_steps={args.steps}",
            f"sampler.nfe={args.nfe}",
            f"callbacks.sample_evaluation.n_samples={n_eval}",
            "callbacks.checkpoint.every_n_train_steps=1000000",
            "callbacks.throughput.every_n_steps=5",
            *fid,
            *tiny,
            images=batch * args.steps,
        )
        if run_dir is None:
            continue
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        samplers = ",".join(SAMPLERS)
        common = [f"ckpt={ckpt}", f"device={args.device}", f"sampler.nfe={args.nfe}"]
        n = [f"n_samples={args.n_samples}", f"batch_size={args.n_samples}"]
        checks.run(  # one process, one job per sampler (Hydra multirun); img/s counts image·NFE
            f"sample {process}: {samplers}",
            "sample.py",
            "-m",
            f"sampler={samplers}",
            *common,
            *n,
            images=args.n_samples * args.nfe * len(SAMPLERS),
        )
        checks.run(
            f"sample {process}: ode heun",
            "sample.py",
            "sampler=ode",
            "sampler.method=heun",
            *common,
            *n,
            images=args.n_samples * args.nfe,
        )
        checks.run(
            f"evaluate {process} fid", "evaluate.py", *common, "metric=fid", f"n_samples={n_eval}", *fid, images=n_eval
        )
        checks.run(
            f"evaluate {process} nll", "evaluate.py", *common, "metric=nll", "n_samples=8", "metrics.nll_tolerance=1e-3"
        )
    for process in ("cld", "hold"):
        checks.run(
            f"train celebahq_{process} 256²",
            "train.py",
            f"experiment=celebahq_{process}",
            f"data.root={out / 'celebahq'}",
            f"trainer.max_steps={max(2, args.steps // 4)}",
            "data.batch_size=4" if args.tiny else "data.batch_size=32",
            "callbacks.sample_evaluation=null",
            "callbacks.throughput.every_n_steps=2",
            *tiny,
            images=(4 if args.tiny else 32) * max(2, args.steps // 4),
        )
    print(checks.table())
    (out / "gpu_check.md").write_text(checks.table() + "\n")
    failed = [r["check"] for r in checks.rows if r["status"] != "ok"]
    print(f"{len(checks.rows) - len(failed)}/{len(checks.rows)} checks passed; outputs in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
