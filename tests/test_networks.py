"""Tests for momentum_diffusion.networks: shapes, init, gradients, determinism, dtype/layout, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from momentum_diffusion.networks import (
    MLP,
    DDPMpp,
    GaussianFourierEmbedding,
    NCSNpp,
    SinusoidalEmbedding,
    UNet,
)

DATA_CH = 2  # data channels; HOLD of order 3 feeds 3 × DATA_CH


def tiny_unet(in_ch: int, out_ch: int = DATA_CH, image_size: int = 8) -> nn.Module:
    return UNet(in_ch, out_ch, image_size, base_channels=16, channel_mult=(1, 2),
                attention_resolutions=(image_size // 2,))  # fmt: skip


def tiny_ncsnpp(in_ch: int, out_ch: int = DATA_CH, image_size: int = 8) -> nn.Module:
    return NCSNpp(in_ch, out_ch, image_size, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(image_size // 2,), dropout=0.0)  # fmt: skip


def tiny_ddpmpp(in_ch: int, out_ch: int = DATA_CH, image_size: int = 8) -> nn.Module:
    return DDPMpp(in_ch, out_ch, image_size, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(image_size,), dropout=0.0)  # fmt: skip


IMAGE_NETS = {"unet": tiny_unet, "ncsnpp": tiny_ncsnpp, "ddpmpp": tiny_ddpmpp}


def last_layer(net: nn.Module) -> nn.Module:
    return net.out if isinstance(net, MLP) else net.conv_out


def perturb_last_layer(net: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in last_layer(net).parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def inputs(net: nn.Module, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if isinstance(net, MLP):
        x = torch.randn(batch, net.in_dim, generator=gen)
    else:
        x = torch.randn(batch, net.in_channels, net.image_size, net.image_size, generator=gen)
    return x, torch.rand(batch, generator=gen) * 0.98 + 0.01


def make(kind: str, in_mult: int = 1) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":
        return MLP(in_mult * DATA_CH, DATA_CH, hidden=32, depth=3).eval()
    return IMAGE_NETS[kind](in_mult * DATA_CH).eval()


ALL_KINDS = ["mlp", *IMAGE_NETS]


# ----------------------------------------------------------------------------------------------------------
# Embeddings.


def test_time_embeddings_are_their_formulas() -> None:
    """Fourier: [sin 2πtw, cos 2πtw] with the stored w (persistent: random, so checkpoints carry it).
    Sinusoidal (DDPM): [sin sω_i, cos sω_i], s = 1000 t, ω_i = 10000^(−i/(half−1)): ω_0 = 1, ω_last = 1e-4."""
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    fourier = GaussianFourierEmbedding(16, scale=16.0)
    w = fourier.freqs.double()
    assert "freqs" in fourier.state_dict()
    expected = torch.cat([torch.sin(2 * torch.pi * t[:, None] * w), torch.cos(2 * torch.pi * t[:, None] * w)], 1)
    torch.testing.assert_close(fourier(t).double(), expected, rtol=0, atol=1e-4)  # float32 angles up to ~300
    sinus = SinusoidalEmbedding(16)
    omega = torch.tensor([10000.0 ** (-i / 7) for i in range(8)], dtype=torch.float64)
    angles = 1000 * t[:, None] * omega
    expected = torch.cat([torch.sin(angles), torch.cos(angles)], 1)
    torch.testing.assert_close(sinus(t).double(), expected, rtol=0, atol=1e-4)  # float32 angles up to 1000


# ----------------------------------------------------------------------------------------------------------
# Shapes and initialisation.


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("in_mult", [1, 2, 3])  # VP/VE, CLD, HOLD(3)
def test_output_shape_and_zero_init(kind: str, in_mult: int) -> None:
    net = make(kind, in_mult)
    x, t = inputs(net)
    out = net(x, t)
    assert out.shape == (x.shape[0], DATA_CH, *x.shape[2:])
    assert torch.count_nonzero(out) == 0  # zero-initialised last layer


def test_unet_32x32_and_scalar_time() -> None:
    net = UNet(3, 3, 32, base_channels=8, channel_mult=(1, 2, 2), attention_resolutions=(8,)).eval()
    out = net(torch.randn(2, 3, 32, 32), torch.tensor(0.5))
    assert out.shape == (2, 3, 32, 32)


# ----------------------------------------------------------------------------------------------------------
# Gradients, determinism, time dependence.


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_gradients_reach_every_parameter(kind: str) -> None:
    net = make(kind, in_mult=3)
    perturb_last_layer(net)
    x, t = inputs(net)
    net(x, t).square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_deterministic_with_fixed_seed(kind: str) -> None:
    a, b = make(kind), make(kind)
    perturb_last_layer(a)
    perturb_last_layer(b)
    x, t = inputs(a)
    torch.testing.assert_close(a(x, t), b(x, t), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_output_depends_on_time(kind: str) -> None:
    net = make(kind)
    perturb_last_layer(net)
    x, _ = inputs(net)
    b = x.shape[0]
    out_early, out_late = net(x, torch.full((b,), 0.1)), net(x, torch.full((b,), 0.9))
    assert (out_early - out_late).abs().max() > 1e-4


# ----------------------------------------------------------------------------------------------------------
# Precision and memory layout.


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_bf16_autocast_close_to_fp32(kind: str) -> None:
    """The same network under bfloat16 autocast computes the float32 output to bfloat16 precision: 8
    significant bits (2⁻⁹ ≈ 0.2 % relative rounding per op), a few dozen roundings in sequence add up to
    ~1 %; 2 % relative L2 (tests/test_networks_equivalence.py checks NCSN++/DDPM++ against the reference)."""
    net = make(kind, in_mult=2)
    perturb_last_layer(net)
    x, t = inputs(net)
    with torch.no_grad():
        ref = net(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, t)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert ref.abs().max() > 0.1  # informative outputs
    err = (out.float() - ref).norm() / ref.norm()
    assert err < 0.02, f"relative L2 error {err:.4f} under bf16 autocast"


@pytest.mark.parametrize("kind", list(IMAGE_NETS))
def test_channels_last_matches_contiguous(kind: str) -> None:
    net = make(kind, in_mult=2)
    perturb_last_layer(net)
    x, t = inputs(net)
    reference = net(x, t)
    net = net.to(memory_format=torch.channels_last)
    out = net(x.to(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("kind", list(IMAGE_NETS))
def test_wrong_image_size_is_a_clear_error(kind: str) -> None:
    net = IMAGE_NETS[kind](DATA_CH, image_size=16)
    with pytest.raises(ValueError, match="expects 16×16 images, got 8×8"):
        net(torch.randn(1, DATA_CH, 8, 8), torch.rand(1))


def test_indivisible_image_size_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        UNet(1, 1, image_size=10, channel_mult=(1, 2, 2))


def test_wrong_channels_and_bad_options_rejected() -> None:
    with pytest.raises(ValueError, match="expects input"):
        tiny_unet(3)(torch.randn(1, 2, 8, 8), torch.rand(1))
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNet(1, 1, 8, attention_resolutions=(16,))
    with pytest.raises(ValueError, match="time_embedding"):
        MLP(2, 2, time_embedding="learned")


def test_resampling_without_conv_is_pooling_and_nearest_neighbour() -> None:
    """``resamp_with_conv=False`` (score_sde's switch): the DDPM UNet's down/up steps are 2×2 average pooling and
    nearest-neighbour doubling, so exactly the two 3×3 resampling convs (C=16 down, C=32 up) leave the parameters."""
    with_conv = UNet(2, 2, 8, base_channels=16, channel_mult=(1, 2))
    plain = UNet(2, 2, 8, base_channels=16, channel_mult=(1, 2), resamp_with_conv=False)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(with_conv) - count(plain) == (16 * 16 * 9 + 16) + (32 * 32 * 9 + 32)
    x = torch.randn(2, 16, 8, 8)
    down = x.reshape(2, 16, 4, 2, 4, 2).mean(dim=(3, 5))
    torch.testing.assert_close(plain.enc_down[0](x), down)
    y = torch.randn(2, 32, 4, 4)
    torch.testing.assert_close(plain.dec_up[0](y), y.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    x, t = torch.randn(3, 2, 8, 8), torch.rand(3)
    assert plain(x, t).shape == (3, 2, 8, 8)


# ----------------------------------------------------------------------------------------------------------
# Full-size configurations (construction only; a forward pass of 100M parameters is too slow here).


def test_full_ncsnpp_cifar10_parameter_count() -> None:
    net = NCSNpp(in_channels=6, out_channels=3)  # CLD: data + velocity, 3 channels each
    count = sum(p.numel() for p in net.parameters())
    print(f"NCSN++ CIFAR-10 (6 -> 3 channels, 8 res blocks): {count / 1e6:.1f}M parameters")
    assert 50e6 < count < 200e6


@pytest.mark.slow
def test_tiny_ncsnpp_compiles() -> None:
    net = make("ncsnpp", in_mult=2)
    perturb_last_layer(net)
    x, t = inputs(net)
    compiled = torch.compile(net, fullgraph=True)  # no graph breaks
    torch.testing.assert_close(compiled(x, t), net(x, t), rtol=1e-4, atol=1e-5)
