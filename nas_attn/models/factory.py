"""The one table of attention modules (name -> class) and the factory the UNet builds them with.

Torch only. `nas_attn.architecture.registry` reads this table (kinds, families, options,
validation);
`nas_attn.exporting` copies `make_attention` and `build_attention` into `model.py` and writes the
table there with only the classes the architecture uses. A class says what it is with class
attributes: `family`, `kind` ("paired": `forward(x, g)`, skip sites only; default "single"),
`residual` (identity at initialisation), `dims` (default 2D and 3D), `option_choices`.
"""
from __future__ import annotations

import torch.nn as nn

from .channel import CBAMChannel, EfficientChannelAttention, SqueezeExcite
from .cross import CrossAttention
from .dual import ChannelSelfAttention, DualAttention, PositionAttention
from .gate import AttentionGate
from .layers import IgnoreGuide, PassThrough
from .selfattn import SelfAttention
from .spatial import CBAM, SCSE, SpatialAttention
from .timm_layers import TimmCoordAttn, TimmEffectiveSE, TimmGlobalContext, TimmSelectiveKernel

ATTENTION = {
    "se": SqueezeExcite, "eca": EfficientChannelAttention, "cbam_channel": CBAMChannel,
    "spatial": SpatialAttention, "cbam": CBAM, "scse": SCSE,
    "gate": AttentionGate,
    "position": PositionAttention, "channel_self": ChannelSelfAttention, "dual": DualAttention,
    "cross": CrossAttention,
    "self": SelfAttention,
    "gc": TimmGlobalContext, "sk": TimmSelectiveKernel, "coord": TimmCoordAttn,
    "ese": TimmEffectiveSE,
}


def build_attention(cls: type, channels: int, *, spatial_dims: int,
                    guide_channels: int | None = None, **options) -> nn.Module:
    """An instance of an attention class. At a skip site (`guide_channels` given) every module
    is called as `m(x, g)`: paired modules get the guide, single ones are wrapped to ignore it."""
    if getattr(cls, "kind", "single") == "paired":
        if guide_channels is None:
            raise ValueError(f"{cls.__name__} needs a guiding feature (skip sites only)")
        return cls(channels, spatial_dims=spatial_dims, guide_channels=guide_channels, **options)
    module = cls(channels, spatial_dims=spatial_dims, **options)
    return module if guide_channels is None else IgnoreGuide(module)


def make_attention(name: str | None, channels: int, *, spatial_dims: int,
                   guide_channels: int | None = None, **options) -> nn.Module:
    """The attention module `name` of `ATTENTION` (None: a pass-through)."""
    if name is None:
        return PassThrough()
    if name not in ATTENTION:
        raise ValueError(f"attention {name!r} is not in this file; known: {sorted(ATTENTION)}")
    return build_attention(ATTENTION[name], channels, spatial_dims=spatial_dims,
                           guide_channels=guide_channels, **options)
