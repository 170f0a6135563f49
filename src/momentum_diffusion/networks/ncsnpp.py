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

from momentum_diffusion.networks.backbone import ScoreUNet, UNetSwitches

__all__ = ["NCSNpp"]


class NCSNpp(ScoreUNet):
    """NCSN++ preset of `ScoreUNet`.

    ``forward(x: (B, in_channels, H, W), t: (B,)) → (B, out_channels, H, W)``.
    For CLD on CIFAR-10: ``NCSNpp(in_channels=6, out_channels=3)`` (data and velocity, 3 channels each).
    """

    preset = UNetSwitches(time_embedding="fourier", fir=True, progressive_input="residual")  # else DDPM++
