"""The one check of a named option against its allowed values, shared by every layer (imports nothing)."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(option: str, value, choices: Iterable, error: type[Exception] = ValueError):
    """``value`` if it is one of ``choices``; otherwise ``error("unknown <option> 'x'; choose a, b or c")``."""
    choices = tuple(choices)
    if value in choices:
        return value
    names = [str(c) for c in choices]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    raise error(f"unknown {option} {value!r}; choose {listed}")
