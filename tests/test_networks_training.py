"""The multi-tensor training updates (issue 12) do what the per-parameter loops did."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from momentum_diffusion.lightning.module import DiffusionModule, _all_finite
from momentum_diffusion.networks import NCSNpp


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return NCSNpp(4, 2, 8, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,))


def test_foreach_ema_equals_per_parameter_lerp() -> None:
    net = tiny_net()
    ema = copy.deepcopy(net).requires_grad_(False)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    expected = [e.detach().clone().lerp_(p.detach(), 1 - 0.999) for e, p in zip(ema.parameters(), net.parameters())]
    DiffusionModule._update_ema(SimpleNamespace(ema=ema, net=net, ema_decay=0.999))
    for e, want in zip(ema.parameters(), expected):
        assert torch.equal(e, want)


def test_multi_tensor_adam_matches_the_single_tensor_loop() -> None:
    net = tiny_net()
    ref = copy.deepcopy(net)
    module = SimpleNamespace(net=net, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, warmup_steps=0)
    opt = DiffusionModule.configure_optimizers(module)["optimizer"]
    assert opt.defaults["foreach"] or opt.defaults["fused"]
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3, foreach=False)
    x, t = torch.randn(2, 4, 8, 8), torch.rand(2)
    for _ in range(3):
        for m, o in ((net, opt), (ref, ref_opt)):
            o.zero_grad()
            m(x, t).square().mean().backward()
            o.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_all_finite_one_sync_check() -> None:
    grads = [torch.randn(3, 3), torch.randn(5), torch.randn(2, dtype=torch.float64)]
    assert _all_finite(grads) and _all_finite([])
    for value in (float("nan"), float("inf"), float("-inf")):
        bad = [g.clone() for g in grads]
        bad[1][2] = value
        assert not _all_finite(bad)
    kept = [g.clone() for g in grads]
    _all_finite(kept)
    assert all(torch.equal(a, b) for a, b in zip(kept, grads))  # the check leaves finite values unchanged
