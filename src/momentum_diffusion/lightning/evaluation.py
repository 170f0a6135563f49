"""Sample quality for whatever the data module holds: SW2 (+ mode metrics) for vectors, the digits classifier's FD
for the digits, FID (cached reference statistics, metrics/fid.py) for other images, the data's own metrics
for graphs."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def uses_fid(datamodule) -> bool:
    """Image data is scored by FID unless the data module has its own metric (``evaluate``: the digits'
    classifier FD, the graphs' MMDs)."""
    return getattr(datamodule, "kind", None) == "image" and not callable(getattr(datamodule, "evaluate", None))


def fid_available(datamodule, settings: dict | None = None, warn: bool = True) -> bool:
    """False (with one warning) when the data is scored by FID and FID cannot be computed here."""
    from ..metrics.fid import FIDUnavailable, check_fid_available

    if not uses_fid(datamodule):
        return True
    try:
        check_fid_available((settings or {}).get("inception_weights"))
    except FIDUnavailable as exc:
        if warn:
            log.warning("no FID will be logged: %s", exc)
        return False
    return True


def image_fid(datamodule, device="cpu", settings: dict | None = None):
    """The data module's FID evaluator (reference statistics computed once, cached on disk and in memory)."""
    from ..metrics.fid import ImageFID

    settings = settings or {}
    key = (settings.get("inception_weights"), settings.get("fid_reference_images"), str(device))
    evaluators = datamodule.__dict__.setdefault("_fid_evaluators", {})
    if key not in evaluators:
        evaluators[key] = ImageFID(
            datamodule,
            weights_path=settings.get("inception_weights"),
            n_reference=settings.get("fid_reference_images") or 50_000,
            cache_dir=settings.get("fid_cache"),
            device=device,
        )
    return evaluators[key]


def evaluate_samples(
    datamodule, samples: torch.Tensor, seed: int = 0, device="cpu", settings: dict | None = None
) -> dict[str, float]:
    """Metrics of data-space samples against fresh/held-out real data of the same size (FID against the cached
    statistics of the data set's reference images). ``settings``: the ``metrics`` config (FID weights, …)."""
    own = getattr(datamodule, "evaluate", None)
    if callable(own):  # the data's own metrics (digits: classifier FD; graphs: degree/cluster/orbit MMD²)
        return own(samples, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    if getattr(datamodule, "kind", None) == "vector":
        from ..metrics.sliced_wasserstein import sliced_wasserstein2

        ref = datamodule.reference_data(samples.shape[0], gen)
        out = {"sw2": float(sliced_wasserstein2(samples, ref, seed=seed))}
        gmm = getattr(datamodule, "gmm", None)
        if gmm is not None:
            from ..metrics.mode_quality import mode_quality

            quality = mode_quality(samples, gmm)  # scalars, plus per-mode lists that a metrics row cannot hold
            out.update({k: float(v) for k, v in quality.items() if not isinstance(v, (list, tuple))})
        return out
    if (settings or {}).get("fid") is False:  # unavailable: warned once at the start of training
        return {}
    return {"fid": image_fid(datamodule, device, settings)(samples)}


def preview(datamodule, samples: torch.Tensor, path: str | Path) -> Path | None:
    """The data's own picture of samples (graphs: drawn graphs), else a grid (images) or a scatter plot over
    reference data (vectors)."""
    own = getattr(datamodule, "save_preview", None)
    if callable(own):
        return own(samples, Path(path))
    reference = datamodule.reference_data(samples.shape[0]) if samples.dim() == 2 else None
    return save_preview(samples, path, reference)


def save_preview(samples: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None) -> Path | None:
    """A sample grid (images) or scatter plot (2-D vectors, first two coordinates otherwise) as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.dim() == 4:
        save_image_grid(samples, path)
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=1, alpha=0.3, c="grey", label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5, c="C0", label="samples")
    ax.legend(loc="upper right", markerscale=5)
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_image_grid(images: torch.Tensor, path: str | Path, max_images: int = 64, upscale: int = 4) -> None:
    """Images in [-1, 1], (N, C, H, W) → one PNG grid (nearest-neighbour upscaled for tiny images)."""
    from PIL import Image

    x = ((images[:max_images].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    n, c, h, w = x.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.zeros((rows * (h + 1) + 1, cols * (w + 1) + 1, c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = x[i].transpose(1, 2, 0)
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)
    if h < 64:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    img.save(path)
