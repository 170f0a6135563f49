"""A small DDPM-style UNet (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", App. B).

GroupNorm+SiLU residual blocks with additive time conditioning, strided-conv downsampling,
nearest+conv upsampling, concatenated skip connections, self-attention in the middle block and
optionally at the resolutions in ``attention_resolutions``. Sized for 8×8 digits and 32×32 images.
"""

from __future__ import annotations

from momentum_diffusion.networks.backbone import ScoreUNet, UNetSwitches

__all__ = ["UNet"]


class UNet(ScoreUNet):
    """DDPM UNet preset of `ScoreUNet`.

    ``forward(x: (B, in_channels, H, W), t: (B,)) → (B, out_channels, H, W)``.
    ``in_channels`` is (process order k) × (data channels); ``out_channels`` the data channels.
    Example: 8×8 digits with HOLD of order 3 → ``UNet(3, 1, image_size=8)`` (levels 8 → 4).
    """

    preset = UNetSwitches(
        base_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        dropout=0.0,
        resblock_type="ddpm",  # separate conv down/upsampling layers
        skip_rescale=False,
    )
