"""The flat layout of a padded graph as one data vector (pure torch; shared by data/graphs.py and
networks/graph.py).

A graph with at most N nodes and F node-feature channels is the vector

    x = [ X (N·F, row-major) | A_upper (N(N−1)/2, strict upper triangle, row-major) | m (N) ]

X are the node features (one-hot degrees, GDSS), A_upper the free coordinates of the symmetric adjacency
(the diagonal is not a coordinate, so any noise a process adds to x is a symmetric, zero-diagonal
perturbation of A by construction) and m ∈ {0, 1}^N the node mask. Every process and sampler of the
package works on this vector unchanged (data_shape = (D,), D = N·F + N(N−1)/2 + N). The network reads the
mask from its context (the clean data in training, the drawn node counts in sampling), never from the
noisy m coordinates; m rides along so that a sample alone describes its graph.
"""

from __future__ import annotations

import torch


class GraphLayout:
    """Index arithmetic for the flat graph vector (see the module docstring)."""

    def __init__(self, max_nodes: int, n_features: int):
        if max_nodes < 2 or n_features < 1:
            raise ValueError(f"need max_nodes >= 2 and n_features >= 1, got {max_nodes}, {n_features}")
        self.n, self.f = int(max_nodes), int(n_features)
        self.n_pairs = self.n * (self.n - 1) // 2
        self.dim = self.n * self.f + self.n_pairs + self.n
        self._iu = torch.triu_indices(self.n, self.n, offset=1)

    # slices of the flat vector
    @property
    def x_slice(self) -> slice:
        return slice(0, self.n * self.f)

    @property
    def a_slice(self) -> slice:
        return slice(self.n * self.f, self.n * self.f + self.n_pairs)

    @property
    def m_slice(self) -> slice:
        return slice(self.n * self.f + self.n_pairs, self.dim)

    def check(self, v: torch.Tensor) -> None:
        if v.shape[-1] != self.dim:
            raise ValueError(
                f"graph vector of length {v.shape[-1]} does not fit N={self.n}, F={self.f} (length {self.dim})"
            )

    def features(self, v: torch.Tensor) -> torch.Tensor:
        """(..., D) → X (..., N, F)."""
        return v[..., self.x_slice].reshape(*v.shape[:-1], self.n, self.f)

    def adjacency(self, v: torch.Tensor) -> torch.Tensor:
        """(..., D) → symmetric A (..., N, N) with zero diagonal."""
        return self.upper_to_matrix(v[..., self.a_slice])

    def mask(self, v: torch.Tensor) -> torch.Tensor:
        return v[..., self.m_slice]

    def upper_to_matrix(self, u: torch.Tensor) -> torch.Tensor:
        iu = self._iu.to(u.device)
        a = u.new_zeros(*u.shape[:-1], self.n, self.n)
        a[..., iu[0], iu[1]] = u
        return a + a.transpose(-1, -2)

    def matrix_to_upper(self, a: torch.Tensor) -> torch.Tensor:
        iu = self._iu.to(a.device)
        return a[..., iu[0], iu[1]]

    def pack(self, x: torch.Tensor, a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """X (..., N, F), A (..., N, N) (upper triangle used), m (..., N) → (..., D)."""
        return torch.cat([x.flatten(-2), self.matrix_to_upper(a), m], dim=-1)

    def node_pair_mask(self, m: torch.Tensor) -> torch.Tensor:
        """Node mask (..., N) → edge mask (..., N, N) with zero diagonal."""
        mm = m[..., :, None] * m[..., None, :]
        return mm * (1 - torch.eye(self.n, device=m.device, dtype=m.dtype))

    def valid(self, m: torch.Tensor) -> torch.Tensor:
        """Node mask (..., N) → (..., D): 1 on the X and A coordinates of existing nodes / pairs, 0 on padding
        and on the mask coordinates themselves."""
        vx = m[..., :, None].expand(*m.shape, self.f).flatten(-2)
        vm = m[..., :, None] * m[..., None, :]
        va = self.matrix_to_upper(vm)
        return torch.cat([vx, va, torch.zeros_like(m)], dim=-1)
