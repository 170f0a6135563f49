"""DDPM++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs", App. H.1).

DDPM's UNet with BigGAN residual blocks doing the up/downsampling, skip connections rescaled by 1/√2,
sinusoidal (positional) time embedding, no FIR filtering and no progressive growing. Defaults are the
CIFAR-10 configuration (``cifar10_ddpmpp_continuous``: 128 channels, ch_mult (1, 2, 2, 2), 4 residual blocks
per level, attention at 16×16, dropout 0.1); the "deep" variant uses ``num_res_blocks=8``.
"""

from __future__ import annotations

from collections.abc import Sequence

from momentum_diffusion.networks.backbone import ScoreUNet

__all__ = ["DDPMpp"]


class DDPMpp(ScoreUNet):
    """DDPM++ preset of `ScoreUNet`.

    ``forward(x: (B, in_channels, H, W), t: (B,)) → (B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int = 32,
        base_channels: int = 128,  # CIFAR-10
        channel_mult: Sequence[int] = (1, 2, 2, 2),  # 32 → 16 → 8 → 4
        num_res_blocks: int = 4,  # 8 for DDPM++ (deep)
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        time_embedding: str = "positional",
        fourier_scale: float = 16.0,  # only used with time_embedding='fourier'
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
            fir=False,
            progressive_input="none",
            skip_rescale=skip_rescale,
            compile=compile,
        )
