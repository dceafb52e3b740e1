"""Thin wrappers that register some of timm's 2D attention layers (timm.layers, timm >= 1.0).

Papers (as implemented by timm; see each class):
- `gc`: Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
  arXiv:1904.11492 (global context block, timm `GlobalContext`).
- `sk`: Li et al., "Selective Kernel Networks", CVPR 2019, arXiv:1903.06586
  (timm `SelectiveKernel`, a conv replacement with two kernel paths).
- `coord`: Hou et al., "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021,
  arXiv:2103.02907 (timm `CoordAttn`).
- `ese`: Lee and Park, "CenterMask: Real-Time Anchor-Free Instance Segmentation", CVPR 2020,
  arXiv:1911.06667 (effective SE, timm `EffectiveSEModule`).

Deviations: timm's defaults, except that every reduced width is passed explicitly as
`rd_channels = reduced_width(C, reduction)` (timm rounds to multiples of 8, which inflates narrow
layers), and `sk` splits its input across its two paths only when the width is even (timm
asserts otherwise). `sk` runs timm's forward re-written without `torch.stack` (same weights and
numbers) so that it keeps the channels_last memory format. None is the identity at initialisation (`sk` replaces the features by its own
conv output, like another conv layer). 2D only: registered with dims=(2,), so asking for them in
3D gives the registry's clear error. timm's `GatherExcite` is not wrapped: in timm 1.0.31 its
constructor fails (duplicate `act_layer` / `kernel_size` arguments to its helpers).

Not exportable: this file imports timm, so a model using these modules needs timm installed.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import reduced_width
from .registry import register

try:  # every import below is part of timm >= 1.0's public layers package
    from timm.layers import EffectiveSEModule, GlobalContext, SelectiveKernel
    from timm.layers.coord_attn import CoordAttn
except ImportError:  # pragma: no cover - timm is a declared dependency
    EffectiveSEModule = GlobalContext = SelectiveKernel = CoordAttn = None


def _check_2d(name: str, spatial_dims: int, reduction: int = 1) -> None:
    if spatial_dims != 2:
        raise ValueError(f"{name}: timm attention layers are 2D only, "
                         f"got spatial_dims={spatial_dims}")
    if reduction < 1:
        raise ValueError(f"{name}: reduction must be >= 1, got {reduction}")


if GlobalContext is not None:
    @register("gc", family="timm", dims=(2,))
    class TimmGlobalContext(nn.Module):
        """timm GlobalContext (GCNet): attention-pooled context, MLP, sigmoid channel scale."""

        def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 8):
            super().__init__()
            _check_2d("gc", spatial_dims, reduction)
            self.module = GlobalContext(channels, rd_channels=reduced_width(channels, reduction))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module(x)


if SelectiveKernel is not None:
    @register("sk", family="timm", dims=(2,))
    class TimmSelectiveKernel(nn.Module):
        """timm SelectiveKernel: 3x3 and dilated 3x3 conv paths mixed by a channel softmax."""

        def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 16):
            super().__init__()
            _check_2d("sk", spatial_dims, reduction)
            self.module = SelectiveKernel(channels, channels,
                                          rd_channels=reduced_width(channels, reduction),
                                          split_input=channels % 2 == 0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """timm's SelectiveKernel.forward with the same weights and numbers, without its
            `torch.stack` of the paths (which drops channels_last and copies forward and back):
            the attention input is the sum of the paths and the output the weighted sum."""
            sk = self.module
            if sk.split_input:
                parts = torch.split(x, sk.in_channels // sk.num_paths, 1)
                paths = [op(parts[i]) for i, op in enumerate(sk.paths)]
            else:
                paths = [op(x) for op in sk.paths]
            attn = sk.attn
            s = sum(paths[1:], paths[0]).mean((2, 3), keepdim=True)
            s = attn.fc_select(attn.act(attn.bn(attn.fc_reduce(s))))
            b, c = s.shape[:2]
            w = torch.softmax(s.view(b, sk.num_paths, c // sk.num_paths, 1, 1), dim=1)
            out = paths[0] * w[:, 0]
            for i in range(1, len(paths)):
                out = out + paths[i] * w[:, i]
            return out.to(x.dtype)  # a no-op unless autocast gave its convs another dtype


if CoordAttn is not None:
    @register("coord", family="timm", dims=(2,))
    class TimmCoordAttn(nn.Module):
        """timm CoordAttn: row- and column-pooled descriptors give two directional gates."""

        def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 16):
            super().__init__()
            _check_2d("coord", spatial_dims, reduction)
            self.module = CoordAttn(channels, rd_channels=reduced_width(channels, reduction))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module(x)


if EffectiveSEModule is not None:
    @register("ese", family="timm", dims=(2,))
    class TimmEffectiveSE(nn.Module):
        """timm EffectiveSEModule: SE with one C -> C 1x1 conv and a hard-sigmoid gate."""

        def __init__(self, channels: int, *, spatial_dims: int, add_maxpool: bool = False):
            super().__init__()
            _check_2d("ese", spatial_dims)
            self.module = EffectiveSEModule(channels, add_maxpool=add_maxpool)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module(x)
