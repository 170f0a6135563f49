"""GDSS's released checkpoints as GraphScoreNetwork weights (networks/gdss_weights.py, import_gdss_checkpoint.py).

The reference below is GDSS's two networks written out densely from the paper's description (per-channel GCNs,
full-matrix edge MLPs, attention scaled by √(GCN output width)), independent of the batched, upper-triangle
implementation in networks/graph.py; the attention width differs from the output width so the temperature
matters.
"""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from momentum_diffusion.data.graph_layout import GraphLayout
from momentum_diffusion.networks.gdss_weights import (
    GdssCheckpointError,
    gdss_ema_state,
    gdss_settings,
    graph_score_state_from_gdss,
    read_gdss_checkpoint,
)
from momentum_diffusion.networks.graph import GraphScoreNetwork

N, FEAT = 7, 4
SIZES = dict(depth=2, nhid=8, num_layers=3, num_linears=2, c_init=2, c_hid=3, c_final=2, adim=12, num_heads=2)


def _linear(g, n_in, n_out):
    return torch.randn(n_out, n_in, generator=g) / math.sqrt(n_in), 0.1 * torch.randn(n_out, generator=g)


def _mlp_state(g, prefix, sizes):
    out = {}
    for i in range(len(sizes) - 1):
        out[f"{prefix}.linears.{i}.weight"], out[f"{prefix}.linears.{i}.bias"] = _linear(g, sizes[i], sizes[i + 1])
    return out


def gdss_states(seed=0, s=SIZES):
    """Random weights in the layout of GDSS's ScoreNetworkX / ScoreNetworkA state dicts."""
    g = torch.Generator().manual_seed(seed)
    x = {}
    for i in range(s["depth"]):
        w, b = _linear(g, FEAT if i == 0 else s["nhid"], s["nhid"])
        x[f"layers.{i}.weight"], x[f"layers.{i}.bias"] = w.T.contiguous(), b
    fdim = FEAT + s["depth"] * s["nhid"]
    x.update(_mlp_state(g, "final", [fdim, 2 * fdim, 2 * fdim, FEAT]))
    a = {}
    for li in range(s["num_layers"]):
        c_in = s["c_init"] if li == 0 else s["c_hid"]
        c_out = s["c_final"] if li == s["num_layers"] - 1 else s["c_hid"]
        in_dim = FEAT if li == 0 else s["nhid"]
        attn = s["nhid"] if li == 0 else s["adim"]
        for c in range(c_in):
            for part, width in (("q", attn), ("k", attn), ("v", s["nhid"])):
                w, b = _linear(g, in_dim, width)
                a[f"layers.{li}.attn.{c}.gnn_{part}.weight"], a[f"layers.{li}.attn.{c}.gnn_{part}.bias"] = w.T, b
        hidden = 2 * max(c_in, c_out)
        a.update(_mlp_state(g, f"layers.{li}.mlp", [2 * c_in] + [hidden] * (s["num_linears"] - 1) + [c_out]))
        a.update(_mlp_state(g, f"layers.{li}.multi_channel", [c_in * s["nhid"], hidden, s["nhid"]]))
    fdim = s["c_hid"] * (s["num_layers"] - 1) + s["c_final"] + s["c_init"]
    a.update(_mlp_state(g, "final", [fdim, 2 * fdim, 2 * fdim, 1]))
    return x, a


# ---- GDSS's networks, densely --------------------------------------------------------------------------------
def _gcn(h, adj, w, b):
    adj = adj.clone()
    idx = torch.arange(adj.shape[-1])
    adj[:, idx, idx] = 1.0
    d = adj.sum(-1).clamp(min=1).pow(-0.5)
    return (d[..., :, None] * adj * d[..., None, :]) @ (h @ w) + b


def _mlp(state, prefix, h):
    n = sum(1 for k in state if k.startswith(f"{prefix}.linears.") and k.endswith(".weight"))
    for i in range(n):
        h = F.linear(h, state[f"{prefix}.linears.{i}.weight"], state[f"{prefix}.linears.{i}.bias"])
        h = F.elu(h) if i < n - 1 else h
    return h


def gdss_x_net(x_state, x, adj, flags, s=SIZES):
    hs, h = [x], x
    for i in range(s["depth"]):
        h = torch.tanh(_gcn(h, adj, x_state[f"layers.{i}.weight"], x_state[f"layers.{i}.bias"]))
        hs.append(h)
    return _mlp(x_state, "final", torch.cat(hs, -1)) * flags[..., None]


