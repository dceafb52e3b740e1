"""The attention registry: name -> class, kind (single/paired), family, supported dims, options,
and the one validation of an attention name and its options.

It starts from `nas_attn.models.ATTENTION` (the one table of the package's modules; each class
says its family, kind, dims and residual-ness with class attributes); `register` adds modules of
your own. Module signature: `Module(channels, *, spatial_dims, **options)`; paired modules (used
on skip connections) also take `guide_channels` (the width of the decoder feature coming up from
the level below) and are called as `forward(x, g)`.

DESIGN (keep): a module's options are read from its constructor's signature
(`inspect.signature`: keyword-only parameters and their defaults), so a new attention module
needs no schema of its own, and one validation (`validate_options`) serves spaces, `UNetArch`,
the CLI and the exporter: a misspelt or out-of-range option fails with one line naming the
module and what it accepts, wherever it was written.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch.nn as nn

from ..errors import AttentionOptionError, UnknownAttentionError
from ..models import ATTENTION, build_attention
from ..models.layers import PassThrough

Kind = Literal["single", "paired"]
FAMILIES = ("channel", "spatial", "gate", "dual", "cross", "self", "timm")
_RESERVED = ("self", "channels", "spatial_dims", "guide_channels")


@dataclass(frozen=True)
class AttentionInfo:
    name: str
    cls: type
    kind: Kind
    family: str
    dims: tuple[int, ...]
    residual: bool
    """True when the module is the identity at initialisation (learnable scale starting at 0)."""
    summary: str

    def options(self) -> dict[str, Any]:
        """Accepted options and their defaults (from the constructor signature)."""
        sig = inspect.signature(self.cls.__init__)
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in sig.parameters.values()
            if p.name not in _RESERVED and p.kind is p.KEYWORD_ONLY
        }


_REGISTRY: dict[str, AttentionInfo] = {}


def _info(name: str, cls: type) -> AttentionInfo:
    params = inspect.signature(cls.__init__).parameters
    for p in params.values():
        if p.kind is p.VAR_KEYWORD:
            raise TypeError(f"{cls.__qualname__} swallows options with **{p.name}; "
                            "declare them as keyword-only parameters")
    family = getattr(cls, "family", None)
    if family not in FAMILIES:
        raise ValueError(f"{cls.__qualname__}: family {family!r} not in {FAMILIES}")
    doc = (cls.__doc__ or "").strip().splitlines()
    return AttentionInfo(name, cls, getattr(cls, "kind", "single"), family,
                         tuple(getattr(cls, "dims", (2, 3))), bool(getattr(cls, "residual", False)),
                         doc[0] if doc else "")


def register(name: str, *, family: str, kind: Kind = "single", dims: tuple[int, ...] = (2, 3),
             residual: bool = False) -> Callable[[type], type]:
    """Class decorator that registers an attention module of your own under `name` (it sets the
    class attributes `family`, `kind`, `dims`, `residual`). A name taken already raises."""

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"attention {name!r} is already registered "
                             f"(by {_REGISTRY[name].cls.__qualname__})")
        cls.family, cls.kind, cls.dims, cls.residual = family, kind, tuple(dims), residual
        _REGISTRY[name] = _info(name, cls)
        return cls

    return deco


for _name, _cls in ATTENTION.items():
    _REGISTRY[_name] = _info(_name, _cls)


def names() -> list[str]:
    return sorted(_REGISTRY)


def all_info() -> list[AttentionInfo]:
    return [_REGISTRY[n] for n in names()]


def get_info(name: str) -> AttentionInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownAttentionError(
            f"unknown attention {name!r}; known: none, {', '.join(names())}") from None


_OPTION_TYPES = (bool, int, float, str)


OPTION_RANGES = {"reduction": (1, 1024), "heads": (1, 64), "max_tokens": (0, 65536),
                 "kernel_size": (0, 31), "inter_channels": (0, 4096)}
"""The values an integer option may take (outside them a module would be clamped in silence
or allocate without bound)."""


def validate_options(name: str, options: dict[str, Any], *, spatial_dims: int = 2,
                     where: str = "") -> None:
    """Raise a clear error for an option the module does not accept or a value of the wrong kind."""
    info = get_info(name)
    at = f" at {where}" if where else ""
    if spatial_dims not in info.dims:
        raise AttentionOptionError(
            f"attention {name!r}{at} supports spatial_dims {list(info.dims)} only, "
            f"not {spatial_dims}; pick another module for {spatial_dims}D data")
    accepted = info.options()
    for key, value in options.items():
        if key not in accepted:
            raise AttentionOptionError(
                f"attention {name!r}{at} has no option {key!r}; accepted: "
                f"{', '.join(f'{k}={v!r}' for k, v in accepted.items()) or 'none'}")
        if value is not None and not isinstance(value, _OPTION_TYPES):
            raise AttentionOptionError(
                f"option {key!r} of {name!r}{at} must be a bool, int, float or str, got {value!r}")
        default = accepted[key]
        if value is not None and default is not None and not _same_kind(value, default):
            raise AttentionOptionError(
                f"option {key!r} of {name!r}{at} must be of type {type(default).__name__} "
                f"(default {default!r}), got {value!r}")
        bounds = OPTION_RANGES.get(key)
        if bounds is not None and isinstance(value, int) and not isinstance(value, bool) \
                and not bounds[0] <= value <= bounds[1]:
            raise AttentionOptionError(
                f"option {key!r} of {name!r}{at} must be {bounds[0]}..{bounds[1]}, got {value!r}")
        choices = getattr(info.cls, "option_choices", {}).get(key)
        if choices is not None and value not in choices:
            raise AttentionOptionError(
                f"option {key!r} of {name!r}{at} must be one of "
                f"{', '.join(map(repr, choices))}; got {value!r}")


def _same_kind(value: Any, default: Any) -> bool:
    """bool for bool, int (not bool) for int, int or float for float, str for str."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def create_attention(name: str | None, channels: int, *, spatial_dims: int,
                     guide_channels: int | None = None, **options) -> nn.Module:
    """Build an attention module. `None` gives a pass-through.

    With `guide_channels` (a skip site) every module is called as `m(x, g)`: paired modules use
    g, single ones are wrapped to ignore it.
    """
    if name is None:
        return PassThrough()
    info = get_info(name)
    for what, value in (("channels", channels), ("guide_channels", guide_channels)):
        if value is None and what == "guide_channels":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AttentionOptionError(f"attention {name!r}: {what} must be a positive integer, "
                                       f"got {value!r}")
    validate_options(name, options, spatial_dims=spatial_dims)
    if info.kind == "paired":
        if guide_channels is None:
            raise AttentionOptionError(
                f"attention {name!r} needs a guiding feature and can only go on a skip site")
    try:
        return build_attention(info.cls, channels, spatial_dims=spatial_dims,
                               guide_channels=guide_channels, **options)
    except AttentionOptionError:
        raise
    except ValueError as e:  # a module's own check of an option value (torch-only, exportable)
        raise AttentionOptionError(f"attention {name!r} with options {options}: {e}") from e


def list_attention(family: str | None = None) -> list[str]:
    """The registered attention names (sorted), or those of one family (channel, spatial, gate,
    dual, cross, self, timm)."""
    if family is not None and family not in FAMILIES:
        raise UnknownAttentionError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return [i.name for i in all_info() if family is None or i.family == family]
