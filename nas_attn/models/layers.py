"""Dimension-generic building blocks (2D and 3D) shared by attention modules and the UNet.

Torch only, like every file of `nas_attn.models`: `nas_attn.exporting` copies its definitions
whole into standalone `model.py` files.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def conv_nd(spatial_dims: int):
    return (nn.Conv2d, nn.Conv3d)[check_dims(spatial_dims) - 2]


def conv_transpose_nd(spatial_dims: int):
    return (nn.ConvTranspose2d, nn.ConvTranspose3d)[check_dims(spatial_dims) - 2]


def max_pool_nd(spatial_dims: int):
    return (nn.MaxPool2d, nn.MaxPool3d)[check_dims(spatial_dims) - 2]


def interp_mode(spatial_dims: int) -> str:
    """Linear interpolation mode for the dimension (bilinear / trilinear)."""
    return ("bilinear", "trilinear")[check_dims(spatial_dims) - 2]


def reduced_width(channels: int, reduction: float = 16, minimum: int = 1) -> int:
    """The one rule for every reduced width: channels / reduction, never below `minimum` (>= 1)."""
    return max(int(minimum), 1, int(channels // reduction))


def norm_layer(kind: str, channels: int, spatial_dims: int) -> nn.Module:
    """Normalisation by name: batch, instance, group (up to 8 groups dividing channels), none."""
    check_dims(spatial_dims)
    if kind == "batch":
        return (nn.BatchNorm2d, nn.BatchNorm3d)[spatial_dims - 2](channels)
    if kind == "instance":
        return (nn.InstanceNorm2d, nn.InstanceNorm3d)[spatial_dims - 2](channels, affine=True)
    if kind == "group":
        groups = max(g for g in range(1, min(8, channels) + 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; accepted: batch, instance, group, none")


def act_layer(kind: str) -> nn.Module:
    """Activation by name: relu, leaky_relu, gelu, silu, elu."""
    table = {
        "relu": lambda: nn.ReLU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
        "gelu": nn.GELU,
        "silu": lambda: nn.SiLU(inplace=True),
        "elu": lambda: nn.ELU(inplace=True),
    }
    if kind not in table:
        raise ValueError(f"unknown activation {kind!r}; accepted: {', '.join(table)}")
    return table[kind]()


def resize_to(x: torch.Tensor, size, mode: str = "nearest") -> torch.Tensor:
    """Resize the spatial dims of x to `size` exactly (no-op when already there)."""
    # symbolic sizes stay symbolic (torch.export / ONNX with dynamic spatial axes); while
    # tracing (TorchScript, ONNX) sizes are traced tensors and the resize is always recorded
    # (the same numbers at equal sizes), so the graph follows the input's size
    if torch.jit.is_tracing():
        size = list(size)
    else:
        size = tuple(s if isinstance(s, torch.SymInt) else int(s) for s in size)
        if tuple(x.shape[2:]) == size:
            return x
    if mode == "linear":
        mode = interp_mode(x.dim() - 2)
        return F.interpolate(x, size=size, mode=mode, align_corners=False)
    return F.interpolate(x, size=size, mode=mode)


def rename_on_load(module: nn.Module, renames: list[tuple[str, str]]) -> None:
    """Let `module.load_state_dict` read state dicts written before its parameters were renamed:
    each `(old, new)` maps the entry `old` (or `old.<rest>`) below the module to `new`."""

    def hook(state_dict, prefix, *_):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            for old, new in renames:
                if rest == old or rest.startswith(old + "."):
                    state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                    break

    module._register_load_state_dict_pre_hook(hook)


class PassThrough(nn.Module):
    """`None` attention: returns x, whatever else it is given (so the builder has no branches)."""

    def forward(self, x: torch.Tensor, *context) -> torch.Tensor:
        return x


class IgnoreGuide(nn.Module):
    """Runs a single-input attention module at a paired site (skip) and ignores the guide."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, *context) -> torch.Tensor:
        return self.module(x)


class ConvBlock(nn.Sequential):
    """`convs` × (conv k3 → norm → activation), optional dropout at the end."""

    def __init__(self, in_channels: int, out_channels: int, *, spatial_dims: int, convs: int = 2,
                 norm: str = "batch", act: str = "relu", dropout: float = 0.0):
        layers = []
        conv = conv_nd(spatial_dims)
        for i in range(convs):
            layers += [
                conv(in_channels if i == 0 else out_channels, out_channels, 3, padding=1,
                     bias=norm == "none"),
                norm_layer(norm, out_channels, spatial_dims),
                act_layer(act),
            ]
        if dropout > 0:
            layers.append((nn.Dropout2d, nn.Dropout3d)[spatial_dims - 2](dropout))
        super().__init__(*layers)
