"""The multi-tensor training updates (issue 12) do what the per-parameter loops did."""

from __future__ import annotations

import copy
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from momentum_diffusion.lightning.module import DiffusionModule, UpdateSnapshot, _all_finite, lr_factor
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
    DiffusionModule._update_ema(SimpleNamespace(ema=ema, net=net, ema_decay=0.999, ema_warmup=False, global_step=7))
    for e, want in zip(ema.parameters(), expected):
        assert torch.equal(e, want)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_keeps_the_share_of_the_initial_weights_its_decays_say(warmup: bool) -> None:
    """EMA from 0 towards constant weights 1: after n updates it is 1 − ∏ decay_i, with decay_i = d, or
    min(d, (1 + i) / (10 + i)) under warm-up (derived here, not read from the module)."""
    net, ema = nn.Linear(3, 2), nn.Linear(3, 2).requires_grad_(False)
    with torch.no_grad():
        for p, e in zip(net.parameters(), ema.parameters()):
            p.fill_(1.0), e.zero_()
    module = SimpleNamespace(ema=ema, net=net, ema_decay=0.999, ema_warmup=warmup, global_step=0)
    kept = 1.0
    for step in range(300):
        module.global_step = step
        DiffusionModule._update_ema(module)
        kept *= min(0.999, (1 + step) / (10 + step)) if warmup else 0.999
    for e in ema.parameters():
        torch.testing.assert_close(e, torch.full_like(e, 1.0 - kept), rtol=1e-5, atol=1e-6)
    assert (kept < 1e-6) if warmup else (kept > 0.7)  # warm-up forgets the init; 0.999^300 = 74 % remains


def test_multi_tensor_adam_matches_the_single_tensor_loop() -> None:
    net = tiny_net()
    ref = copy.deepcopy(net)
    module = SimpleNamespace(
        net=net,
        lr=1e-3,
        betas=(0.9, 0.999),
        weight_decay=0.0,
        warmup_steps=0,
        lr_schedule="constant",
        lr_decay=1.0,
        _trainer=None,
    )
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


def test_ema_warmup_must_be_a_boolean() -> None:
    from momentum_diffusion.cli.common import UserError, check_optim

    check_optim({"ema_warmup": True})
    with pytest.raises(UserError, match="optim.ema_warmup"):
        check_optim({"ema_warmup": "yes"})


def test_cosine_schedule_warms_up_then_follows_the_half_cosine_to_zero() -> None:
    """Against the formula written out: linear warm-up to 1 at update w, then (1 + cos(π (n+1−w)/(T−w))) / 2."""
    w, total = 10, 110
    factors = [lr_factor(n, w, "cosine", total) for n in range(total)]
    assert factors[:w] == pytest.approx([(n + 1) / w for n in range(w)])
    assert factors[w - 1 + 50] == pytest.approx(0.5)  # halfway through the decay
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)  # the last update has no step left
    assert all(a >= b for a, b in zip(factors[w:], factors[w + 1 :]))
    assert [lr_factor(n, w, "constant", total) for n in range(w, total)] == [1.0] * (total - w)


def test_lr_schedule_is_checked_and_needs_max_steps() -> None:
    from momentum_diffusion.cli.common import UserError, check_optim

    check_optim({"lr_schedule": "cosine"})
    with pytest.raises(UserError, match="unknown optim.lr_schedule 'linear'; choose constant, cosine or exponential"):
        check_optim({"lr_schedule": "linear"})
    module = SimpleNamespace(
        net=nn.Linear(2, 2),
        lr=1e-3,
        betas=(0.9, 0.999),
        weight_decay=0.0,
        warmup_steps=0,
        lr_schedule="cosine",
        _trainer=SimpleNamespace(max_steps=-1),
    )
    module.trainer = module._trainer
    with pytest.raises(ValueError, match="trainer.max_steps"):
        DiffusionModule.configure_optimizers(module)


def test_cli_refuses_a_cosine_schedule_without_max_steps_before_any_work() -> None:
    from helpers import compose_config
    from momentum_diffusion.cli.common import UserError, validate_train_config

    validate_train_config(compose_config("train"))  # the default job: cosine over its 1,000 steps
    validate_train_config(compose_config("train", "trainer.max_steps=-1", "optim.lr_schedule=constant"))
    with pytest.raises(UserError, match=r"^optim.lr_schedule=cosine needs trainer.max_steps > 0, got -1$"):
        validate_train_config(compose_config("train", "trainer.max_steps=-1"))
    validate_train_config(compose_config("train", "trainer.max_steps=-1", "optim.lr_schedule=exponential"))
    for bad, what in (
        ("optim.lr_decay=0", "optim.lr_decay must be a number in (0, 1]"),
        ("optim.lr_decay=1.5", "optim.lr_decay must be a number in (0, 1]"),
        ("optim.clip_subnetworks=maybe", "optim.clip_subnetworks must be true or false"),
    ):
        with pytest.raises(UserError, match=r"^" + re.escape(what)):
            validate_train_config(compose_config("train", bad))


