"""Sample quality for whatever the data module holds: SW2 (+ mode metrics) for vectors, FD for images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def evaluate_samples(datamodule, samples: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Metrics of data-space samples against fresh/held-out real data of the same size."""
    own = getattr(datamodule, "evaluate", None)
    if callable(own):  # the data's own metrics (graphs: degree/cluster/orbit MMD², data/graphs.py)
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
    if type(datamodule).__name__ == "DigitsDataModule":
        from ..metrics.digits_classifier import digits_fd

        return {"fd_digits": float(digits_fd(samples))}
    from ..metrics.fid import FrechetDistance, InceptionFeatures

    fd = FrechetDistance(InceptionFeatures(), datamodule.reference_data(min(10_000, 50 * samples.shape[0]), gen))
    return {"fid": float(fd.compute(samples))}


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
