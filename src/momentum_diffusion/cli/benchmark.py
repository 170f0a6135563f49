"""Exact-score benchmark (src/benchmark.py): sampler quality vs NFE on a Gaussian mixture, no network.

Writes DIR/results.csv (gmm, diffusion, sampler, nfe_budget, nfe_used, sw2, noise_floor, mode_tv, mode_kl,
seconds, mode_kl_floor), DIR/samples/nfe<N>.npy and DIR/sw2_vs_nfe.png (+ mode_kl_vs_nfe.png).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from ..exact import ExactScore, load_gmm
from ..metrics.mode_quality import mode_quality, reference_mode_kl
from ..metrics.sliced_wasserstein import noise_floor, sliced_wasserstein2
from ..samplers import configure
from ..samplers.budget import nfe_budgets
from ..tables import write_rows
from .common import UserError, build_sampler, check_positive_int, check_seed, one_line_errors
from .run_dir import claim_run_dir

log = logging.getLogger(__name__)


def sampler_label(sampler) -> str:
    """Short name for tables: the sampler's name plus the options that change the algorithm."""
    name, kw = sampler.func.sampler_name, sampler.keywords
    if name == "ode":
        return f"ode-{kw.get('method', 'dopri5')}"
    return name


def run_benchmark(
    process,
    sampler,
    gmm,
    nfes,
    n_samples: int,
    seed: int,
    out_dir: Path | None = None,
    batch_size: int | None = None,
    floors: dict | None = None,
) -> list[dict]:
    """One row per NFE budget; the same seed gives the same prior draws and noise for every budget."""
    score = ExactScore(process, gmm)
    floors = floors or benchmark_floors(gmm, n_samples, seed)
    batch_size = batch_size or n_samples
    rows = []
    for nfe in nfes:
        run = configure(sampler, nfe=int(nfe))
        gen = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        parts, used = [], 0
        for first in range(0, n_samples, batch_size):
            m = min(batch_size, n_samples - first)
            z = process.sample_prior((m, gmm.dim), generator=gen, dtype=torch.float32)
            z, used = run(process, score, z, generator=gen)
            parts.append(process.data_block(z))
        x = torch.cat(parts)
        seconds = time.perf_counter() - start
        ref = gmm.sample(n_samples, torch.Generator().manual_seed(seed + 1))
        quality = (
            mode_quality(x, gmm) if torch.isfinite(x).all() else {"mode_tv": float("nan"), "mode_kl": float("nan")}
        )
        rows.append(
            {
                "gmm": gmm.name,
                "diffusion": process.name,
                "sampler": sampler_label(sampler),
                "nfe_budget": int(nfe),
                "nfe_used": int(used),
                "sw2": float(sliced_wasserstein2(x, ref, seed=seed)) if torch.isfinite(x).all() else float("nan"),
                "noise_floor": floors["sw2"],
                "mode_tv": float(quality["mode_tv"]),
                "mode_kl": float(quality["mode_kl"]),
                "seconds": round(seconds, 3),
                "mode_kl_floor": floors["mode_kl"],
            }
        )
        log.info("%s", rows[-1])
        if out_dir is not None:
            (out_dir / "samples").mkdir(parents=True, exist_ok=True)
            np.save(out_dir / "samples" / f"nfe{int(nfe)}.npy", x.numpy().astype(np.float32))
    return rows


def benchmark_floors(gmm, n: int, seed: int) -> dict:
    """What fresh data of the same size scores: SW2 noise floor and mode-KL of a data set."""
    sw2 = noise_floor(gmm.sample, n, seed=seed)
    kl = reference_mode_kl(gmm, n, torch.Generator().manual_seed(seed + 2))
    return {"sw2": float(sw2), "mode_kl": float(kl)}


def plot_rows(rows: list[dict], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["gmm"], r["diffusion"], r["sampler"]), []).append(r)
    for metric, floor_key, fname in (
        ("sw2", "noise_floor", "sw2_vs_nfe.png"),
        ("mode_kl", "mode_kl_floor", "mode_kl_vs_nfe.png"),
    ):
        specs = sorted({k[0] for k in groups})
        fig, axes = plt.subplots(1, len(specs), figsize=(5 * len(specs), 4), squeeze=False)
        for ax, spec in zip(axes[0], specs):
            for (g, diffusion, name), rs in sorted(groups.items()):
                if g == spec:
                    ax.loglog([r["nfe_used"] for r in rs], [r[metric] for r in rs], "o-", label=f"{diffusion}+{name}")
            floor = next(r[floor_key] for r in rows if r["gmm"] == spec)
            ax.axhline(floor, color="k", ls="--", lw=1, label="fresh data")
            ax.set(title=spec, xlabel="NFE", ylabel=metric)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)


@one_line_errors
def benchmark(cfg: DictConfig):
    claim_run_dir(HydraConfig.get().runtime.output_dir)  # one run per directory
    n = check_positive_int("n_samples", cfg.n_samples)
    check_seed(cfg.seed)
    check_positive_int("batch_size", cfg.batch_size)  # 0 meant "unbatched" without a word, -1 crashed in torch.cat
    nfes = nfe_budgets(cfg.sampler.get("nfe"))  # sampler.nfe: one budget or a list (one row each)
    if nfes == [None]:
        raise UserError("benchmark.py needs a budget: sampler.nfe=N or 'sampler.nfe=[N1,N2]'")
    torch.set_num_threads(check_positive_int("threads", cfg.threads))
    gmm = load_gmm(cfg.gmm)
    process = instantiate(cfg.diffusion, _convert_="all")
    sampler = build_sampler(cfg.sampler, process)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = run_benchmark(
        process, sampler, gmm, nfes, n, cfg.seed, out_dir if cfg.save_samples else None, batch_size=cfg.batch_size
    )
    write_rows(out_dir / "results.csv", rows)
    plot_rows(rows, out_dir)
    return rows
