"""The fast image networks compute what the straightforward implementation computes (issue 12).

A reference forward pass is written out here with plain ops and independent formulations — GroupNorm then
SiLU in float32, attention as an explicit softmax(QKᵀ/√C)V, FIR downsampling as a full-resolution blur
followed by decimation, FIR upsampling as explicit zero insertion followed by a blur — and run on the
*same parameters* (looked up by state_dict name, so this also pins the checkpoint layout). The networks
must match it in float32, stay within bfloat16 tolerance of it under autocast, keep channels_last and
bfloat16 activations end to end, and compile block by block without graph breaks.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from momentum_diffusion.networks import DDPMpp, NCSNpp, UNet
from momentum_diffusion.networks.layers import AttnBlock, FIRResample, NaiveResample, ResnetBlockBigGAN

KW = dict(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, dropout=0.0)
NETS = {
    "ncsnpp": lambda: NCSNpp(4, 2, 8, attention_resolutions=(4,), **KW),
    "ddpmpp": lambda: DDPMpp(4, 2, 8, attention_resolutions=(8,), **KW),
    "unet": lambda: UNet(4, 2, 8, base_channels=16, channel_mult=(1, 2), attention_resolutions=(4,)),
}


def make(kind: str) -> nn.Module:
    torch.manual_seed(0)
    net = NETS[kind]().eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the output conv is zero-initialised: give it weights so outputs are informative
        for p in net.conv_out.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return net


def inputs(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 4, 8, 8, generator=gen), torch.rand(batch, generator=gen) * 0.98 + 0.01


# ----------------------------------------------------------------------------------------------------------
# Reference computation (the implementation before issue 12, written out independently).


def ref_norm(m: nn.GroupNorm, x: torch.Tensor, act: bool) -> torch.Tensor:
    h = F.group_norm(x.float(), m.num_groups, m.weight.float(), m.bias.float(), m.eps)
    return F.silu(h) if act else h


def fir_taps(kernel=(1, 3, 3, 1)) -> torch.Tensor:
    k = torch.tensor(kernel, dtype=torch.float32)
    return torch.outer(k, k) / torch.outer(k, k).sum()


def ref_fir(x: torch.Tensor, mode: str, kernel=(1, 3, 3, 1)) -> torch.Tensor:
    """StyleGAN2's upfirdn2d semantics, spelled out: pad, blur at full resolution, then decimate / after
    explicit zero insertion. The module does each with one strided (transposed) depthwise conv."""
    c, n = x.shape[1], len(kernel)
    taps = fir_taps(kernel).flip(0, 1)[None, None].repeat(c, 1, 1, 1).to(x)
    pad = (n - 2) // 2
    if mode == "down":
        blurred = F.conv2d(F.pad(x, (pad, pad, pad, pad)), taps, groups=c)
        return blurred[..., ::2, ::2]
    b, _, h, w = x.shape
    up = torch.zeros(b, c, 2 * h - 1, 2 * w - 1, dtype=x.dtype)
    up[..., ::2, ::2] = x
    p = n - 1 - pad
    return F.conv2d(F.pad(up, (p, p, p, p)), 4.0 * taps, groups=c)


def ref_resample(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(m, FIRResample):
        return ref_fir(x, m.mode)
    assert isinstance(m, NaiveResample)
    return F.avg_pool2d(x, 2) if m.mode == "down" else F.interpolate(x, scale_factor=2.0, mode="nearest")


def ref_attention(m: AttnBlock, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    qkv = F.conv2d(ref_norm(m.norm, x, act=False), m.qkv.weight, m.qkv.bias).reshape(b, 3, c, h * w)
    q, k, v = qkv.unbind(1)  # (B, C, HW) each
    weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=-1)
    out = torch.einsum("bij,bcj->bci", weights, v).reshape(b, c, h, w)
    return (x + F.conv2d(out, m.proj.weight, m.proj.bias)) * m.out_scale


def ref_resblock(m: ResnetBlockBigGAN, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
    h = ref_norm(m.norm0, x, act=True)
    if m.resample is not None:
        h, x = ref_resample(m.resample, h), ref_resample(m.resample, x)
    h = F.conv2d(h, m.conv0.weight, m.conv0.bias, padding=1)
    h = h + F.linear(F.silu(temb), m.temb_proj.weight, m.temb_proj.bias)[:, :, None, None]
    h = F.conv2d(ref_norm(m.norm1, h, act=True), m.conv1.weight, m.conv1.bias, padding=1)
    if m.shortcut is not None:
        x = F.conv2d(x, m.shortcut.weight, m.shortcut.bias)
    return (x + h) * m.out_scale


def ref_block(m: nn.Module, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
    if isinstance(m, ResnetBlockBigGAN):
        return ref_resblock(m, x, temb)
    if isinstance(m, AttnBlock):
        return ref_attention(m, x)
    if isinstance(m, nn.Identity):
        return x
    inner = m.module  # _Timeless(Downsample | Upsample): naive resampling with a (maybe strided) conv
    return F.conv2d(ref_resample(inner.resample, x) if not isinstance(inner.resample, nn.Identity) else x,
                    inner.conv.weight, inner.conv.bias, stride=inner.conv.stride, padding=1)  # fmt: skip


def ref_forward(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The pre-issue-12 forward pass of `ScoreUNet`, in float32 (parameters by state_dict name)."""
    x, t = x.float(), t.float()
    emb = net.time_embed(t)
    temb = F.linear(F.silu(F.linear(emb, net.time_mlp[0].weight, net.time_mlp[0].bias)),
                    net.time_mlp[2].weight, net.time_mlp[2].bias)  # fmt: skip
    h = F.conv2d(x, net.conv_in.weight, net.conv_in.bias, padding=1)
    skips, pyramid = [h], x
    for i, (blocks, attns) in enumerate(zip(net.enc_blocks, net.enc_attn)):
        for block, attn in zip(blocks, attns):
            h = ref_block(attn, ref_block(block, h, temb), temb)
            skips.append(h)
        if i < len(net.enc_down):
            h = ref_block(net.enc_down[i], h, temb)
            if net.progressive_residual:
                down = net.pyramid[i]
                pyramid = F.conv2d(ref_fir(pyramid, "down"), down.conv.weight, down.conv.bias, padding=1)
                h = (pyramid + h) * net.skip_scale
                pyramid = h
            skips.append(h)
    for block in net.mid:
        h = ref_block(block, h, temb)
    for i, (blocks, attn) in enumerate(zip(net.dec_blocks, net.dec_attn)):
        for block in blocks:
            h = ref_block(block, torch.cat([h, skips.pop()], dim=1), temb)
        h = ref_block(attn, h, temb)
        if i < len(net.dec_up):
            h = ref_block(net.dec_up[i], h, temb)
    h = ref_norm(net.norm_out, h, act=True)
    return F.conv2d(h, net.conv_out.weight, net.conv_out.bias, padding=1)


