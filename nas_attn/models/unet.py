"""The UNet itself, built from plain numbers and a site -> attention table.

Torch only: `nas_attn.exporting` copies `UNet` and `UNetDecoder` whole into `model.py`.
`nas_attn.architecture.builder.build_unet(arch)` turns a `UNetArch` into these numbers; a timm
encoder (2D) is `TimmUNet` in `timm_layers.py`, with the same decoder.

Sizes: down-sampling is a ceil-mode 2× max-pool and every up-sampled feature is resized to the
skip's exact size, so any input size works (37×53, 20×33×17), not only multiples of 2**depth.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from .layers import ConvBlock, conv_nd, conv_transpose_nd, max_pool_nd, resize_to

# (name or None, options) for one site
SiteTable = Mapping[str, tuple]
AttentionFactory = Callable[..., nn.Module]


def site_spec(sites: SiteTable, key: str) -> tuple:
    name, options = sites.get(key, (None, {}))
    return name, dict(options)


def uses_aux_context(sites: SiteTable, depth: int) -> list[bool]:
    return [site_spec(sites, f"skip.{i}")[1].get("context") == "aux" for i in range(depth)]


class UNetDecoder(nn.Module):
    """Decoder of depth D over skip features (levels 0..D-1) and a bottom feature (level D).

    For each level i from D-1 down to 0: up-sample the feature coming up from level i+1 to the
    skip's exact size, apply the `skip.i` attention to the skip (guided by that feature, or by an
    auxiliary-modality feature), concatenate, conv block, `decoder.i` attention.
    """

    def __init__(self, *, spatial_dims: int, skip_channels: Sequence[int], bottom_channels: int,
                 widths: Sequence[int], block: Mapping, upsample: str, sites: SiteTable,
                 make_attention: AttentionFactory, deep_supervision: bool = False,
                 out_channels: int = 1):
        super().__init__()
        depth = len(skip_channels)
        self.upsample_mode = upsample
        self.ups = nn.ModuleList()
        self.skip_attn = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.dec_attn = nn.ModuleList()
        self.uses_aux = uses_aux_context(sites, depth)
        for i in range(depth):
            below = bottom_channels if i == depth - 1 else widths[i + 1]
            if upsample == "transpose":
                up = conv_transpose_nd(spatial_dims)(below, widths[i], 2, stride=2)
            else:
                up = conv_nd(spatial_dims)(below, widths[i], 1)
            self.ups.append(up)
            name, opts = site_spec(sites, f"skip.{i}")
            guide = skip_channels[i] if self.uses_aux[i] else below
            self.skip_attn.append(make_attention(name, skip_channels[i], spatial_dims=spatial_dims,
                                                 guide_channels=guide, **opts))
            self.blocks.append(ConvBlock(skip_channels[i] + widths[i], widths[i],
                                         spatial_dims=spatial_dims, **block))
            name, opts = site_spec(sites, f"decoder.{i}")
            self.dec_attn.append(make_attention(name, widths[i], spatial_dims=spatial_dims, **opts))
        self.head = conv_nd(spatial_dims)(widths[0], out_channels, 1)
        self.ds_heads = nn.ModuleList(
            conv_nd(spatial_dims)(widths[i], out_channels, 1) for i in range(1, depth)
        ) if deep_supervision else nn.ModuleList()

    def forward(self, skips: list[torch.Tensor], bottom: torch.Tensor,
                aux_feats: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Returns [main logits at level 0, deep-supervision logits at levels 1.. (if any)]."""
        y = bottom
        levels: list[torch.Tensor] = []
        for i in reversed(range(len(skips))):
            skip = skips[i]
            size = skip.shape[2:]
            if self.upsample_mode == "transpose":
                up = resize_to(self.ups[i](y), size, mode="linear")
            else:
                up = self.ups[i](resize_to(y, size, mode="linear"))
            guide = aux_feats[i] if (self.uses_aux[i] and aux_feats is not None) else y
            skip = self.skip_attn[i](skip, guide)
            y = self.dec_attn[i](self.blocks[i](torch.cat([skip, up], dim=1)))
            levels.append(y)
        levels.reverse()  # levels[i] is the decoder output at level i
        outs = [self.head(levels[0])]
        outs += [h(levels[i + 1]) for i, h in enumerate(self.ds_heads)]
        return outs


class UNet(nn.Module):
    """Conv-encoder UNet of depth D = len(widths) - 1 with an attention module at every site."""

    def __init__(self, *, spatial_dims: int, in_channels: int, out_channels: int,
                 widths: Sequence[int], block: Mapping, upsample: str, sites: SiteTable,
                 make_attention: AttentionFactory, aux_channels: int = 0,
                 deep_supervision: bool = False):
        super().__init__()
        depth = len(widths) - 1
        self.spatial_dims = spatial_dims
        self.pool = max_pool_nd(spatial_dims)(2, ceil_mode=True)
        aux_sites = uses_aux_context(sites, depth)
        # an auxiliary modality feeds cross attention where asked, else joins the input early
        self.aux_encoder = aux_channels > 0 and any(aux_sites)
        self.early_fusion = aux_channels > 0 and not self.aux_encoder
        first_in = in_channels + (aux_channels if self.early_fusion else 0)
        self.enc_blocks = nn.ModuleList()
        self.enc_attn = nn.ModuleList()
        for i, w in enumerate(widths):
            self.enc_blocks.append(ConvBlock(first_in if i == 0 else widths[i - 1], w,
                                             spatial_dims=spatial_dims, **block))
            name, opts = site_spec(sites, "bottleneck" if i == depth else f"encoder.{i}")
            self.enc_attn.append(make_attention(name, w, spatial_dims=spatial_dims, **opts))
        self.aux_blocks = nn.ModuleList(
            ConvBlock(aux_channels if i == 0 else widths[i - 1], widths[i],
                      spatial_dims=spatial_dims, convs=1, norm=block.get("norm", "batch"),
                      act=block.get("act", "relu"))
            for i in range(depth)
        ) if self.aux_encoder else nn.ModuleList()
        self.decoder = UNetDecoder(
            spatial_dims=spatial_dims, skip_channels=widths[:-1], bottom_channels=widths[-1],
            widths=widths[:-1], block=block, upsample=upsample, sites=sites,
            make_attention=make_attention, deep_supervision=deep_supervision,
            out_channels=out_channels)

    def forward_all(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> list[torch.Tensor]:
        """All outputs: main logits first, then deep-supervision logits (coarser levels)."""
        if self.early_fusion:
            if aux is None:
                raise ValueError("this model was built with an auxiliary modality: pass aux=")
            x = torch.cat([x, aux], dim=1)
        skips = []
        for i, (block, attn) in enumerate(zip(self.enc_blocks, self.enc_attn)):
            if i > 0:
                x = self.pool(x)
            x = attn(block(x))
            skips.append(x)
        aux_feats = None
        if self.aux_encoder:
            if aux is None:
                raise ValueError("this model uses cross attention on an auxiliary modality: pass aux=")
            aux_feats, a = [], aux
            for i, block in enumerate(self.aux_blocks):
                a = block(a if i == 0 else self.pool(a))
                aux_feats.append(a)
        return self.decoder(skips[:-1], skips[-1], aux_feats)

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_all(x, aux)[0]
