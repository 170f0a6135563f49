"""DDPM++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs", App. H.1).

DDPM's UNet with BigGAN residual blocks doing the up/downsampling, skip connections rescaled by 1/√2,
sinusoidal (positional) time embedding, no FIR filtering and no progressive growing. Defaults are the
CIFAR-10 configuration ``cifar10_ddpmpp_deep_continuous`` (128 channels, ch_mult (1, 2, 2, 2), 8 residual
blocks per level, attention at 16×16, dropout 0.1), as conf/model/ddpmpp.yaml; the shallow
``cifar10_ddpmpp_continuous`` has ``num_res_blocks=4``.
"""

from __future__ import annotations

from momentum_diffusion.networks.backbone import ScoreUNet, UNetSwitches

__all__ = ["DDPMpp"]


class DDPMpp(ScoreUNet):
    """DDPM++ preset of `ScoreUNet`.

    ``forward(x: (B, in_channels, H, W), t: (B,)) → (B, out_channels, H, W)``.
    """

    preset = UNetSwitches()  # the switches' defaults are DDPM++'s
