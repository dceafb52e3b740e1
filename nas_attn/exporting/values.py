"""What may become a literal of an exported model.py, and an architecture checked for it.

`lit` writes a Python literal only from ints, finite floats, bools, None and strings matching
`SAFE_STR` (registry names, fixed vocabularies, option values); `validated_arch` validates an
architecture again from its JSON and checks every value that would become a literal. Loading a
model (`nas_attn.inference`) uses the same check on an export folder's arch.json, so this module
sits below the model.py text generator (`text`) and needs only the architecture layer.
"""
from __future__ import annotations

import math
import numbers
import re
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import NasAttnError

if TYPE_CHECKING:
    from ..architecture.description import UNetArch


class ExportError(NasAttnError):
    """An architecture, value or output format that cannot be exported."""


_TIMM_ENCODER = re.compile(r"^timm:[A-Za-z0-9_\-\.]{1,64}$")
_SAFE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SAFE_STR = re.compile(r"^[A-Za-z0-9_\-\.]{1,64}$")
SITE = re.compile(r"^(?:(?:encoder|skip|decoder)\.[0-9]{1,2}|bottleneck)$")


def lit(v: Any, where: str) -> str:
    """A Python literal for a validated value: bool, int, finite float, None, safe str, or
    lists / tuples / mappings of those."""
    if v is None or isinstance(v, bool):
        return repr(v)
    if isinstance(v, numbers.Integral):
        return repr(int(v))
    if isinstance(v, numbers.Real):
        f = float(v)
        if not math.isfinite(f):
            raise ExportError(f"{where}: value {f!r} is not finite; cannot export it")
        return repr(f)
    if isinstance(v, str):
        if not SAFE_STR.match(v):
            raise ExportError(f"{where}: string {v[:80]!r} is not exportable; strings in model.py "
                              f"must match {SAFE_STR.pattern}")
        return repr(str(v))
    if isinstance(v, (list, tuple)):
        items = [lit(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(v, Mapping):
        parts = []
        for k, x in v.items():
            if not isinstance(k, str) or not SAFE_STR.match(k):
                raise ExportError(f"{where}: key {str(k)[:80]!r} is not exportable")
            parts.append(f"{k!r}: {lit(x, f'{where}.{k}')}")
        return "{" + ", ".join(parts) + "}"
    raise ExportError(f"{where}: value of type {type(v).__name__} cannot be exported "
                      "(accepted: bool, int, float, str, None, lists and mappings of them)")


def validated_arch(arch: UNetArch | Mapping) -> UNetArch:
    """`arch` validated again from its JSON, with every value that becomes a literal checked."""
    from .. import models
    from ..architecture import registry
    from ..architecture.description import ACTS, NORMS, UPSAMPLES, UNetArch
    from ..errors import ArchError

    try:
        arch = UNetArch.from_dict(arch.to_dict() if isinstance(arch, UNetArch) else arch)
    except ArchError:
        raise
    except Exception as e:  # anything from_dict did not expect is still a bad architecture
        raise ExportError(f"architecture does not validate: {e}") from None
    if arch.encoder_name != "unet":
        if not _TIMM_ENCODER.match(arch.encoder_name):
            raise ExportError(f"encoder_name {arch.encoder_name[:80]!r} is not exportable; a timm "
                              f"encoder name must match {_TIMM_ENCODER.pattern}")
        if any(spec.opts.get("context") == "aux" for _, spec in arch.sites()):
            raise ExportError("cross attention with context='aux' is not supported with a timm "
                              "encoder (build_unet refuses it too)")
    if arch.block.norm not in NORMS or arch.block.act not in ACTS or arch.upsample not in UPSAMPLES:
        raise ExportError("block norm/act or upsample outside the fixed vocabularies")
    for site, spec in arch.sites():
        if spec.name is None:
            continue
        if models.ATTENTION.get(spec.name) is not registry.get_info(spec.name).cls or \
                not SAFE_STR.match(spec.name):
            raise ExportError(f"{site}: attention {spec.name!r} is not one of nas_attn.models "
                              "(only those can be copied into model.py)")
        accepted = registry.get_info(spec.name).options()
        for k, v in spec.options:
            if k not in accepted or not _SAFE_KEY.match(k):
                raise ExportError(f"{site}: option {k!r} of {spec.name!r} is not exportable")
            lit(v, f"{site}.{spec.name}.{k}")  # raises for quotes, newlines, non-finite, ...
    return arch
