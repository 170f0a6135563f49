"""A pretend accelerator for CPU-only test machines: device placement checked as strictly as on a GPU.

Tensors "on the device" are CPU tensors wrapped in ``OnDevice`` (reported as the ``meta`` device, which has
no data of its own); ``PretendDevice`` is the dispatch mode that runs every op on the wrapped CPU data and

- raises, as CUDA does, when an op mixes a device tensor with a host tensor of one or more dimensions
  (0-dim host tensors are allowed, as CUDA allows CPU scalars);
- counts host→device copies (``.to(device)`` of a host tensor) and device→host syncs (``.item()``,
  ``float(t)``, ``.cpu()``), with the number of score evaluations made so far, so a test can tell the
  work done inside a sampler's step loop from its set-up and tear-down.

Results are bit-identical to the same computation on the CPU (same kernels, same global RNG stream), so a
test can compare a device run with a host run directly. A GPU run once found a device bug in every
sampler that CPU-only tests had hidden; this makes the same class of bug fail here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

DEVICE = torch.device("meta")


class OnDevice(torch.Tensor):
    """A CPU tensor that claims to live on the pretend device."""

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.shape,
            dtype=elem.dtype,
            device=DEVICE,
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            requires_grad=elem.requires_grad,
        )
        out.elem = elem
        return out

    def __repr__(self):
        return f"OnDevice({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError("device tensors are only usable inside PretendDevice()")


def host(x):
    """The CPU data of a device tensor (no sync counted): for assertions."""
    return x.elem if isinstance(x, OnDevice) else x


@dataclass
class Event:
    kind: str  # "h2d" or "sync"
    op: str
    score_calls: int  # score evaluations made before this event
    in_score: bool


@dataclass
class PretendDevice(TorchDispatchMode):
    events: list[Event] = field(default_factory=list)
    score_calls: int = 0
    in_score: bool = False

    def __post_init__(self):
        super().__init__()

    def _record(self, kind, func):
        self.events.append(Event(kind, func.__name__, self.score_calls, self.in_score))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        on_device = any(isinstance(a, OnDevice) for a in tensors)
        on_host = [a for a in tensors if not isinstance(a, OnDevice) and a.dim() > 0]
        target = kwargs.get("device")
        to_device = target is not None and torch.device(target).type == DEVICE.type
        to_host = target is not None and torch.device(target).type == "cpu"
        is_copy = func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default)
        if on_device and on_host and not is_copy:
            raise RuntimeError(f"Expected all tensors to be on the same device, but found cpu and {DEVICE} ({func})")
        if func is torch.ops.aten._local_scalar_dense.default and on_device:
            self._record("sync", func)
            return func(*tree_map(host, args), **kwargs)
        if func is torch.ops.aten._to_copy.default and on_host and to_device:
            self._record("h2d", func)
        if func is torch.ops.aten._to_copy.default and on_device and to_host:
            self._record("sync", func)
        if to_device:
            kwargs = {**kwargs, "device": torch.device("cpu")}
        out = func(*tree_map(host, args), **tree_map(host, kwargs))
        wrap = to_device or (on_device and not to_host)
        return tree_map(lambda o: OnDevice(o) if wrap and type(o) is torch.Tensor else o, out)

    def watch(self, score_fn):
        """Wrap a score function so that events are attributed to 'inside the score' or 'in the loop'."""

        def call(z, t):
            self.in_score = True
            try:
                return score_fn(z, t)
            finally:
                self.in_score = False
                self.score_calls += 1

        return call

    def in_loop(self, kind: str) -> list[Event]:
        """Events between the first and the last score evaluation, outside the score function."""
        return [e for e in self.events if e.kind == kind and 0 < e.score_calls < self.score_calls and not e.in_score]

    def reset(self):
        self.events.clear()
        self.score_calls = 0
