"""Argument checks of the Python API: the command line's rules, with the package's errors (one
line naming the argument, what it got and what is accepted)."""
from __future__ import annotations

import os
from typing import Any

from .errors import NasAttnError


def describe_value(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def path_arg(value: Any, name: str, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, (str, os.PathLike)) or (isinstance(value, str) and not value):
        raise NasAttnError(f"{name} must be {what}, got {describe_value(value)}")


def bool_arg(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise NasAttnError(f"{name} must be True or False, got {describe_value(value)}")


def number_arg(value: Any, name: str, low: float, *, integer: bool = True,
                optional: bool = True) -> None:
    if value is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= low:
        kind = "an integer" if integer else "a number"
        raise NasAttnError(f"{name} must be {kind} >= {low:g}" + (" or None" if optional else "")
                           + f", got {describe_value(value)}")
