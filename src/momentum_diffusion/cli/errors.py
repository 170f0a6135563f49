"""User errors of the CLIs: what counts as one, and the config mistakes that are turned into one line."""

from __future__ import annotations

import re

from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue


class UserError(Exception):
    """Bad input that the user must fix; printed as one line, exit code 2."""


USER_ERRORS = (
    UserError,
    ValueError,
    FileNotFoundError,
    PermissionError,
    NotADirectoryError,
    KeyError,
    MissingMandatoryValue,
)


def unknown_option(exc: BaseException) -> UserError | None:
    """A config key the _target_ does not take (e.g. an experiment's VP β with diffusion=cld), as one line."""
    if not isinstance(exc, InstantiationException) or not isinstance(exc.__cause__, TypeError):
        return None
    option = re.search(r"([\w.]+)\(\) got an unexpected keyword argument '(\w+)'", str(exc.__cause__))
    if option is None:
        return None
    target = option.group(1).removesuffix(".__init__")  # a class reports Cls.__init__(), a function fn()
    group = re.search(r"full_key: (\S+)", str(exc))
    where = f"{group.group(1)}.{option.group(2)}" if group else option.group(2)
    return UserError(f"{where} is not an option of {target} (set for another choice of this config group?)")


def user_error_in(exc: BaseException) -> BaseException | None:
    """The outermost user error in an exception chain (Hydra wraps errors raised by _target_ calls)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, USER_ERRORS):
            return exc
        if (unknown := unknown_option(exc)) is not None:
            return unknown
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None