def gdss_adj_net(a_state, x, adj, flags, s=SIZES):
    pair = flags[:, :, None] * flags[:, None, :]
    chans = [adj]
    for _ in range(s["c_init"] - 1):
        chans.append(chans[-1] @ adj)
    stack, h = [torch.stack(chans, -1)], x
    for li in range(s["num_layers"]):
        values, maps = [], []
        for c, ch in enumerate(chans):
            name = f"layers.{li}.attn.{c}.gnn_"
            q, k, v = (_gcn(h, ch, a_state[f"{name}{p}.weight"], a_state[f"{name}{p}.bias"]) for p in "qkv")
            heads = [
                torch.tanh(qh @ kh.transpose(1, 2) / math.sqrt(s["nhid"]))
                for qh, kh in zip(q.chunk(s["num_heads"], -1), k.chunk(s["num_heads"], -1))
            ]
            att = torch.stack(heads).mean(0)
            maps.append((att + att.transpose(1, 2)) / 2)
            values.append(v)
        h = torch.tanh(_mlp(a_state, f"layers.{li}.multi_channel", torch.cat(values, -1)) * flags[..., None])
        e = _mlp(a_state, f"layers.{li}.mlp", torch.cat([torch.stack(maps, -1), torch.stack(chans, -1)], -1))
        e = (e + e.transpose(1, 2)) * pair[..., None]
        chans = list(e.unbind(-1))
        stack.append(e)
    out = _mlp(a_state, "final", torch.cat(stack, -1))[..., 0]
    return out * (1 - torch.eye(adj.shape[-1])) * pair


def _our_net(s=SIZES):
    layout = GraphLayout(N, FEAT)
    settings = gdss_settings(_checkpoint(s))["model"]
    return layout, GraphScoreNetwork(layout.dim, layout.dim, N, FEAT, **settings)


def _checkpoint(s=SIZES, sde_x=("VP", 0.1, 1.0), sde_adj=("VP", 0.1, 1.0)):
    x, a = gdss_states(0, s)
    sde = {n: {"type": t, "beta_min": lo, "beta_max": hi} for n, (t, lo, hi) in (("x", sde_x), ("adj", sde_adj))}
    return {
        "model_config": {
            "data": {"data": "community_small"},
            "sde": sde,
            "sampler": {"snr": 0.05, "scale_eps": 0.7},
            "sample": {"use_ema": False},
        },
        "params_x": {"model_type": "ScoreNetworkX", "max_feat_num": FEAT, "depth": s["depth"], "nhid": s["nhid"]},
        "params_adj": {"model_type": "ScoreNetworkA", "max_feat_num": FEAT, "max_node_num": N, "conv": "GCN", **s},
        "x_state_dict": x,
        "adj_state_dict": a,
        "ema_x": {"decay": 0.999, "num_updates": 3, "shadow_params": [v + 1 for v in x.values()]},
        "ema_adj": {"decay": 0.999, "num_updates": 3, "shadow_params": [v + 1 for v in a.values()]},
    }


