"""The encoder–decoder shared by the small UNet, DDPM++ and NCSN++.

DDPM (Ho et al. 2020), DDPM++ and NCSN++ (Song et al. 2021, App. H) are one UNet family that differs in a
few switches; `ScoreUNet` exposes exactly those switches, and `unet.py`, `ddpmpp.py`, `ncsnpp.py` are
presets with the papers' defaults:

====================  =============  ==========  ============
switch                UNet (DDPM)    DDPM++      NCSN++
====================  =============  ==========  ============
time_embedding        positional     positional  fourier (16)
resblock_type         ddpm           biggan      biggan
fir                   no             no          [1,3,3,1]
progressive_input     none           none        residual
skip_rescale          no             1/√2        1/√2
====================  =============  ==========  ============

``resamp_with_conv`` (score_sde's name; default on) drops the 3×3 conv after a ddpm-type block's pooling /
nearest-neighbour resampling when off (the biggan blocks resample inside the residual block).

Layout, per resolution level ``i`` with ``C_i = base_channels · channel_mult[i]``: ``num_res_blocks``
residual blocks (+ attention where the resolution is in ``attention_resolutions``), then a downsampling
step; a middle block (res, attention, res); and a mirrored decoder with ``num_res_blocks + 1`` blocks per
level, each taking the matching encoder activation concatenated on channels. NCSN++'s ``residual``
progressive input downsamples the raw input alongside the encoder and adds it after every downsampling.
The output conv is zero-initialised, so an untrained network outputs 0.

Input channels are (process order k) × (data channels) — the caller concatenates phase-space blocks —
and the output has the data channels of the noised block.

Speed switches that do not change what is computed (issue 12):

- channels_last: ``net.to(memory_format=torch.channels_last)``; the input is then converted on entry and
  every activation (and the output) stays channels_last.
- ``compile=True`` (config ``model.compile=true``) compiles each residual / attention block in place
  (regional compilation, `compile_blocks`): the blocks of one shape share a compiled graph, so the first
  step compiles a few dozen small graphs instead of one 100-block graph. State_dict keys do not change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from momentum_diffusion.choices import check_choice
from momentum_diffusion.networks.embeddings import broadcast_time, make_time_embedding
from momentum_diffusion.networks.layers import (
    FIR_KERNEL,
    AttnBlock,
    Downsample,
    ResnetBlockBigGAN,
    Upsample,
    conv3x3,
    group_norm,
    linear,
    residual,
)

__all__ = ["ScoreUNet", "UNetSwitches"]


@dataclass(frozen=True)
class UNetSwitches:
    """Everything that shapes a `ScoreUNet` besides its channels and image size. The defaults are DDPM++ on
    CIFAR-10 (score_sde's ``cifar10_ddpmpp_deep_continuous``).

    A preset (`UNet`, `DDPMpp`, `NCSNpp`) is a ScoreUNet subclass whose ``preset`` changes some of them (the
    table above); keyword arguments override the preset."""

    base_channels: int = 128
    channel_mult: Sequence[int] = (1, 2, 2, 2)  # 32 → 16 → 8 → 4
    num_res_blocks: int = 8
    attention_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    time_embedding: str = "positional"  # or "fourier" (scale ``fourier_scale``)
    fourier_scale: float = 16.0
    resblock_type: str = "biggan"  # or "ddpm": separate conv down/upsampling layers
    resamp_with_conv: bool = True  # ddpm: a 3×3 conv after each resampling (score_sde's resamp_with_conv)
    fir: bool = False
    fir_kernel: Sequence[int] = FIR_KERNEL
    progressive_input: str = "none"  # or "residual"
    skip_rescale: bool = True  # skip connections rescaled by 1/√2
    compile: bool = False  # regional torch.compile of the blocks (ScoreUNet.compile_blocks)

    def resolutions(self, name: str, image_size: int) -> list[int]:
        """The feature-map size of every level, after checking that the switches fit ``image_size``."""
        levels = len(self.channel_mult)
        factor = 2 ** (levels - 1)
        if levels < 1 or self.num_res_blocks < 1:
            raise ValueError(f"{name} needs at least one level and one residual block per level")
        if image_size % factor:
            raise ValueError(f"{name}: image_size {image_size} is not divisible by 2**(len(channel_mult)-1) = {factor}")
        resolutions = [image_size // 2**i for i in range(levels)]
        unreachable = set(self.attention_resolutions) - set(resolutions)
        if unreachable:
            raise ValueError(f"{name}: attention_resolutions {sorted(unreachable)} not in {resolutions}")
        check_choice("resblock_type", self.resblock_type, ("ddpm", "biggan"))
        check_choice("progressive_input", self.progressive_input, ("none", "residual"))
        return resolutions


class _Blocks:
    """Builds the blocks of one ScoreUNet from its switches (every residual block gets the time embedding)."""

    def __init__(self, switches: UNetSwitches, temb_dim: int):
        self.s, self.temb_dim = switches, temb_dim

    def res(self, cin: int, cout: int, up: bool = False, down: bool = False) -> ResnetBlockBigGAN:
        s = self.s
        return ResnetBlockBigGAN(cin, cout, self.temb_dim, up=up, down=down, dropout=s.dropout, fir=s.fir,
                                 fir_kernel=s.fir_kernel, skip_rescale=s.skip_rescale)  # fmt: skip

    def attn(self, channels: int, resolution: int | None = None) -> nn.Module:
        """Attention where ``resolution`` is listed (always when None: the middle block), else identity."""
        if resolution is None or resolution in self.s.attention_resolutions:
            return AttnBlock(channels, skip_rescale=self.s.skip_rescale)
        return nn.Identity()

    def down(self, channels: int) -> nn.Module:
        if self.s.resblock_type == "biggan":
            return self.res(channels, channels, down=True)
        return _Timeless(
            Downsample(channels, with_conv=self.s.resamp_with_conv, fir=self.s.fir, fir_kernel=self.s.fir_kernel)
        )

    def up(self, channels: int) -> nn.Module:
        if self.s.resblock_type == "biggan":
            return self.res(channels, channels, up=True)
        return _Timeless(
            Upsample(channels, with_conv=self.s.resamp_with_conv, fir=self.s.fir, fir_kernel=self.s.fir_kernel)
        )

    def pyramid(self, cin: int, cout: int) -> Downsample:
        return Downsample(cin, cout, with_conv=True, fir=self.s.fir, fir_kernel=self.s.fir_kernel)


class ScoreUNet(nn.Module):
    """Configurable DDPM/DDPM++/NCSN++ UNet; keyword arguments are `UNetSwitches` (defaults: ``preset``).

    ``forward(x: (B, in_channels, H, W), t: (B,)) → (B, out_channels, H, W)``.
    ``compile=True`` compiles the repeated blocks in place (`compile_blocks`); outputs are unchanged.
    """

    preset: ClassVar[UNetSwitches] = UNetSwitches()

    def __init__(self, in_channels: int, out_channels: int, image_size: int = 32, **switches):
        super().__init__()
        name = type(self).__name__
        unknown = sorted(set(switches) - {f.name for f in fields(UNetSwitches)})
        if unknown:
            raise ValueError(f"{name} has no option {', '.join(unknown)}; see backbone.UNetSwitches")  # a config key
        s = self.switches = replace(self.preset, **switches)
        resolutions = s.resolutions(name, image_size)
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, image_size
        self.progressive_residual = s.progressive_input == "residual"
        self.skip_scale = 1.0 / math.sqrt(2.0) if s.skip_rescale else 1.0
        nf, temb_dim = s.base_channels, 4 * s.base_channels

        # Time: embedding → 2-layer MLP; each residual block applies act + its own projection.
        self.time_embed = make_time_embedding(s.time_embedding, nf, s.fourier_scale)
        self.time_mlp = nn.Sequential(linear(nf, temb_dim), nn.SiLU(), linear(temb_dim, temb_dim))
        blocks = _Blocks(s, temb_dim)
        skip_channels, ch = self._build_encoder(blocks, resolutions)
        self.mid = nn.ModuleList([blocks.res(ch, ch), blocks.attn(ch), blocks.res(ch, ch)])
        ch = self._build_decoder(blocks, resolutions, skip_channels, ch)
        self.norm_out = group_norm(ch, act=True)  # GN + SiLU
        self.conv_out = conv3x3(ch, out_channels, init_scale=0.0)  # zero output at init
        self._compile_kwargs: dict | None = None
        if s.compile:
            self.compile_blocks()

    def _build_encoder(self, blocks: _Blocks, resolutions: list[int]) -> tuple[list[int], int]:
        """Input conv, then per level residual (+ attention) blocks and a downsampling step. Returns the
        channels each decoder block receives by concatenation, and the channels at the bottom."""
        nf, levels = self.switches.base_channels, len(resolutions)
        self.conv_in = conv3x3(self.in_channels, nf)
        self.enc_blocks, self.enc_attn = nn.ModuleList(), nn.ModuleList()
        self.enc_down, self.pyramid = nn.ModuleList(), nn.ModuleList()
        skip_channels, ch, pyramid_ch = [nf], nf, self.in_channels
        for i, (mult, resolution) in enumerate(zip(self.switches.channel_mult, resolutions)):
            level_blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(self.switches.num_res_blocks):
                level_blocks.append(blocks.res(ch, nf * mult))
                ch = nf * mult
                attns.append(blocks.attn(ch, resolution))
                skip_channels.append(ch)
            self.enc_blocks.append(level_blocks)
            self.enc_attn.append(attns)
            if i < levels - 1:
                self.enc_down.append(blocks.down(ch))
                if self.progressive_residual:
                    self.pyramid.append(blocks.pyramid(pyramid_ch, ch))
                    pyramid_ch = ch
                skip_channels.append(ch)
        return skip_channels, ch

    def _build_decoder(self, blocks: _Blocks, resolutions: list[int], skip_channels: list[int], ch: int) -> int:
        """The mirrored decoder, coarsest level first (num_res_blocks + 1 blocks per level); returns its channels."""
        nf, mult = self.switches.base_channels, self.switches.channel_mult
        self.dec_blocks, self.dec_attn, self.dec_up = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(resolutions))):
            level_blocks = nn.ModuleList()
            for _ in range(self.switches.num_res_blocks + 1):
                level_blocks.append(blocks.res(ch + skip_channels.pop(), nf * mult[i]))
                ch = nf * mult[i]
            self.dec_blocks.append(level_blocks)
            self.dec_attn.append(blocks.attn(ch, resolutions[i]))
            if i > 0:
                self.dec_up.append(blocks.up(ch))
        return ch

    def compile_blocks(self, **compile_kwargs) -> ScoreUNet:
        """Regional compilation: ``torch.compile`` each residual and attention block in place.

        Blocks of the same configuration and input shape share one compiled graph (parameters are graph
        inputs), so compile time grows with the number of *distinct* block shapes, not with depth.
        ``compile_kwargs`` go to ``torch.compile`` (default: ``dynamic=False``; the tests pass
        ``backend="eager"``). State_dict keys and outputs are unchanged; deep copies stay compiled.
        """
        import torch._dynamo.config as dynamo_config

        blocks = [m for m in self.modules() if isinstance(m, (ResnetBlockBigGAN, AttnBlock))]
        # One recompilation per distinct block shape (× train/eval × grad mode): lift the per-code limit.
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo_config, name):
                setattr(dynamo_config, name, max(getattr(dynamo_config, name), 8 * len(blocks)))
        compile_kwargs.setdefault("dynamic", False)
        for block in blocks:
            block.compile(**compile_kwargs)
        self._compile_kwargs = dict(compile_kwargs)
        return self

    def __setstate__(self, state: dict) -> None:
        # Copies (deepcopy, e.g. the EMA network; pickling) drop nn.Module's compiled call: compile again.
        super().__setstate__(state)
        if getattr(self, "_compile_kwargs", None) is not None:
            self.compile_blocks(**self._compile_kwargs)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.conv_in.weight.is_contiguous(memory_format=torch.channels_last):  # a stride check (static)
            x = x.contiguous(memory_format=torch.channels_last)
        # act(temb) once for every block (each block only projects it).
        temb = F.silu(self.time_mlp(self.time_embed(broadcast_time(t, x.shape[0]))))

        h = self.conv_in(x)
        skips, pyramid = [h], x
        for i, (blocks, attns) in enumerate(zip(self.enc_blocks, self.enc_attn)):
            for block, attn in zip(blocks, attns):
                h = attn(block(h, temb))
                skips.append(h)
            if i < len(self.enc_down):
                h = self.enc_down[i](h, temb)
                if self.progressive_residual:
                    pyramid = self.pyramid[i](pyramid)
                    h = residual(pyramid, h, self.skip_scale)
                    pyramid = h
                skips.append(h)

        for block in self.mid:
            h = block(h, temb)

        for i, (blocks, attn) in enumerate(zip(self.dec_blocks, self.dec_attn)):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), temb)
            h = attn(h)
            if i < len(self.dec_up):
                h = self.dec_up[i](h, temb)

        return self.conv_out(self.norm_out(h))

    def _check_input(self, x: torch.Tensor) -> None:
        # Shape-only checks: static under torch.compile (they become guards, not graph breaks).
        name, s = type(self).__name__, self.image_size
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{name} expects input (B, {self.in_channels}, {s}, {s}), got {tuple(x.shape)}")
        if x.shape[-2] != s or x.shape[-1] != s:
            raise ValueError(
                f"{name} expects {s}×{s} images, got {x.shape[-2]}×{x.shape[-1]} (set image_size to the "
                f"data's size; it must be divisible by {2 ** (len(self.enc_blocks) - 1)})"
            )


class _Timeless(nn.Module):
    """Adapts a ``forward(x)`` module to the ``forward(x, temb)`` call used for every block above."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.module(x)
