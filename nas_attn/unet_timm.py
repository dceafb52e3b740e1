"""UNet with a timm encoder (2D only): `encoder_name="timm:<model>"`, `features_only=True`.

The encoder's first `depth + 1` feature maps are the skips (levels 0..D-1) and the bottom
(level D); `encoder.i` / `bottleneck` attention is applied to them, then the same decoder as the
plain UNet (widths[:D] are the decoder widths). Logits are resized to the input size, since timm
encoders usually start at stride 2. Weights are never downloaded unless `pretrained=True`.

`TimmUNet` takes plain numbers like `UNet`, so `nas_attn.export` copies this very class into
model.py (which then imports timm); `build_timm_unet(arch)` is the entry point from a UNetArch.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import timm
import torch
import torch.nn as nn

from .errors import ArchError
from .layers import resize_to
from .unet import AttentionFactory, SiteTable, UNetDecoder, _site


class TimmUNet(nn.Module):
    """UNet with a timm encoder (`features_only`, 2D) and the attention decoder."""

    def __init__(self, *, model_name: str, spatial_dims: int, in_channels: int, out_channels: int,
                 widths: Sequence[int], block: Mapping, upsample: str, sites: SiteTable,
                 make_attention: AttentionFactory, aux_channels: int = 0,
                 deep_supervision: bool = False, pretrained: bool = False):
        super().__init__()
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
            name, opts = _site(sites, "bottleneck" if i == depth else f"encoder.{i}")
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


def timm_kwargs(arch) -> dict:
    """`unet_kwargs(arch)` plus the timm model name: what `TimmUNet` (and model.py) takes."""
    from .unet import unet_kwargs

    return {"model_name": arch.encoder_name.split(":", 1)[1], **unet_kwargs(arch)}


def build_timm_unet(arch, *, pretrained: bool = False) -> TimmUNet:
    from .attention import create_attention

    kw = timm_kwargs(arch)
    if kw["model_name"] not in timm.list_models():
        raise ArchError(f"encoder_name {arch.encoder_name!r}: timm has no model "
                        f"{kw['model_name']!r} (see timm.list_models())")
    if any(opts.get("context") == "aux" for _, opts in kw["sites"].values()):
        raise ArchError("cross attention with context='aux' is not supported with a timm "
                        "encoder; the auxiliary modality joins the input channels instead")
    try:
        return TimmUNet(**kw, make_attention=create_attention, pretrained=pretrained)
    except ValueError as e:  # depth beyond the encoder's feature levels
        raise ArchError(str(e)) from None