# ----------------------------------------------------------------------------------------------------------
# Layers.


@pytest.mark.parametrize("mode", ["up", "down"])
def test_fir_is_explicit_resampling(mode: str) -> None:
    x = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    fir = FIRResample(5, mode)
    out = fir(x)
    assert out.shape[-1] == (16 if mode == "up" else 4)
    torch.testing.assert_close(out, ref_fir(x, mode), rtol=1e-5, atol=1e-6)
    # The filter is a non-persistent buffer: not in checkpoints, moves and casts with the module.
    assert "weight" not in fir.state_dict() and dict(fir.named_buffers())["weight"].shape == (5, 1, 4, 4)
    assert fir.double().weight.dtype == torch.float64
    torch.testing.assert_close(fir(x.double()), ref_fir(x.double(), mode))


def upfirdn_by_sums(x: torch.Tensor, mode: str, kernel) -> torch.Tensor:
    """upfirdn2d by its definition, one output pixel at a time: zero-insert (up), pad by (p0, p1), *convolve*
    (not correlate) with the separable k⊗k / Σ (gain 4 up), decimate (down); StyleGAN2's pads
    p = n − 2, (p0, p1) = ((p + 1) // 2, p // 2) down and ((p + 1) // 2 + 1, p // 2) up."""
    k = torch.as_tensor(kernel, dtype=torch.float64)
    k = k / k.sum() * (2.0 if mode == "up" else 1.0)  # per axis: gain 4 overall when up
    n, (b, c, h, w) = len(kernel), x.shape
    p = n - 2
    p0 = (p + 1) // 2 + (1 if mode == "up" else 0)
    if mode == "up":
        src = torch.zeros(b, c, 2 * h, 2 * w, dtype=torch.float64)
        src[..., ::2, ::2] = x.double()
        size, step = 2 * h, 1
    else:
        src, size, step = x.double(), h // 2, 2

    def at(i, j):  # the padded signal at (i, j) of the padded grid
        i, j = i - p0, j - p0
        inside = 0 <= i < src.shape[-2] and 0 <= j < src.shape[-1]
        return src[..., i, j] if inside else torch.zeros(b, c, dtype=torch.float64)

    out = torch.zeros(b, c, size, size, dtype=torch.float64)
    for i in range(size):
        for j in range(size):
            # full convolution of the padded signal, output index (step·i + n − 1): Σ_a k[a] pad[step·i + n−1−a]
            out[..., i, j] = sum(
                k[a] * k[bb] * at(step * i + n - 1 - a, step * j + n - 1 - bb) for a in range(n) for bb in range(n)
            )
    return out


