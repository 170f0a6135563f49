"""GDSS-style score network for graphs in the flat layout of data/graph_layout.py (Jo et al. 2022, "Score-based
Generative Modeling of Graphs via the System of Stochastic Differential Equations", §3.3 / App. C).

Input (B, k·D): the k phase-space blocks of the graph vector; output (B, out_blocks·D). Per block the vector
is X (N×F), the strict upper triangle of A and the node mask m. The network

1. reads the node mask from its **context** (``condition_on_data(x0)`` in training: the clean batch's mask;
   ``prepare_sampling(n, generator)`` for sampling: node counts drawn from the training distribution, which
   the network itself records in the buffer ``node_count_hist`` while it trains), never from the noisy m;
2. rebuilds X_i and the symmetric zero-diagonal A_i of every block i and masks them;
3. X-network: DenseGCN layers (tanh) on the data block's adjacency, concatenation, 3-layer ELU MLP (GDSS's
   ScoreNetworkX); A-network: graph multi-head attention layers over the channels [A_1, A_1², …, A_1^c,
   A_2, …, A_k] (GDSS's ScoreNetworkA with the k−1 extra phase-space blocks as extra input channels), edge
   MLPs symmetrised by adding the transpose, a 3-layer readout, zero diagonal, masked;
4. on every coordinate outside the mask (padded nodes and pairs) and on the m coordinates, predicts ε with a
   learned *linear* map of that coordinate's own k block values, ε̂ = Σ_i c_i(t) z_i + d(t) m_true: the exact
   form of E[ε | z] for point-mass data (padded entries are 0, m is known), so those coordinates are pulled
   to their data values and never feed back into the graph part. On the graph coordinates a second linear
   map of the same form plus a per-block offset (X, A) is a skip connection added to the GNN output: the
   Gaussian part of the score, with the data mean; the GNN learns the residual (``linear_skip=false``: no
   skip, ε̂ = GNN output as in GDSS, whose networks then see no t at all).

Permutation equivariance: every layer is node-permutation equivariant (GCN, attention, edge-wise MLPs,
readout), and the flat layout only stores the upper triangle of a symmetric matrix.
Time: by default (``time_conditioning=False``) the GNN takes no t, as GDSS's networks; only the linear skip above
sees t (the Gaussian part of ε̂). Measured (docs/graphs.md, "Sixth session"): on ego_small the t-free GNN halves
VP's MMDs (EM at 50 NFE, avg 0.015 vs 0.028) and improves CLD's (0.053 vs 0.061) and HOLD's (0.090 vs 0.094),
although its training loss is higher; on community_small it is level at GDSS's 2000 NFE and behind at 50 (0.129
vs 0.108). ``True`` appends t features to the node inputs. X and A are one network with one optimiser (GDSS trains
two; ``optim.clip_subnetworks`` clips them separately).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data.graph_layout import GraphLayout

__all__ = ["GraphScoreNetwork"]


def gcn_normalize(adj: torch.Tensor) -> torch.Tensor:
    """GDSS DenseGCNConv's propagation matrix: Â = A with unit diagonal, D = clamp(rowsum(Â), 1),
    D^-½ Â D^-½ (any leading dims)."""
    n = adj.shape[-1]
    eye = torch.eye(n, device=adj.device, dtype=adj.dtype)
    adj = adj * (1 - eye) + eye
    d = adj.sum(-1).clamp(min=1.0).pow(-0.5)
    return d[..., :, None] * adj * d[..., None, :]


class DenseGCN(nn.Module):
    """out = P (H W) + b with P = gcn_normalize(A) given (GDSS DenseGCNConv; Glorot W, zero b)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, h: torch.Tensor, prop: torch.Tensor) -> torch.Tensor:
        return prop @ (h @ self.weight) + self.bias


