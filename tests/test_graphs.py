"""Graph data (loaders, split, layout), the GDSS-style network (symmetry, masking, permutation equivariance),
sampling invariants and the AMS graph options. Tiny files in the published formats are written here."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from momentum_diffusion.data.errors import DataNotFoundError
from momentum_diffusion.data.graph_layout import GraphLayout
from momentum_diffusion.data.graphs import (
    GraphDataModule,
    arrays_to_graphs,
    ego_small_from_citeseer,
    enzymes_from_tu,
    generate_community_small,
    generate_grid,
    load_graphs,
    read_graph_json,
    split_graphs,
    vectors_to_arrays,
    write_graph_json,
)
from momentum_diffusion.networks.graph import GraphScoreNetwork

TINY = dict(x_depth=2, x_hidden=8, a_layers=2, c_hid=4, c_final=2, adim=8, a_hidden=8, heads=2, time_dim=8)


# --------------------------------------------------------------------------- data
def test_json_round_trip_and_split(tmp_path):
    graphs = generate_community_small(10, seed=3)
    write_graph_json(graphs, tmp_path / "community_small.json")
    back = read_graph_json(tmp_path / "community_small.json")
    assert [sorted(G.edges()) for G in back] == [sorted(G.edges()) for G in graphs]
    train, test = split_graphs(back)
    assert len(test) == 2 and len(train) == 8
    assert [sorted(G.edges()) for G in test] == [sorted(G.edges()) for G in back[:2]]  # first 20 %, in order
    dm = GraphDataModule("community_small", root=str(tmp_path), source="json", max_nodes=20, n_features=10)
    dm.setup()
    assert len(dm.train_vectors) == 8 and len(dm.test_vectors) == 2
    assert torch.equal(dm.test_vectors, dm.encode(back[:2]))


def test_community_and_grid_generators_follow_the_recipes():
    graphs = generate_community_small(40, seed=0)
    sizes = {G.number_of_nodes() for G in graphs}
    assert sizes <= {12, 14, 16, 18, 20}
    for G in graphs:
        c = G.number_of_nodes() // 2
        for i, nodes in enumerate((range(c), range(c, 2 * c))):  # communities are G(c, 0.7) with seed i
            ref = nx.gnp_random_graph(c, 0.7, seed=i)
            sub = nx.convert_node_labels_to_integers(G.subgraph(nodes))
            assert sorted(sub.edges()) == sorted(ref.edges())
        assert nx.is_connected(G)
    assert [G.number_of_edges() for G in generate_community_small(5, seed=1)] == [
        G.number_of_edges() for G in generate_community_small(5, seed=1)
    ]
    for G in generate_grid(5, seed=0):
        assert 100 <= G.number_of_nodes() <= 361 and max(d for _, d in G.degree()) <= 4


def test_generated_community_graphs_fit_the_one_hot_degree_features(caplog):
    """Without a list, data=community_small generates 100 graphs (seed 0): one of the unrestricted draws has a
    node of degree 10, which one-hot degree features of n_features=10 cannot hold (the documented command
    stopped there); the data module redraws such bridges, and the communities stay the recipe's."""
    free = generate_community_small(100, seed=0)
    assert max(d for G in free for _, d in G.degree()) >= 10
    dm = GraphDataModule("community_small", root=None, max_nodes=20, n_features=10)
    dm.setup()
    graphs = dm.train_graphs + dm.test_graphs
    assert len(graphs) == 100 and max(d for G in graphs for _, d in G.degree()) <= 9
    for G in graphs:
        assert nx.is_connected(G)
        c = G.number_of_nodes() // 2
        sub = nx.convert_node_labels_to_integers(G.subgraph(range(c)))
        assert sorted(sub.edges()) == sorted(nx.gnp_random_graph(c, 0.7, seed=0).edges())


def test_ego_recipe_on_a_tiny_citeseer_file(tmp_path):
    # largest component 0..5 (node 2 has a self-loop); only node 0's radius-1 ego net has 4–18 nodes
    adj = {0: [1, 2, 3, 4], 1: [0], 2: [0, 2], 3: [0], 4: [0, 5], 5: [4], 6: [7], 7: [6]}
    with open(tmp_path / "ind.citeseer.graph", "wb") as f:
        pickle.dump(adj, f)
    assert [G.number_of_nodes() for G in load_graphs("ego_small", tmp_path)] == [5]
    ego = ego_small_from_citeseer(tmp_path / "ind.citeseer.graph")
    assert [G.number_of_nodes() for G in ego] == [5]  # only node 0's ego net (largest component 0..5)
    assert nx.number_of_selfloops(ego[0]) == 0