@pytest.mark.parametrize("kernel", [(1, 3, 3, 1), (1, 2, 4, 8), (1, 1)])
@pytest.mark.parametrize("mode", ["up", "down"])
def test_fir_is_upfirdn_by_its_definition(mode: str, kernel) -> None:
    """Against the definition summed out per pixel, including an asymmetric kernel (catches a correlation
    where upfirdn2d convolves: for a symmetric kernel the two agree) and the 2-tap box (average pooling
    down, nearest-neighbour up)."""
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fir = FIRResample(3, mode, kernel).double()
    out = fir(x)  # float64 input, float32-rounded taps (the buffer is built in float32): ~1e-7 relative
    torch.testing.assert_close(out, upfirdn_by_sums(x, mode, kernel), rtol=1e-6, atol=1e-6)
    if kernel == (1, 1):
        box = F.avg_pool2d(x, 2) if mode == "down" else F.interpolate(x, scale_factor=2.0, mode="nearest")
        torch.testing.assert_close(out, box, rtol=1e-6, atol=1e-6)


def test_fir_upsampling_keeps_the_mean_away_from_the_border() -> None:
    x = torch.ones(1, 1, 6, 6)
    assert torch.allclose(FIRResample(1, "up")(x)[..., 1:-1, 1:-1], torch.ones(1, 1, 10, 10))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_attention_is_explicit_softmax(layout: str) -> None:
    torch.manual_seed(0)
    attn = AttnBlock(16, skip_rescale=True)
    x = torch.randn(2, 16, 4, 4)
    if layout == "channels_last":
        attn, x = attn.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    out = attn(x)
    torch.testing.assert_close(out, ref_attention(attn, x), rtol=1e-5, atol=1e-5)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)


# ----------------------------------------------------------------------------------------------------------
# Whole networks.


@pytest.mark.parametrize("kind", list(NETS))
def test_network_matches_reference_fp32(kind: str) -> None:
    net = make(kind)
    x, t = inputs()
    with torch.no_grad():
        out, ref = net(x, t), ref_forward(net, x, t)
    assert out.abs().max() > 0.1  # informative outputs
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["ncsnpp", "ddpmpp"])
def test_bf16_autocast_close_to_fp32_reference(kind: str) -> None:
    net = make(kind)
    x, t = inputs()
    with torch.no_grad():
        ref = ref_forward(net, x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, t)
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).norm() / ref.norm()
    assert err < 0.02, f"relative L2 error {err:.4f} under bf16 autocast"  # bf16 has 8 mantissa bits


def activation_hooks(net: nn.Module, seen: list) -> list:
    def hook(module, args, out):
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            seen.append((type(module).__name__, out))

    return [m.register_forward_hook(hook) for m in net.modules() if m is not net]


