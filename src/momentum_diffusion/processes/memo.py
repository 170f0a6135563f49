"""Memoised quantities derived from a process: one small LRU cache type, and the one shared memo.

What is memoised is a pure function of its key (every parameter the value depends on, ``process_key``), so a
sampler that reads the memo stays a pure function of its inputs: the memo changes how long a call takes, never
what it returns. It is keyed by parameters, not by process object, because processes are rebuilt freely
(Hydra, every test) while the values cost seconds (gDDIM's R_t: an ODE solve; expint's plans: quadrature).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable


class LRUCache:
    """At most ``size`` values, the least recently used one dropped first; ``size`` 0 keeps nothing."""

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], object]):
        """The value for ``key``, built by ``build()`` on a miss."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        value = build()
        if self.size > 0:
            self._values[key] = value
            if len(self._values) > self.size:
                self._values.popitem(last=False)
        return value


#: derived process quantities (gDDIM factors, expint plans) for every process of a run
PROCESS_MEMO = LRUCache(64)


def process_key(process) -> tuple:
    """Everything a process's kernel depends on."""
    arrays = (process.sde.A, process.sde.Q, process.initial_cov)
    return (
        process.name,
        *(a.numpy().tobytes() for a in arrays),
        repr(process.schedule),
        process.t_min,
        process.t_max,
        process.kernel_jitter,
    )


def cached(key: Hashable, build: Callable[[], object]):
    """``PROCESS_MEMO.get``: keys must contain the ``process_key`` of every process the value depends on."""
    return PROCESS_MEMO.get(key, build)
