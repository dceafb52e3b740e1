"""A searched placement trained by nnU-Net v2 with its own pipeline (docs/export.md, "nnU-Net v2").

nnU-Net builds its network from the plans file: `get_network_from_plans` locates
`configurations[c]["architecture"]["network_class_name"]` by its dotted name and calls it with
`input_channels`, `num_classes`, the configuration's `arch_kwargs` and `deep_supervision`; during
training it switches deep supervision with `network.decoder.deep_supervision` and computes the
deep-supervision target scales from `arch_kwargs["strides"]`. So:

- `NasAttnUNet` is such a class: the package's own UNet (`architecture.builder.build_unet`, the same
  modules a search trained) for the architecture in `arch_kwargs["arch"]`, with nnU-Net's
  input channels and one output channel per class (softmax, also for a binary task), its
  deep-supervision heads always built (a network trained with deep supervision loads into one
  built without it, as nnU-Net's predictor does), and a `decoder.deep_supervision` switch:
  on, `forward` returns the logits of levels 0 .. depth - 1, highest resolution first (the
  scales nnU-Net derives from `strides`); off, the level-0 logits.
- `derive_plans` copies the user's plans (what `nnUNetv2_plan_and_preprocess` wrote) and
  replaces, in one configuration, only the architecture: the class name and
  `{"arch": <UNetArch>, "strides": [1, 2, 2, ...]}` (nas-attn halves every axis at every
  level). Everything else stays nnU-Net's: patch size, batch size, spacing, normalisation,
  and the `data_identifier`, so the data preprocessed for the original plans is used as is.

The nnU-Net process imports `nas_attn` (install both in one environment); nnunetv2 is never
imported here (it is the `nnunet` extra, for the benchmark and the tests).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .architecture.description import UNetArch
from .errors import ArchError, NasAttnError

CLASS_NAME = "nas_attn.nnunet.NasAttnUNet"
PLANS_NAME = "nasAttnPlans"


class _Switch:
    """What nnU-Net's trainer sets: `network.decoder.deep_supervision`."""

    def __init__(self, on: bool):
        self.deep_supervision = bool(on)


class NasAttnUNet(nn.Module):
    """A nas-attn architecture as nnU-Net v2 builds networks (module docstring)."""

    def __init__(self, input_channels: int, num_classes: int, arch: dict,
                 strides: list, deep_supervision: bool = False):
        super().__init__()
        from .architecture.builder import build_unet

        try:
            a = UNetArch.from_dict(arch)
        except ArchError as e:
            raise ArchError(f"the plans' arch_kwargs['arch'] is not a valid nas-attn "
                            f"architecture: {e}") from None
        want = expected_strides(a)
        if [list(s) for s in strides] != want:
            raise ArchError(f"arch_kwargs['strides'] {strides} do not match the architecture: "
                            f"nas-attn halves every axis at each of its {a.depth} levels, "
                            f"{want}")
        import dataclasses

        a = dataclasses.replace(a, in_channels=int(input_channels),
                                classes=max(2, int(num_classes)), deep_supervision=True)
        self.arch = a
        self.net = build_unet(a, out_channels=int(num_classes))
        self.decoder = _Switch(deep_supervision)

    def forward(self, x: torch.Tensor):
        outs = self.net.forward_all(x)
        return outs if self.decoder.deep_supervision else outs[0]


def expected_strides(arch: UNetArch) -> list[list[int]]:
    """nnU-Net's per-stage strides of a nas-attn UNet: 1 at level 0, then 2 on every axis."""
    d = arch.spatial_dims
    return [[1] * d] + [[2] * d for _ in range(arch.depth)]


def _resolved(configurations: dict, name: str) -> dict:
    """A configuration with what it inherits (`inherits_from`) filled in."""
    seen, conf = [], {}
    while name is not None:
        if name in seen or name not in configurations:
            raise NasAttnError(f"the plans have no configuration {name!r}; they have "
                               f"{', '.join(sorted(configurations))}")
        seen.append(name)
        conf = {**configurations[name], **conf}
        name = configurations[name].get("inherits_from")
    return conf


def derive_plans(plans: dict[str, Any], arch: UNetArch, configuration: str,
                 plans_name: str = PLANS_NAME) -> dict[str, Any]:
    """The user's plans with the architecture of `configuration` replaced (module docstring);
    a one-line `NasAttnError` when they do not fit the architecture."""
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise NasAttnError("not an nnU-Net v2 plans file (no 'configurations'): give the "
                           "nnUNetPlans.json that nnUNetv2_plan_and_preprocess wrote")
    conf = _resolved(plans["configurations"], configuration)
    patch = conf.get("patch_size")
    if not patch:
        raise NasAttnError(f"configuration {configuration!r} has no patch_size")
    if len(patch) != arch.spatial_dims:
        raise NasAttnError(f"configuration {configuration!r} is {len(patch)}D (patch "
                           f"{list(patch)}) but the architecture is {arch.spatial_dims}D; "
                           f"choose a {arch.spatial_dims}D configuration")
    m = 2 ** arch.depth
    if any(int(p) % m for p in patch):
        raise NasAttnError(f"configuration {configuration!r}'s patch {list(patch)} is not a "
                           f"multiple of 2**depth = {m} on every axis, which deep supervision "
                           f"needs; edit its patch_size or use an architecture of lower depth")
    out = copy.deepcopy(plans)
    out["plans_name"] = plans_name
    own = out["configurations"][configuration]
    own["architecture"] = {"network_class_name": CLASS_NAME,
                           "arch_kwargs": {"arch": arch.to_dict(),
                                           "strides": expected_strides(arch)},
                           "_kw_requires_import": []}
    return out


def write_plans(plans_file: str | Path, arch: UNetArch, configuration: str, *,
                plans_name: str = PLANS_NAME, force: bool = False) -> Path:
    """`derive_plans` of the plans in `plans_file`, written beside it as `<plans_name>.json`
    (where `nnUNetv2_train -p <plans_name>` finds it). An existing file with other contents is
    not replaced without `force`."""
    from .atomic import atomic_write

    src = Path(plans_file)
    try:
        plans = json.loads(src.read_text())
    except FileNotFoundError:
        raise NasAttnError(f"{src}: no such file (the nnU-Net plans, e.g. "
                           "$nnUNet_preprocessed/DatasetXXX_Name/nnUNetPlans.json)") from None
    except (OSError, ValueError) as e:
        raise NasAttnError(f"{src}: cannot read it as JSON: {e}") from None
    text = json.dumps(derive_plans(plans, arch, configuration, plans_name), indent=4)
    dest = src.with_name(f"{plans_name}.json")
    if dest.resolve() == src.resolve():
        raise NasAttnError(f"{src} would be replaced by its own derivative; give another "
                           "plans name")
    if dest.exists() and dest.read_text() != text and not force:
        raise NasAttnError(f"{dest} exists with other contents; pass --force to replace it")
    atomic_write(dest, text)
    return dest
