"""Building blocks shared by the image networks (small UNet, DDPM++, NCSN++).

- Initialisation: score_sde's ``default_init`` is TF's uniform fan-avg variance scaling; we reimplement it.
- GroupNorm with ``min(C/4, 32)`` groups (Wu & He 2018; the rule used by DDPM++/NCSN++).
- Residual blocks: DDPM's block (Ho et al. 2020) and the BigGAN block with resampling inside the residual
  branch (Brock et al. 2019, App. B; Song et al. 2021, App. H.1), with the 1/√2 skip rescaling of NCSN++.
- Resampling by 2, naive (nearest / average pooling) or with the FIR kernel [1, 3, 3, 1] (Karras et al.
  2019, StyleGAN2's ``upfirdn2d``). We do **not** port ``upfirdn2d``: FIR here is a fixed depthwise
  separable blur, applied with stride 2 to downsample and as a stride-2 transposed conv to upsample. For the
  default kernel this is exactly bilinear upsampling and a [1,3,3,1]/8 anti-aliased decimation.
- Self-attention over pixels (Wang et al. 2018; single head as in DDPM), via ``scaled_dot_product_attention``.

Speed (issue 12) without changing what is computed — same parameters, same state_dict keys, same FLOPs:

- `GroupNorm` stays in the input's dtype under autocast (statistics are still accumulated in float32 by the
  kernel): autocast would otherwise run every GroupNorm in float32 and write a float32 activation that the
  next conv casts straight back. It optionally applies SiLU, so ``GN → SiLU`` is one module that
  ``torch.compile`` fuses into one kernel (and, with `residual`, the ``(x + h)·s`` epilogue after the conv).
- The BigGAN block takes the *activated* time embedding: SiLU(temb) is computed once per forward by the
  backbone instead of once per block.
- Attention reshapes with einops are views for channels_last tensors, so channels_last stays channels_last
  end to end (a contiguous input keeps a contiguous output).
- Blocks contain no data-dependent control flow, so each compiles to one graph (regional compilation:
  `ScoreUNet.compile_blocks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = [
    "variance_scaling_",
    "conv3x3",
    "conv1x1",
    "linear",
    "group_norm",
    "GroupNorm",
    "residual",
    "FIRResample",
    "NaiveResample",
    "make_resample",
    "Downsample",
    "Upsample",
    "ResnetBlockBigGAN",
    "AttnBlock",
]

FIR_KERNEL = (1, 3, 3, 1)


# ----------------------------------------------------------------------------------------------------------
# Initialisation and primitive layers.


def variance_scaling_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Fill ``weight`` uniformly with variance ``scale / fan_avg``; ``scale = 0`` gives exact zeros."""
    receptive = weight[0][0].numel() if weight.ndim > 2 else 1
    fan_avg = (weight.shape[0] + weight.shape[1]) * receptive / 2
    with torch.no_grad():
        if scale == 0:
            return weight.zero_()
        bound = math.sqrt(3.0 * scale / fan_avg)
        return weight.uniform_(-bound, bound)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
    variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch: int, out_ch: int, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, 1)
    variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def linear(in_dim: int, out_dim: int, init_scale: float = 1.0) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    variance_scaling_(layer.weight, init_scale)
    nn.init.zeros_(layer.bias)
    return layer


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _autocast_would_upcast(x: torch.Tensor) -> bool:
    """Autocast runs ``group_norm`` in float32 on CUDA (and other accelerators), not on CPU."""
    return x.dtype != torch.float32 and x.device.type != "cpu" and _autocast_on(x.device.type)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state_dict keys) that keeps the input's dtype, + optional SiLU.

    Under autocast ``group_norm`` is a float32 op: a bfloat16 input comes back float32 and the following
    conv casts it back to bfloat16 — two extra full-size passes over memory per norm. Here a low-precision
    input is normalised in its own dtype (the kernels accumulate the statistics in float32), so the output
    is what the next conv would have cast it to anyway. Float32 inputs are untouched. CPU autocast already
    keeps ``group_norm`` in the input's dtype (with float32 affine parameters), so there nothing changes.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-6, act: bool = False):
        super().__init__(num_groups, num_channels, eps=eps)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _autocast_would_upcast(x):
            with torch.autocast(x.device.type, enabled=False):
                h = F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)
        else:
            h = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.silu(h) if self.act else h

    def extra_repr(self) -> str:
        return super().extra_repr() + (", act=SiLU" if self.act else "")