def test_channels_last_end_to_end() -> None:
    net = make("ncsnpp")
    x, t = inputs()
    with torch.no_grad():
        ref = net(x, t)
        net = net.to(memory_format=torch.channels_last)
        seen: list = []
        handles = activation_hooks(net, seen)
        out = net(x, t)  # a contiguous input is converted on entry
        for h in handles:
            h.remove()
    assert len(seen) > 20
    bad = [name for name, a in seen if not a.is_contiguous(memory_format=torch.channels_last)]
    assert not bad, f"activations not channels_last after {bad}"
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_activations_stay_bf16_under_autocast() -> None:
    """No float32 round trips: every image-shaped activation (norms included) is bfloat16 under autocast."""
    net = make("ncsnpp")
    x, t = inputs()
    seen: list = []
    handles = activation_hooks(net, seen)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(x, t)
    for h in handles:
        h.remove()
    assert {type(m).__name__ for m in net.modules()} >= {"GroupNorm", "FIRResample", "AttnBlock"}
    bad = sorted({name for name, a in seen if a.dtype != torch.bfloat16})
    assert not bad, f"float32 activations under autocast from {bad}"


def test_accelerator_group_norm_path_on_cpu(monkeypatch) -> None:
    """The path taken where autocast would upcast GroupNorm (CUDA): normalise in bfloat16 with bfloat16
    affine parameters. Forced here on CPU: still close to the float32 reference, activations bfloat16."""
    from momentum_diffusion.networks import layers

    monkeypatch.setattr(layers, "_autocast_would_upcast", lambda x: x.dtype != torch.float32)
    net = make("ncsnpp")
    x, t = inputs()
    seen: list = []
    handles = activation_hooks(net, seen)
    with torch.no_grad():
        ref = ref_forward(net, x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, t)
    for h in handles:
        h.remove()
    assert not {name for name, a in seen if a.dtype != torch.bfloat16}
    assert (out.float() - ref).norm() / ref.norm() < 0.02


def test_same_parameters_and_flops_as_reference() -> None:
    torch.manual_seed(0)
    net = NCSNpp(4, 2, 8, base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,))
    x, t = inputs(batch=1)
    with torch.no_grad():
        with FlopCounterMode(display=False) as new:
            net(x, t)
        with FlopCounterMode(display=False) as ref:
            ref_forward(net, x, t)
    # The reference blurs at full resolution and upsamples by zero insertion (4× the depthwise FIR work);
    # every dense conv, linear and attention product is the same.
    assert abs(new.get_total_flops() - ref.get_total_flops()) <= 0.01 * ref.get_total_flops()


def test_ema_copy_and_train_mode_gradients_match_reference() -> None:
    net = make("ncsnpp").train()
    x, t = inputs()
    out = net(x, t)
    (out**2).mean().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    (ref_forward(net, x, t) ** 2).mean().backward()
    for n, p in net.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-3, atol=1e-6, msg=n)
    torch.testing.assert_close(copy.deepcopy(net)(x, t), out.detach())


# ----------------------------------------------------------------------------------------------------------
# Regional compilation.


def test_regional_compile_without_graph_breaks() -> None:
    """``compile=True`` compiles each block in place; fullgraph=True fails on any graph break. The eager
    backend checks the tracing only (no C++ toolchain or codegen time on the test machine)."""
    torch._dynamo.reset()
    net = make("ncsnpp")
    x, t = inputs()
    with torch.no_grad():
        ref = net(x, t)
        keys = list(net.state_dict())
        net.compile_blocks(backend="eager", fullgraph=True)
        assert list(net.state_dict()) == keys
        torch.testing.assert_close(net(x, t), ref, rtol=1e-5, atol=1e-6)
        # DiffusionModule deep-copies the net for its EMA: the copy is compiled too, with its own weights.
        ema = copy.deepcopy(net)
        assert ema.mid[0]._compiled_call_impl is not None and ema.conv_in.weight is not net.conv_in.weight
    torch._dynamo.reset()


@pytest.mark.slow
def test_regional_compile_inductor_bf16() -> None:
    torch._dynamo.reset()
    net = make("ncsnpp")
    x, t = inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = net(x, t).float()
        net.compile_blocks(fullgraph=True)
        torch.testing.assert_close(net(x, t).float(), ref, rtol=0.05, atol=0.05)
    torch._dynamo.reset()


def test_compile_flag_compiles_blocks() -> None:
    net = NCSNpp(4, 2, 8, attention_resolutions=(4,), compile=True, **KW)
    blocks = [m for m in net.modules() if isinstance(m, (ResnetBlockBigGAN, AttnBlock))]
    assert blocks and all(m._compiled_call_impl is not None for m in blocks)
    assert net._compiled_call_impl is None  # regional, not the whole network