def test_enzymes_recipe_on_tiny_tu_files(tmp_path):
    # graph 1: a 10-cycle (kept); graph 2: a path of 3 (too small); node 14 isolated (removed)
    edges = [(i, i % 10 + 1) for i in range(1, 11)] + [(11, 12), (12, 13)]
    rows = [f"{u}, {v}" for u, v in edges] + [f"{v}, {u}" for u, v in edges]
    (tmp_path / "ENZYMES_A.txt").write_text("\n".join(rows) + "\n")
    (tmp_path / "ENZYMES_graph_indicator.txt").write_text("\n".join(["1"] * 10 + ["2"] * 4) + "\n")
    graphs = enzymes_from_tu(tmp_path)
    assert len(graphs) == 1 and graphs[0].number_of_nodes() == 10 and graphs[0].number_of_edges() == 10
    assert len(load_graphs("enzymes", tmp_path)) == 1


def test_missing_data_is_one_line(tmp_path):
    with pytest.raises(DataNotFoundError, match="ego_small.json"):
        GraphDataModule("ego_small", root=str(tmp_path), max_nodes=18, n_features=17).setup()


def test_degree_beyond_features_is_refused():
    with pytest.raises(ValueError, match="n_features"):
        GraphDataModule("community_small", n_generate=5, max_nodes=20, n_features=3).setup()


PUBLISHED = os.environ.get("MOMENTUM_DIFFUSION_GRAPHS")  # a folder with the published lists (optional)


@pytest.mark.skipif(not PUBLISHED, reason="set MOMENTUM_DIFFUSION_GRAPHS to a folder with the published lists")
@pytest.mark.parametrize(
    "name,count,lo,hi",
    [("community_small", 100, 12, 20), ("ego_small", 200, 4, 17), ("grid", 100, 110, 361), ("enzymes", 587, 10, 125)],
)
def test_published_counts_and_node_ranges(name, count, lo, hi):
    graphs = load_graphs(name, PUBLISHED, source="json")
    sizes = [G.number_of_nodes() for G in graphs]
    assert len(graphs) == count and min(sizes) == lo and max(sizes) == hi
    if name in ("ego_small", "enzymes") and (Path(PUBLISHED) / "raw").is_dir():
        raw = load_graphs(name, PUBLISHED, source="raw")
        assert [sorted(d for _, d in G.degree()) for G in raw] == [sorted(d for _, d in G.degree()) for G in graphs]


# --------------------------------------------------------------------------- layout
def test_layout_round_trip_and_symmetric_noise():
    L = GraphLayout(6, 3)
    v = torch.randn(4, L.dim)  # any vector, e.g. pure process noise
    A = L.adjacency(v)
    assert torch.equal(A, A.transpose(-1, -2)) and torch.all(A.diagonal(dim1=-2, dim2=-1) == 0)
    assert torch.equal(L.pack(L.features(v), A, L.mask(v)), v)
    m = torch.tensor([[1, 1, 1, 0, 0, 0]]).float()
    valid = L.valid(m)[0]
    assert valid[L.x_slice].sum() == 3 * 3 and valid[L.a_slice].sum() == 3 and valid[L.m_slice].sum() == 0


# --------------------------------------------------------------------------- network
def _net(k=1, out_blocks=1, N=7, F=4, **kw):
    torch.manual_seed(0)
    L = GraphLayout(N, F)
    return GraphScoreNetwork(k * L.dim, out_blocks * L.dim, N, F, **TINY, **kw), L


def _permute(v, L, perm, k):
    B = v.shape[0]
    v = v.view(B, k, L.dim)
    return L.pack(L.features(v)[:, :, perm], L.adjacency(v)[:, :, perm][..., perm], L.mask(v)[:, :, perm]).reshape(
        B, -1
    )