def group_norm(channels: int, act: bool = False) -> GroupNorm:
    """GroupNorm with ``min(C // 4, 32)`` groups, lowered until it divides C (e.g. C = 200 → 25 groups).

    ``act=True`` appends SiLU (``GN → SiLU`` as one module: one fused kernel under ``torch.compile``).
    """
    groups = max(1, min(channels // 4, 32))
    while channels % groups:
        groups -= 1
    return GroupNorm(groups, channels, eps=1e-6, act=act)


def residual(x: torch.Tensor, h: torch.Tensor, scale: float) -> torch.Tensor:
    """``(x + h) · scale`` with one temporary (the scale is applied in place; exact same values)."""
    out = x + h
    return out if scale == 1.0 else out.mul_(scale)


def same_format(h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``h`` in ``like``'s memory format (channels_last or contiguous); a no-op when it already is."""
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        return h.contiguous(memory_format=torch.channels_last)
    return h.contiguous()


# ----------------------------------------------------------------------------------------------------------
# Resampling by a factor of 2.


class FIRResample(nn.Module):
    """Up- or downsample by 2 with a fixed separable FIR filter (default [1, 3, 3, 1]), channel-wise.

    Down: blur with k⊗k / Σ and keep every second pixel (one strided depthwise conv).
    Up: zero-insertion then the same blur with gain 4 (one depthwise transposed conv), which keeps the mean.
    """

    def __init__(self, channels: int, mode: str, kernel: Sequence[int] = FIR_KERNEL):
        super().__init__()
        if mode not in ("up", "down"):
            raise ValueError(f"mode must be 'up' or 'down', got {mode!r}")
        if len(kernel) % 2 or len(kernel) < 2:
            raise ValueError(f"FIR kernel must have even length >= 2, got {tuple(kernel)}")
        k = torch.as_tensor(kernel, dtype=torch.float64)
        k2d = torch.outer(k, k)
        k2d = k2d / k2d.sum() * (4.0 if mode == "up" else 1.0)
        if mode == "down":  # conv2d correlates, upfirdn2d convolves (the transposed conv already does)
            k2d = k2d.flip(0, 1)
        self.mode = mode
        self.channels = channels
        self.padding = (len(kernel) - 2) // 2  # gives exactly H/2 (down) or 2H (up)
        weight = k2d.float()[None, None].repeat(channels, 1, 1, 1)
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype)  # autocast may not cover conv_transpose; keep dtypes equal
        if self.mode == "down":
            return F.conv2d(x, w, stride=2, padding=self.padding, groups=self.channels)
        return F.conv_transpose2d(x, w, stride=2, padding=self.padding, groups=self.channels)


class NaiveResample(nn.Module):
    """Up- or downsample by 2 without a filter: nearest-neighbour up, 2×2 average pooling down (DDPM)."""

    def __init__(self, mode: str):
        super().__init__()
        if mode not in ("up", "down"):
            raise ValueError(f"mode must be 'up' or 'down', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "down":
            return F.avg_pool2d(x, 2)
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


def make_resample(channels: int, mode: str, fir: bool, fir_kernel: Sequence[int] = FIR_KERNEL) -> nn.Module:
    return FIRResample(channels, mode, fir_kernel) if fir else NaiveResample(mode)


class Downsample(nn.Module):
    """Halve H and W, optionally mapping ``in_ch → out_ch`` with a 3×3 conv.

    Without FIR the conv itself is strided (DDPM); with FIR the signal is blurred and decimated first and the
    conv runs at the low resolution (our simple stand-in for StyleGAN2's fused FIR-conv downsampling).
    """

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = True, fir: bool = False,
                 fir_kernel: Sequence[int] = FIR_KERNEL):  # fmt: skip
        super().__init__()
        out_ch = out_ch or in_ch
        if not with_conv and out_ch != in_ch:
            raise ValueError("Downsample without conv cannot change the channel count")
        if with_conv and not fir:
            self.resample, self.conv = nn.Identity(), conv3x3(in_ch, out_ch, stride=2)
        else:
            self.resample = make_resample(in_ch, "down", fir, fir_kernel)
            self.conv = conv3x3(in_ch, out_ch) if with_conv else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.resample(x))


class Upsample(nn.Module):
    """Double H and W (nearest or FIR), then an optional 3×3 conv ``in_ch → out_ch`` (DDPM, NCSN++)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = True, fir: bool = False,
                 fir_kernel: Sequence[int] = FIR_KERNEL):  # fmt: skip
        super().__init__()
        out_ch = out_ch or in_ch
        if not with_conv and out_ch != in_ch:
            raise ValueError("Upsample without conv cannot change the channel count")
        self.resample = make_resample(in_ch, "up", fir, fir_kernel)
        self.conv = conv3x3(in_ch, out_ch) if with_conv else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.resample(x))


# ----------------------------------------------------------------------------------------------------------
# Residual and attention blocks.


class ResnetBlockBigGAN(nn.Module):
    """Pre-activation residual block with time conditioning and optional resampling (BigGAN-style).

    ``h = conv(drop(act(GN(conv(resample(act(GN(x)))) + W·act(temb)))))``,
    ``out = (resample(x)[→1×1 conv] + h) · s`` with ``s = 1/√2`` if ``skip_rescale`` (Song et al. 2021, H.1).
    With ``up = down = False`` and ``skip_rescale = False`` this is DDPM's residual block (Ho et al. 2020).

    ``forward(x, temb_act)`` takes the **activated** embedding ``act(temb)`` (the backbone computes it once
    for all blocks). ``act`` is SiLU; it is fused into the norms (`GroupNorm(act=True)`).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        temb_dim: int | None = None,
        up: bool = False,
        down: bool = False,
        dropout: float = 0.0,
        fir: bool = False,
        fir_kernel: Sequence[int] = FIR_KERNEL,
        skip_rescale: bool = True,
    ):
        super().__init__()
        if up and down:
            raise ValueError("ResnetBlockBigGAN cannot both upsample and downsample")
        out_ch = out_ch or in_ch
        self.norm0 = group_norm(in_ch, act=True)
        # One module resamples both branches; FIR/naive resampling has no parameters, so sharing is exact.
        mode = "up" if up else "down"
        self.resample = make_resample(in_ch, mode, fir, fir_kernel) if (up or down) else None
        self.conv0 = conv3x3(in_ch, out_ch)
        self.temb_proj = linear(temb_dim, out_ch) if temb_dim is not None else None
        self.norm1 = group_norm(out_ch, act=True)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = conv3x3(out_ch, out_ch)
        # score_sde also projects the skip whenever resampling; we only need it when channels change.
        self.shortcut = conv1x1(in_ch, out_ch) if in_ch != out_ch else None
        self.out_scale = 1.0 / math.sqrt(2.0) if skip_rescale else 1.0

    def forward(self, x: torch.Tensor, temb_act: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm0(x)  # GN + SiLU
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.conv0(h)
        if self.temb_proj is not None and temb_act is not None:
            h = h + self.temb_proj(temb_act)[:, :, None, None]
        h = self.conv1(self.dropout(self.norm1(h)))  # GN + SiLU
        if self.shortcut is not None:
            x = self.shortcut(x)
        return residual(x, h, self.out_scale)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H·W pixels with a residual connection (DDPM's attention block)."""

    def __init__(self, channels: int, skip_rescale: bool = False):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = conv1x1(channels, 3 * channels)
        self.proj = conv1x1(channels, channels)
        self.out_scale = 1.0 / math.sqrt(2.0) if skip_rescale else 1.0

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        # (B, 3C, H, W) → 3 × (B, HW, C): views when x is channels_last (memory is already B, H, W, C).
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three c) h w -> three b (h w) c", three=3)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C), scaled by 1/√C
        h = same_format(rearrange(h, "b (h w) c -> b c h w", h=x.shape[-2]), x)
        return residual(x, self.proj(h), self.out_scale)
