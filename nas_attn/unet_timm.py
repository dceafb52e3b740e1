"""UNet with a timm encoder (2D only): `encoder_name="timm:<model>"`, `features_only=True`.

The encoder's first `depth + 1` feature maps are the skips (levels 0..D-1) and the bottom
(level D); `encoder.i` / `bottleneck` attention is applied to them, then the same decoder as the
plain UNet (widths[:D] are the decoder widths). Logits are resized to the input size, since timm
encoders usually start at stride 2. Weights are never downloaded unless `pretrained=True`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .errors import ArchError
from .layers import resize_to
from .unet import UNetDecoder, unet_kwargs


class TimmUNet(nn.Module):
    def __init__(self, arch, *, pretrained: bool = False):
        super().__init__()
        import timm

        from .attention import create_attention

        model_name = arch.encoder_name.split(":", 1)[1]
        if model_name not in timm.list_models():
            raise ArchError(f"encoder_name {arch.encoder_name!r}: timm has no model {model_name!r} "
                            "(see timm.list_models())")
        kw = unet_kwargs(arch)
        self.encoder = timm.create_model(model_name, pretrained=pretrained, features_only=True,
                                         in_chans=arch.in_channels + arch.aux_channels)
        n = len(self.encoder.feature_info)
        if arch.depth + 1 > n:
            raise ArchError(f"encoder {model_name!r} gives {n} feature levels; depth must be at "
                            f"most {n - 1}, got {arch.depth}")
        chans = self.encoder.feature_info.channels()[: arch.depth + 1]
        self.depth = arch.depth
        sites = kw["sites"]
        if any(opts.get("context") == "aux" for _, opts in sites.values()):
            raise ArchError("cross attention with context='aux' is not supported with a timm "
                            "encoder; the auxiliary modality joins the input channels instead")
        self.enc_attn = nn.ModuleList()
        for i, c in enumerate(chans):
            name, opts = sites.get("bottleneck" if i == arch.depth else f"encoder.{i}", (None, {}))
            self.enc_attn.append(create_attention(name, c, spatial_dims=2, **dict(opts)))
        self.decoder = UNetDecoder(
            spatial_dims=2, skip_channels=chans[:-1], bottom_channels=chans[-1],
            widths=kw["widths"][:-1], block=kw["block"], upsample=kw["upsample"], sites=sites,
            make_attention=create_attention, deep_supervision=kw["deep_supervision"],
            out_channels=kw["out_channels"])

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