def _noisy_graphs(layout, batch=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(2, N + 1, (batch,), generator=g)
    m = (torch.arange(N)[None] < counts[:, None]).float()
    x = torch.randn(batch, N, FEAT, generator=g) * m[..., None]
    a = torch.randn(batch, N, N, generator=g).triu(1)
    a = (a + a.transpose(1, 2)) * m[:, :, None] * m[:, None, :]
    return m, x, a


def test_mapped_network_equals_gdss_networks_on_noisy_graphs():
    layout, net = _our_net()
    x_state, a_state = gdss_states(0)
    net.load_state_dict(graph_score_state_from_gdss(x_state, a_state, net))
    m, x, a = _noisy_graphs(layout)
    net.set_node_mask(m)
    with torch.no_grad():
        out = net(layout.pack(x, a, m), torch.full((len(m),), 0.3)).view(len(m), 1, -1)
        ref_x, ref_a = gdss_x_net(x_state, x, a, m), gdss_adj_net(a_state, x, a, m)
    pair = m[:, :, None] * m[:, None, :]
    torch.testing.assert_close(layout.features(out)[:, 0] * m[..., None], ref_x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layout.adjacency(out)[:, 0] * pair, ref_a, atol=1e-5, rtol=1e-5)
    # and the network is t-free: GDSS's networks see no t
    with torch.no_grad():
        other = net(layout.pack(x, a, m), torch.full((len(m),), 0.9)).view(len(m), 1, -1)
    torch.testing.assert_close(layout.features(other) * m[:, None, :, None], layout.features(out) * m[:, None, :, None])


def test_attention_temperature_is_matched():
    """Without the √(attention width / output width) factor on Q the outputs differ (the test above can fail)."""
    layout, net = _our_net()
    x_state, a_state = gdss_states(0)
    state = graph_score_state_from_gdss(x_state, a_state, net)
    q = net.a_layers[1].attn_dim
    state["a_layers.1.weight"][..., :q] /= math.sqrt(SIZES["adim"] / SIZES["nhid"])
    net.load_state_dict(state)
    m, x, a = _noisy_graphs(layout)
    net.set_node_mask(m)
    with torch.no_grad():
        out = net(layout.pack(x, a, m), torch.full((len(m),), 0.3)).view(len(m), 1, -1)
    pair = m[:, :, None] * m[:, None, :]
    assert (layout.adjacency(out)[:, 0] * pair - gdss_adj_net(a_state, x, a, m)).abs().max() > 1e-3


def test_ema_shadow_list_maps_onto_the_weights_in_order():
    x, _ = gdss_states(0)
    ema = {"shadow_params": [v * 2 for v in x.values()]}
    mapped = gdss_ema_state(ema, x)
    assert list(mapped) == list(x)
    for k in x:
        torch.testing.assert_close(mapped[k], 2 * x[k])
    with pytest.raises(GdssCheckpointError, match="do not line up"):
        gdss_ema_state({"shadow_params": list(ema["shadow_params"])[:-1]}, x)


@pytest.mark.parametrize(
    ("sde_x", "sde_adj", "message"),
    [(("VP", 0.1, 1.0), ("VE", 0.2, 1.0), "only VP"), (("VP", 0.1, 1.0), ("VP", 0.2, 0.8), "different β")],
)
def test_processes_that_do_not_map_are_one_error(sde_x, sde_adj, message):
    with pytest.raises(GdssCheckpointError, match=message):
        gdss_settings(_checkpoint(sde_x=sde_x, sde_adj=sde_adj))


def test_sizes_that_do_not_fit_are_one_error():
    _, net = _our_net()
    x_state, a_state = gdss_states(0, {**SIZES, "c_hid": 5})
    with pytest.raises(GdssCheckpointError, match="GDSS tensor|lacks|unmapped"):
        graph_score_state_from_gdss(x_state, a_state, net)


def test_reads_easydict_checkpoints_without_easydict(tmp_path, monkeypatch):
    """GDSS pickles its config as easydict.EasyDict; reading it must not need easydict installed."""
    fake = types.ModuleType("easydict")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "easydict", "EasyDict"
    fake.EasyDict = EasyDict
    monkeypatch.setitem(sys.modules, "easydict", fake)
    ckpt = _checkpoint()
    ckpt["model_config"] = EasyDict(ckpt["model_config"])
    torch.save(ckpt, tmp_path / "gdss.pth")
    monkeypatch.delitem(sys.modules, "easydict")
    loaded = read_gdss_checkpoint(tmp_path / "gdss.pth")
    assert gdss_settings(loaded)["sampler"] == {"snr": 0.05, "noise_scale": 0.7}
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(GdssCheckpointError, match="corrupt"):
        read_gdss_checkpoint(tmp_path / "bad.pth")
    with pytest.raises(GdssCheckpointError, match="not found"):
        read_gdss_checkpoint(tmp_path / "missing.pth")


@pytest.mark.slow  # a CLI process of its own (≈ 10 s of imports); .ci/run runs the slow tests too
def test_import_script_writes_a_checkpoint_that_evaluate_samples(tmp_path):
    """The real CLI: GDSS-format .pth + a community_small list → import_gdss_checkpoint.py → evaluate.py."""
    import networkx as nx

    from helpers import REPO, run_python, run_script
    from momentum_diffusion.data.graphs import write_graph_json

    rng = np.random.default_rng(0)
    graphs = [nx.gnp_random_graph(int(rng.integers(4, N + 1)), 0.4, seed=i) for i in range(20)]
    graphs = [g for g in graphs if max(dict(g.degree).values(), default=0) < FEAT]
    write_graph_json(graphs, tmp_path / "community_small.json")
    torch.save(_checkpoint(), tmp_path / "gdss.pth")
    out = tmp_path / "gdss.ckpt"
    args = ["--data-root", str(tmp_path), "--out", str(out), "--nfe", "6"]
    run_python(str(REPO / "scripts" / "import_gdss_checkpoint.py"), str(tmp_path / "gdss.pth"), *args)
    saved = torch.load(out, map_location="cpu", weights_only=False)
    assert saved["gdss"]["sampled_weights"] == "trained"  # GDSS's use_ema: false
    torch.testing.assert_close(saved["state_dict"]["ema.x_convs.0.weight"], saved["state_dict"]["net.x_convs.0.weight"])
    train = graphs[int(0.2 * len(graphs)) :]  # GDSS's split: test = the first 20 %
    expected = np.bincount([g.number_of_nodes() for g in train], minlength=N + 1)
    np.testing.assert_array_equal(saved["state_dict"]["ema.node_count_hist"].numpy(), expected)
    config = saved["hyper_parameters"]["config"]
    assert config["sampler"]["noise_scale"] == 0.7 and config["model"]["linear_skip"] is False
    proc = run_script(
        "evaluate.py", f"ckpt={out}", "nfe=[6]", "n_samples=8", "batch_size=8", f"hydra.run.dir={tmp_path / 'ev'}"
    )
    assert "'degree'" in proc.stdout + proc.stderr
