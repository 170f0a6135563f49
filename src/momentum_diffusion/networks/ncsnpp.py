"""NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs", App. H.1).

DDPM++ plus FIR resampling with the [1, 3, 3, 1] kernel (Karras et al. 2019), a "residual" progressive
input (the input image is FIR-downsampled alongside the encoder and added after every downsampling) and
Gaussian Fourier time features. Defaults are the CIFAR-10 configuration that CLD (Dockhorn et al. 2022,
"Score-Based Generative Modeling with Critically-Damped Langevin Diffusion") trains: 128 channels,
ch_mult (1, 2, 2, 2), 8 residual blocks per level, attention at 16×16, Fourier scale 16, dropout 0.1,
skip connections rescaled by 1/√2.

FIR resampling is implemented as a fixed separable blur + stride (see `layers.FIRResample`), not a port of
StyleGAN2's ``upfirdn2d``; for [1, 3, 3, 1] it is bilinear upsampling and anti-aliased decimation.
"""

from __future__ import annotations

from collections.abc import Sequence

from momentum_diffusion.networks.backbone import ScoreUNet
from momentum_diffusion.networks.layers import FIR_KERNEL

__all__ = ["NCSNpp"]


class NCSNpp(ScoreUNet):
    """NCSN++ preset of `ScoreUNet`.

    ``forward(x: (B, in_channels, H, W), t: (B,)) → (B, out_channels, H, W)``.
    For CLD on CIFAR-10: ``NCSNpp(in_channels=6, out_channels=3)`` (data and velocity, 3 channels each).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int = 32,
        base_channels: int = 128,  # CIFAR-10
        channel_mult: Sequence[int] = (1, 2, 2, 2),  # 32 → 16 → 8 → 4
        num_res_blocks: int = 8,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        time_embedding: str = "fourier",
        fourier_scale: float = 16.0,
        fir: bool = True,
        fir_kernel: Sequence[int] = FIR_KERNEL,
        progressive_input: str = "residual",  # or 'none'
        skip_rescale: bool = True,
        compile: bool = False,  # regional torch.compile of the blocks (ScoreUNet.compile_blocks)
    ):
        super().__init__(
            in_channels,
            out_channels,
            image_size,
            base_channels=base_channels,
            channel_mult=channel_mult,
            num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions,
            dropout=dropout,
            time_embedding=time_embedding,
            fourier_scale=fourier_scale,
            resblock_type="biggan",
            fir=fir,
            fir_kernel=fir_kernel,
            progressive_input=progressive_input,
            skip_rescale=skip_rescale,
            compile=compile,
        )