@pytest.mark.parametrize("conditioned", [False, True])
@pytest.mark.parametrize("k,out_blocks", [(1, 1), (2, 1), (3, 3)])
def test_network_is_permutation_equivariant(k, out_blocks, conditioned):
    net, L = _net(k, out_blocks, time_conditioning=conditioned)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]]).float()
    z, t = torch.randn(2, k * L.dim), torch.tensor([0.3, 0.8])
    net.set_node_mask(mask)
    out = net(z, t)
    perm = torch.randperm(L.n, generator=torch.Generator().manual_seed(1))
    net.set_node_mask(mask[:, perm])
    out_p = net(_permute(z, L, perm, k), t)
    torch.testing.assert_close(out_p, _permute(out, L, perm, out_blocks), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_the_default_gnn_takes_no_t(k):
    """GDSS's t-free GNN by default, t features with time_conditioning=True. At initialisation the linear skip is
    t-independent (zero last layer), so the t-free network's output cannot depend on t at all."""
    change = {}
    for conditioned in (False, True):
        torch.manual_seed(0)
        L = GraphLayout(7, 4)
        net = GraphScoreNetwork(k * L.dim, L.dim, 7, 4, **TINY, time_conditioning=conditioned)
        net.set_node_mask(torch.ones(1, L.n))
        z = torch.randn(1, k * L.dim, generator=torch.Generator().manual_seed(0))
        change[conditioned] = (net(z, torch.tensor([0.2])) - net(z, torch.tensor([0.9]))).abs().max().item()
    assert change[False] == 0.0 and change[True] > 1e-4
    with pytest.raises(ValueError, match="model.time_conditioning must be true or false, got 'auto'"):
        GraphScoreNetwork(L.dim, L.dim, 7, 4, time_conditioning="auto")


def test_without_the_linear_skip_the_graph_coordinates_see_no_t():
    """linear_skip=false (GDSS's network): a trained, t-dependent skip head changes nothing on the graph
    coordinates; with the skip it does. Padded coordinates keep their t-dependent pull either way."""
    L = GraphLayout(7, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]]).float()
    z = torch.randn(1, L.dim, generator=torch.Generator().manual_seed(0))
    valid = L.valid(mask).bool()[0]
    change = {}
    for skip in (True, False):
        torch.manual_seed(0)
        net = GraphScoreNetwork(L.dim, L.dim, 7, 4, **TINY, linear_skip=skip)
        torch.nn.init.normal_(net.pad_head[-1].weight)  # as after training: coefficients that vary with t
        net.set_node_mask(mask)
        diff = (net(z, torch.tensor([0.2])) - net(z, torch.tensor([0.9])))[0].abs()
        change[skip] = (diff[valid].max().item(), diff[~valid].max().item())
    assert change[False][0] == 0.0 and change[True][0] > 1e-3
    assert change[False][1] > 1e-3
    with pytest.raises(ValueError, match="model.linear_skip must be true or false"):
        GraphScoreNetwork(L.dim, L.dim, 7, 4, linear_skip="no")


def test_network_masking():
    net, L = _net(k=2)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]]).float()
    net.set_node_mask(mask)
    z, t = torch.randn(1, 2 * L.dim), torch.tensor([0.5])
    out = net(z, t)
    valid = L.valid(mask).repeat(1, 2)
    # padded / mask coordinates do not reach the graph outputs …
    z2 = z + (1 - valid) * torch.randn_like(z) * 5
    out2 = net(z2, t)
    v1 = L.valid(mask)[0] > 0
    torch.testing.assert_close(out2[0, v1], out[0, v1])
    # … and each off-mask output is a linear function of that coordinate's own block values
    z3 = z.clone()
    j = L.a_slice.start + L.n_pairs - 1  # pair (N-2, N-1): padded
    z3[0, j] += 1.0
    diff = (net(z3, t) - out)[0]
    assert diff.abs().gt(1e-7).nonzero().flatten().tolist() in ([], [j])


def test_graph_evaluation_reports_the_mmd_expected_at_the_test_split_size(tmp_path):
    """GDSS's figures use as many generated graphs as test graphs; evaluate() reports that expectation
    (``<metric>@<m>``) beside the measured MMD², and leaves it out when too few graphs were generated."""
    from momentum_diffusion.metrics.graph_mmd import graph_mmds

    write_graph_json(generate_community_small(20, seed=1), tmp_path / "community_small.json")
    dm = GraphDataModule("community_small", root=str(tmp_path), source="json", max_nodes=20, n_features=10)
    dm.setup()
    m = len(dm.test_graphs)
    samples = dm.encode(generate_community_small(12, seed=2))
    out = dm.evaluate(samples)
    generated = dm.to_graphs(samples)
    assert m == 4 and f"avg@{m}" in out
    expected = graph_mmds(dm.test_graphs, generated, gen_size=m)
    for k in ("degree", "cluster", "orbit", "avg"):
        assert out[f"{k}@{m}"] == pytest.approx(expected[k], rel=1e-12)
        assert out[k] == pytest.approx(graph_mmds(dm.test_graphs, generated)[k], rel=1e-12)
    exactly_m = dm.evaluate(samples[:m])  # the mean over the one m-subset is the measured figure
    assert all(
        exactly_m[f"{k}@{m}"] == pytest.approx(exactly_m[k], rel=1e-12) for k in ("degree", "cluster", "orbit", "avg")
    )
    assert not any("@" in k for k in dm.evaluate(samples[: m - 1]))