def test_exponential_schedule_is_gdss_exponential_lr() -> None:
    """After the warm-up the factor is lr_decay per step: GDSS's ExponentialLR(γ) stepped once per epoch of s
    steps gives the same lr at every epoch boundary with lr_decay = γ^(1/s)."""
    w, gamma, s = 3, 0.999, 2
    decay = gamma ** (1 / s)
    factors = [lr_factor(n, w, "exponential", None, decay) for n in range(w + 40)]
    assert factors[:w] == pytest.approx([(n + 1) / w for n in range(w)])
    for epoch in range(1, 20):  # update w - 1 + s·epoch is the first one of epoch `epoch` after the warm-up
        assert factors[w - 1 + s * epoch] == pytest.approx(gamma**epoch)
    assert all(a > b for a, b in zip(factors[w - 1 :], factors[w:]))


def test_clip_subnetworks_clips_the_graph_networks_x_and_a_parts_on_their_own() -> None:
    from momentum_diffusion.data.graph_layout import GraphLayout
    from momentum_diffusion.networks.graph import GraphScoreNetwork

    dim = GraphLayout(5, 3).dim
    net = GraphScoreNetwork(2 * dim, 2 * dim, 5, 3, x_depth=1, x_hidden=4, a_layers=2, adim=4, a_hidden=4)
    groups = net.clip_groups()
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in net.parameters()}  # a partition
    assert all(groups)
    torch.manual_seed(0)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    target = [10.0, 0.5, 3.0]  # X part far above the clip, A part below it, the rest above
    for g, norm in zip(groups, target):
        n = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in g]))
        for p in g:
            p.grad.mul_(norm / n)
    before = [[p.grad.clone() for p in g] for g in groups]
    module = SimpleNamespace(net=net, clip_subnetworks=True)
    DiffusionModule.configure_gradient_clipping(module, None, 1.0, "norm")
    for g, old, norm in zip(groups, before, target):
        got = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in g]))
        assert float(got) == pytest.approx(min(norm, 1.0), rel=1e-5)  # each group on its own norm
        for p, o in zip(g, old):  # a rescaling, direction kept
            torch.testing.assert_close(p.grad, o * min(1.0, 1.0 / norm), rtol=1e-5, atol=1e-7)


def _adam_step(net: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    opt.zero_grad()
    torch.manual_seed(seed)
    (net(torch.randn(2, 4, 8, 8), torch.rand(2)) - 1).square().mean().backward()  # zero-initialised output
    opt.step()


def _state_copy(opt: torch.optim.Optimizer) -> dict:
    return {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}


def test_update_snapshot_undoes_an_adam_step_exactly_first_and_later_steps() -> None:
    """Restoring puts back the weights and every Adam tensor bit for bit, in the tensors Adam holds; before the
    first step the state Adam created goes; the buffers are reused and hold the latest snapshot, not an alias."""
    net = tiny_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, foreach=True)
    snap = UpdateSnapshot()
    weights = [p.detach().clone() for p in net.parameters()]
    snap.take(net, opt)
    _adam_step(net, opt, 0)
    snap.restore(net, opt)
    assert len(opt.state) == 0
    assert all(torch.equal(p, w) for p, w in zip(net.parameters(), weights))
    for seed in (1, 2):  # two real steps, then a snapshot taken into the reused buffers
        _adam_step(net, opt, seed)
    weights, state = [p.detach().clone() for p in net.parameters()], _state_copy(opt)
    held = {id(p): dict(s) for p, s in opt.state.items()}
    buffers = snap.take(net, opt).params
    _adam_step(net, opt, 3)
    assert not all(torch.equal(p, w) for p, w in zip(net.parameters(), weights))
    snap.restore(net, opt)
    assert snap.params is buffers
    assert all(torch.equal(p, w) for p, w in zip(net.parameters(), weights))
    for p, s in opt.state.items():
        for k, v in s.items():
            assert torch.equal(v, state[id(p)][k]), k
            assert v is held[id(p)][k], k  # in place
    _adam_step(net, opt, 4)  # training goes on from the restored state
    assert all(torch.isfinite(p).all() for p in net.parameters())