def mlp(sizes: list[int], act=nn.ELU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class AttentionLayer(nn.Module):
    """One GMH layer (Baek et al. 2021 as used by GDSS): per input channel c, Q, K, V = GCN(H, A_c); head maps
    tanh(Q_h K_hᵀ/√attn_dim) averaged over heads and symmetrised; new nodes = tanh(mask(MLP([V_c]))); new
    channels = edge-wise MLP([maps, A]) + its transpose, masked. The C channels' GCNs run as one batched
    product (weights stacked per channel)."""

    def __init__(self, n_linears: int, in_dim: int, attn_dim: int, out_dim: int, c_in: int, c_out: int, heads: int):
        super().__init__()
        if attn_dim % heads:
            raise ValueError(f"attention width {attn_dim} must be divisible by heads={heads}")
        self.heads, self.attn_dim, self.out_dim = heads, attn_dim, out_dim
        width = 2 * attn_dim + out_dim  # Q | K | V
        self.weight = nn.Parameter(torch.empty(c_in, in_dim, width))
        for c in range(c_in):
            for lo, hi in ((0, attn_dim), (attn_dim, 2 * attn_dim), (2 * attn_dim, width)):
                nn.init.xavier_uniform_(self.weight.data[c, :, lo:hi])
        self.bias = nn.Parameter(torch.zeros(c_in, width))
        hidden = 2 * max(c_in, c_out)
        self.node_mlp = mlp([c_in * out_dim, hidden, out_dim])
        self.edge_mlp = mlp([2 * c_in] + [hidden] * (n_linears - 1) + [c_out])

    def forward(self, h, adjs, pairs, node_mask, pair_mask, layout: GraphLayout):
        """h (B, N, in), adjs (B, C, N, N) symmetric channels and pairs (B, P, C) their upper triangles, masks
        (B, N) and (B, P) → h_new (B, N, out), new channels as matrices (B, c_out, N, N) and pairs (B, P, c_out).
        Edge features are symmetric, so the edge MLP runs on the upper triangle only (half the work of
        GDSS's full-matrix MLP, same values off the diagonal; the diagonal is never used)."""
        B, C, N, _ = adjs.shape
        a = self.attn_dim
        qkv = gcn_normalize(adjs) @ torch.einsum("bni,cio->bcno", h, self.weight) + self.bias[None, :, None]
        q = (qkv[..., :a] * node_mask[:, None, :, None]).view(B, C, N, self.heads, -1)
        k = (qkv[..., a : 2 * a] * node_mask[:, None, :, None]).view(B, C, N, self.heads, -1)
        v = qkv[..., 2 * a :]  # (B, C, N, out)
        att = torch.tanh(torch.einsum("bcihd,bcjhd->bchij", q, k) / math.sqrt(a)).mean(2)
        maps = (att + att.transpose(-1, -2)) / 2  # (B, C, N, N)
        h_new = torch.tanh(self.node_mlp(v.permute(0, 2, 1, 3).reshape(B, N, -1)) * node_mask[..., None])
        e = self.edge_mlp(torch.cat([layout.matrix_to_upper(maps).transpose(1, 2), pairs], -1))
        e = 2 * e * pair_mask[..., None]  # (B, P, c_out); GDSS symmetrises by e + eᵀ
        return h_new, layout.upper_to_matrix(e.transpose(1, 2)), e


def time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) → (B, dim): [t, log t] and sinusoids of log t on geometric frequencies."""
    lt = torch.log(t.clamp(min=1e-6))
    n = (dim - 2) // 2
    freqs = torch.exp(torch.linspace(math.log(0.1), math.log(4.0), max(n, 1), device=t.device))[:n]
    ang = lt[:, None] * freqs[None]
    return torch.cat([t[:, None], lt[:, None] / 10, ang.sin(), ang.cos()], -1)


class GraphScoreNetwork(nn.Module):
    """``forward(z: (B, k·D), t: (B,)) → (B, out_blocks·D)`` for the flat graph layout (module docstring)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        max_nodes: int,
        n_features: int,
        x_depth: int = 3,
        x_hidden: int = 32,
        a_layers: int = 5,
        a_linears: int = 2,
        c_init: int = 2,
        c_hid: int = 8,
        c_final: int = 4,
        adim: int = 32,
        heads: int = 4,
        a_hidden: int = 32,
        time_conditioning: bool = False,
        time_dim: int = 16,
        linear_skip: bool = True,
    ):
        super().__init__()
        self.layout = GraphLayout(max_nodes, n_features)
        D = self.layout.dim
        if in_dim % D or out_dim % D:
            raise ValueError(f"in_dim {in_dim} / out_dim {out_dim} are not multiples of the graph vector length {D}")
        self.k, self.out_blocks = in_dim // D, out_dim // D
        if not isinstance(time_conditioning, bool):
            raise ValueError(f"model.time_conditioning must be true or false, got {time_conditioning!r}")
        if not isinstance(linear_skip, bool):
            raise ValueError(f"model.linear_skip must be true or false, got {linear_skip!r}")
        self.c_init, self.time_conditioning, self.time_dim = c_init, time_conditioning, time_dim
        self.linear_skip = linear_skip
        k, F_, O = self.k, n_features, self.out_blocks
        node_in = k * F_ + (time_dim if time_conditioning else 0)
        # X-network (GDSS ScoreNetworkX, GCN version)
        self.x_convs = nn.ModuleList([DenseGCN(node_in if i == 0 else x_hidden, x_hidden) for i in range(x_depth)])
        width = node_in + x_depth * x_hidden
        self.x_out = mlp([width, 2 * width, 2 * width, O * F_])
        # A-network (GDSS ScoreNetworkA, GMH)
        c0 = c_init + k - 1
        layers = []
        for i in range(a_layers):
            if i == 0:
                layers.append(AttentionLayer(a_linears, node_in, a_hidden, a_hidden, c0, c_hid, heads))
            elif i == a_layers - 1:
                layers.append(AttentionLayer(a_linears, a_hidden, adim, a_hidden, c_hid, c_final, heads))
            else:
                layers.append(AttentionLayer(a_linears, a_hidden, adim, a_hidden, c_hid, c_hid, heads))
        self.a_layers = nn.ModuleList(layers)
        fdim = c0 + c_hid * (a_layers - 1) + c_final
        self.a_out = mlp([fdim, 2 * fdim, 2 * fdim, O])
        # off-mask coordinates: ε̂ = Σ_i c_i(t) z_i + d(t) m_true per output block
        # and on graph coordinates a linear skip ε̂ = Σ_i c'_i(t) z_i + GNN residual (the Gaussian part of the
        # score: at large t the residual is ~0, so sampling is stable from the first training steps)
        self.pad_head = mlp([time_dim, 64, O * (k + 1) + O * (k + 2)], act=nn.SiLU)
        nn.init.zeros_(self.pad_head[-1].weight)
        with torch.no_grad():  # start at ε̂ = z_k (exact for unit-variance noise around 0): a pull to 0, never 0
            bias = self.pad_head[-1].bias
            bias[: O * (k + 1)].view(O, k + 1)[:, k - 1] = 1.0
            bias[O * (k + 1) :].view(O, k + 2)[:, k - 1] = 1.0
        self.register_buffer("node_count_hist", torch.zeros(max_nodes + 1, dtype=torch.float64))
        self._mask: torch.Tensor | None = None

    @property
    def coordinate_parts(self) -> list[int]:
        """Sizes of the X | A | mask groups of one block (AMS keeps a momentum state per group)."""
        return [self.layout.n * self.layout.f, self.layout.n_pairs, self.layout.n]

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """X-network | A-network | the rest: GDSS clips its two networks' gradients separately
        (``optim.clip_subnetworks``)."""
        x = [*self.x_convs.parameters(), *self.x_out.parameters()]
        a = [*self.a_layers.parameters(), *self.a_out.parameters()]
        seen = {id(p) for p in x + a}
        return [x, a, [p for p in self.parameters() if id(p) not in seen]]

    # ---- context: the node mask
    def condition_on_data(self, x0: torch.Tensor) -> None:
        """Training hook: take the node mask of the clean batch x0 (B, D) and count its node numbers."""
        m = (self.layout.mask(x0.reshape(x0.shape[0], -1)[:, : self.layout.dim]) >= 0.5).to(x0.dtype)
        self._mask = m
        if self.training:
            counts = m.sum(1).long().clamp(max=self.layout.n)
            self.node_count_hist += torch.bincount(counts, minlength=self.layout.n + 1).to(self.node_count_hist)

    def prepare_sampling(self, n: int, generator: torch.Generator | None = None, device=None) -> None:
        """Sampling hook: node counts for n graphs drawn from the recorded training distribution (GDSS)."""
        hist = self.node_count_hist
        if hist.sum() <= 0:
            raise RuntimeError("graph network has no node-count distribution (it was never trained)")
        device = device or hist.device
        gdev = generator.device if generator is not None else torch.device("cpu")
        counts = torch.multinomial(hist.float().to(gdev), n, replacement=True, generator=generator).to(device)
        self._mask = (torch.arange(self.layout.n, device=device)[None] < counts[:, None]).float()

    def set_node_mask(self, mask: torch.Tensor) -> None:
        self._mask = mask.float()

    def finish_sampling(self, x: torch.Tensor) -> torch.Tensor:
        """Samples (n, D): write the node mask used into the m coordinates and zero the padded entries."""
        m = self._mask.to(x.device, x.dtype)
        valid = self.layout.valid(m)
        x = x * valid
        x[:, self.layout.m_slice] = m
        return x

    # ---- forward
    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        L, B = self.layout, z.shape[0]
        if self._mask is None or self._mask.shape[0] != B:
            raise RuntimeError(
                "GraphScoreNetwork needs its node-mask context for this batch (condition_on_data / prepare_sampling)"
            )
        m = self._mask.to(z.device, z.dtype)
        zz = z.view(B, self.k, L.dim)
        t = t.reshape(-1).to(z.dtype).expand(B)
        tf = time_features(t, self.time_dim)
        pair = L.node_pair_mask(m)
        X = L.features(zz) * m[:, None, :, None]  # (B, k, N, F)
        A = L.adjacency(zz) * pair[:, None]  # (B, k, N, N)
        h0 = X.permute(0, 2, 1, 3).reshape(B, L.n, -1)
        if self.time_conditioning:
            h0 = torch.cat([h0, tf[:, None].expand(B, L.n, -1)], -1) * m[..., None]
        a1 = A[:, 0]
        # X-network
        hs, h, prop = [h0], h0, gcn_normalize(a1)
        for conv in self.x_convs:
            h = torch.tanh(conv(h, prop))
            hs.append(h)
        ex = self.x_out(torch.cat(hs, -1)) * m[..., None]  # (B, N, O·F)
        ex = ex.view(B, L.n, self.out_blocks, L.f).permute(0, 2, 1, 3)  # (B, O, N, F)
        # A-network
        powers, p = [a1], a1
        for _ in range(self.c_init - 1):
            p = p @ a1
            powers.append(p)
        adjs = torch.stack(powers + [A[:, i] for i in range(1, self.k)], 1)
        pairs = L.matrix_to_upper(adjs).transpose(1, 2)  # (B, P, C)
        pair_up = L.matrix_to_upper(pair)  # (B, P)
        stack, h = [pairs], h0
        for layer in self.a_layers:
            h, adjs, pairs = layer(h, adjs, pairs, m, pair_up, L)
            stack.append(pairs)
        ea = self.a_out(torch.cat(stack, -1)) * pair_up[..., None]  # (B, P, O)
        zeros = torch.zeros(B, self.out_blocks, L.n, device=z.device, dtype=z.dtype)
        graph_eps = torch.cat([ex.flatten(-2), ea.transpose(1, 2), zeros], -1)  # (B, O, D)
        # off-mask coordinates
        O, k = self.out_blocks, self.k
        heads = self.pad_head(tf)
        coef = heads[:, : O * (k + 1)].view(B, O, k + 1)
        skip = heads[:, O * (k + 1) :].view(B, O, k + 2)
        m_true = torch.cat([torch.zeros(B, L.dim - L.n, device=z.device, dtype=z.dtype), m], -1)
        pad_eps = torch.einsum("boi,bid->bod", coef[..., :k], zz) + coef[..., k:] * m_true[:, None]
        part = torch.zeros(2, L.dim, device=z.device, dtype=z.dtype)  # indicator of the X and the A coordinates
        part[0, L.x_slice], part[1, L.a_slice] = 1, 1
        if self.linear_skip:
            graph_eps = graph_eps + torch.einsum("boi,bid->bod", skip[..., :k], zz) + skip[..., k:] @ part
        valid = L.valid(m)[:, None]
        return (valid * graph_eps + (1 - valid) * pad_eps).reshape(B, -1)
