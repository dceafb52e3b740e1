"""timm inside the UNet: four of timm's 2D attention layers (timm.layers, timm >= 1.0) and a UNet
with a timm encoder (`TimmUNet`).

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
conv output, like another conv layer). 2D only: `dims = (2,)`, so asking for them in 3D gives
the registry's clear error. timm's `GatherExcite` is not wrapped: in timm 1.0.31 its
constructor fails (duplicate `act_layer` / `kernel_size` arguments to its helpers).

`TimmUNet` (`encoder_name="timm:<model>"`, 2D, `features_only=True`): the encoder's first
`depth + 1` feature maps are the skips (levels 0..D-1) and the bottom (level D); `encoder.i` /
`bottleneck` attention is applied to them, then the same decoder as the plain UNet (widths[:D] are
the decoder widths). Logits are resized to the input size, since timm encoders usually start at
stride 2. Weights are never downloaded unless `pretrained=True`.

Every class imports timm in its constructor, not at the top of the file, so importing
`nas_attn.models` (and a model without these classes) never loads timm; a model.py exported
with one of them imports timm too.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from .layers import reduced_width, resize_to
from .unet import UNetDecoder, site_spec


def _check_2d(name: str, spatial_dims: int, reduction: int = 1) -> None:
    if spatial_dims != 2:
        raise ValueError(f"{name}: timm attention layers are 2D only, "
                         f"got spatial_dims={spatial_dims}")
    if reduction < 1:
        raise ValueError(f"{name}: reduction must be >= 1, got {reduction}")


class TimmGlobalContext(nn.Module):
    """timm GlobalContext (GCNet): attention-pooled context, MLP, sigmoid channel scale."""

    family = "timm"
    dims = (2,)

    def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 8):
        super().__init__()
        from timm.layers import GlobalContext

        _check_2d("gc", spatial_dims, reduction)
        self.module = GlobalContext(channels, rd_channels=reduced_width(channels, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class TimmSelectiveKernel(nn.Module):
    """timm SelectiveKernel: 3x3 and dilated 3x3 conv paths mixed by a channel softmax."""

    family = "timm"
    dims = (2,)

    def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 16):
        super().__init__()
        from timm.layers import SelectiveKernel

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


class TimmCoordAttn(nn.Module):
    """timm CoordAttn: row- and column-pooled descriptors give two directional gates."""

    family = "timm"
    dims = (2,)

    def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 16):
        super().__init__()
        from timm.layers.coord_attn import CoordAttn

        _check_2d("coord", spatial_dims, reduction)
        self.module = CoordAttn(channels, rd_channels=reduced_width(channels, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class TimmEffectiveSE(nn.Module):
    """timm EffectiveSEModule: SE with one C -> C 1x1 conv and a hard-sigmoid gate."""

    family = "timm"
    dims = (2,)

    def __init__(self, channels: int, *, spatial_dims: int, add_maxpool: bool = False):
        super().__init__()
        from timm.layers import EffectiveSEModule

        _check_2d("ese", spatial_dims)
        self.module = EffectiveSEModule(channels, add_maxpool=add_maxpool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class TimmUNet(nn.Module):
    """UNet with a timm encoder (`features_only`, 2D) and the attention decoder."""

    def __init__(self, *, model_name: str, spatial_dims: int, in_channels: int, out_channels: int,
                 widths: Sequence[int], block: Mapping, upsample: str, sites: Mapping,
                 make_attention: Callable[..., nn.Module], aux_channels: int = 0,
                 deep_supervision: bool = False, pretrained: bool = False):
        super().__init__()
        import timm

        depth = len(widths) - 1
        self.encoder = timm.create_model(model_name, pretrained=pretrained, features_only=True,
                                         in_chans=in_channels + aux_channels)
        n = len(self.encoder.feature_info)
        if depth + 1 > n:
            raise ValueError(f"encoder {model_name!r} gives {n} feature levels; depth must be at "
                             f"most {n - 1}, got {depth}")
        chans = self.encoder.feature_info.channels()[: depth + 1]
        self.depth = depth
        self.enc_attn = nn.ModuleList()
        for i, c in enumerate(chans):
            name, opts = site_spec(sites, "bottleneck" if i == depth else f"encoder.{i}")
            self.enc_attn.append(make_attention(name, c, spatial_dims=2, **opts))
        self.decoder = UNetDecoder(
            spatial_dims=2, skip_channels=chans[:-1], bottom_channels=chans[-1],
            widths=widths[:-1], block=block, upsample=upsample, sites=sites,
            make_attention=make_attention, deep_supervision=deep_supervision,
            out_channels=out_channels)

    def forward_all(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> list[torch.Tensor]:
        size = x.shape[2:]
        if aux is not None:
            x = torch.cat([x, aux], dim=1)
        feats = self.encoder(x)[: self.depth + 1]
        feats = [attn(f) for attn, f in zip(self.enc_attn, feats)]
        outs = self.decoder(feats[:-1], feats[-1])
        outs[0] = resize_to(outs[0], size, mode="linear")
        return outs

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_all(x, aux)[0]