def test_node_counts_follow_training_and_samples_are_graphs():
    net, L = _net()
    train = torch.zeros(10, L.dim)
    counts = [3, 3, 5, 5, 5, 5, 7, 7, 7, 7]
    for i, c in enumerate(counts):
        train[i, L.m_slice.start : L.m_slice.start + c] = 1
    net.train()
    net.condition_on_data(train)
    assert net.node_count_hist[[3, 5, 7]].tolist() == [2, 4, 4]
    net.eval()
    net.prepare_sampling(4000, torch.Generator().manual_seed(0))
    drawn = net._mask.sum(1)
    assert set(drawn.unique().tolist()) <= {3, 5, 7}
    assert abs((drawn == 3).float().mean().item() - 0.2) < 0.03
    x = net.finish_sampling(torch.randn(4000, L.dim) + 0.5)
    adjacency, node_mask, features = vectors_to_arrays(x, L)
    assert (adjacency == adjacency.transpose(0, 2, 1)).all()
    assert adjacency[:, np.arange(L.n), np.arange(L.n)].sum() == 0
    assert (node_mask.sum(1) == drawn.numpy()).all()
    outside = ~(node_mask[:, :, None] & node_mask[:, None, :])
    assert adjacency[outside].sum() == 0 and np.abs(features[~node_mask]).sum() == 0
    for G, n in zip(arrays_to_graphs(adjacency[:20], node_mask[:20]), drawn[:20]):
        assert G.number_of_nodes() <= n and nx.number_of_isolates(G) == 0


def test_module_trains_and_samples_with_every_sampler_kind():
    """A few steps of the real DiffusionModule on VP and CLD; samples are finite, masked graphs."""
    import functools

    from momentum_diffusion.lightning.module import DiffusionModule
    from momentum_diffusion.objectives import DSM, HSM
    from momentum_diffusion.processes import cld, vp
    from momentum_diffusion.samplers.ams import adaptive_momentum
    from momentum_diffusion.samplers.splitting import sscs

    dm = GraphDataModule("community_small", n_generate=10, max_nodes=20, n_features=10)
    dm.setup()
    factory = functools.partial(GraphScoreNetwork, max_nodes=20, n_features=10, **TINY)
    for process, objective, sampler in (
        (vp(), DSM(), functools.partial(adaptive_momentum, nfe=6)),
        (cld(), HSM(), functools.partial(sscs, nfe=6)),
    ):
        torch.manual_seed(0)
        module = DiffusionModule(process, objective, factory, dm.data_shape, sampler, lr=1e-3)
        opt = torch.optim.Adam(module.net.parameters(), 1e-3)
        for _ in range(3):
            loss = module.training_step(dm.train_vectors, 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            module._update_ema()
        x, nfe = module.sample(5, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(x).all() and nfe <= 6
        m = dm.layout.mask(x)
        assert set(m.sum(1).tolist()) <= {12.0, 14.0, 16.0, 18.0, 20.0}
        metrics = dm.evaluate(x)
        assert set(metrics) >= {"degree", "cluster", "orbit", "avg", "unique", "novel"}


# --------------------------------------------------------------------------- AMS options
def _gauss_score(z, t):
    return -z[:, -1]


def test_ams_parts_adjacency_momentum_and_rule():
    from momentum_diffusion.processes import vp
    from momentum_diffusion.samplers.ams import adaptive_momentum

    process = vp()
    prior = process.sample_prior((64, 10), generator=torch.Generator().manual_seed(0))

    def run(**kw):
        trace = []
        x, _ = adaptive_momentum(
            process, _gauss_score, prior, nfe=21, generator=torch.Generator().manual_seed(1), trace=trace, **kw
        )
        return x, trace

    one, _ = run(parts=None)
    whole, _ = run(parts=[10])  # one explicit group = the ungrouped sampler, sample for sample
    torch.testing.assert_close(one, whole, rtol=0, atol=0)
    _, trace = run(parts=[4, 6], adjacency_momentum=False)
    betas = {j: [r["beta"] for r in trace if r["part"] == j] for j in (0, 1)}
    assert all(b == 0 for b in betas[1]) and max(betas[0]) > 0
    image, trace_i = run(rule="image")
    graph, trace_g = run(rule="graph")
    assert torch.isfinite(image).all() and not torch.equal(image, graph)
    assert trace_i[0]["eps"] == trace_g[0]["eps"]  # the first step has no previous momentum
    from momentum_diffusion.samplers.base import SamplerConfigError

    with pytest.raises(SamplerConfigError):
        run(adjacency_momentum=False, parts=None)
    with pytest.raises(SamplerConfigError):
        run(parts=[3, 3])
