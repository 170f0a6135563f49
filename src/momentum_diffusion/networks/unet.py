"""A small DDPM-style UNet (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", App. B).

GroupNorm+SiLU residual blocks with additive time conditioning, strided-conv downsampling,
nearest+conv upsampling, concatenated skip connections, self-attention in the middle block and
optionally at the resolutions in ``attention_resolutions``. Sized for 8×8 digits and 32×32 images.
"""

from __future__ import annotations

from collections.abc import Sequence

from momentum_diffusion.networks.backbone import ScoreUNet

__all__ = ["UNet"]


class UNet(ScoreUNet):
    """DDPM UNet preset of `ScoreUNet`.

    ``forward(x: (B, in_channels, H, W), t: (B,)) → (B, out_channels, H, W)``.
    ``in_channels`` is (process order k) × (data channels); ``out_channels`` the data channels.
    Example: 8×8 digits with HOLD of order 3 → ``UNet(3, 1, image_size=8)`` (levels 8 → 4).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        time_embedding: str = "positional",  # 'fourier' also works (scale below)
        fourier_scale: float = 16.0,
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
            resblock_type="ddpm",  # separate conv down/upsampling layers
            fir=False,
            progressive_input="none",
            skip_rescale=False,
            compile=compile,
        )
