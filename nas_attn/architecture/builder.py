"""`build_unet(arch)`: a validated `UNetArch` turned into a model of `nas_attn.models`.

The only place that reads a `UNetArch` to build a network: `unet_kwargs(arch)` are the plain
numbers `nas_attn.models.UNet` (and the exported model.py's `ARCH`) take; a timm encoder (2D)
builds `nas_attn.models.TimmUNet` with the same numbers and its model name.
"""
from __future__ import annotations

import torch.nn as nn

from .description import UNetArch
from ..errors import ArchError
from ..models import TimmUNet, UNet
from .registry import create_attention


def unet_kwargs(arch) -> dict:
    """The plain-number description of `arch` that `UNet` (and the exported file) takes."""
    return dict(
        spatial_dims=arch.spatial_dims, in_channels=arch.in_channels,
        out_channels=arch.out_channels, widths=list(arch.widths),
        block=dict(convs=arch.block.convs, norm=arch.block.norm, act=arch.block.act,
                   dropout=float(arch.block.dropout)),
        upsample=arch.upsample,
        sites={site: (spec.name, spec.opts) for site, spec in arch.sites() if spec.name},
        aux_channels=arch.aux_channels, deep_supervision=arch.deep_supervision,
    )


def timm_kwargs(arch) -> dict:
    """`unet_kwargs(arch)` plus the timm model name: what `TimmUNet` (and model.py) takes."""
    return {"model_name": arch.encoder_name.split(":", 1)[1], **unet_kwargs(arch)}


def build_unet(arch, *, pretrained: bool = False, make_attention=None,
               sites: dict | None = None, out_channels: int | None = None) -> nn.Module:
    """Turn a validated `UNetArch` into a model (plain conv encoder, or a timm encoder in 2D;
    `pretrained` downloads the timm encoder's weights, never done by nas-attn itself).

    `make_attention` and `sites` replace the registry's factory and the architecture's site
    table (the one-shot supernet puts a module holding every choice at each site);
    `out_channels` replaces the architecture's (nnU-Net wants one softmax channel per class,
    also for a binary task, where nas-attn uses one sigmoid channel)."""
    if not isinstance(arch, UNetArch):
        raise ArchError(f"build_unet needs a UNetArch, got {type(arch).__name__} (UNetArch."
                        "from_dict / from_json make one from a dict or JSON text)")
    _check_weights_fit(arch)
    make = make_attention or create_attention
    if not arch.encoder_name.startswith("timm:"):
        kw = unet_kwargs(arch)
        if sites is not None:
            kw["sites"] = sites
        if out_channels is not None:
            kw["out_channels"] = out_channels
        return UNet(**kw, make_attention=make)
    import timm

    kw = timm_kwargs(arch)
    if sites is not None:
        kw["sites"] = sites
    if out_channels is not None:
        kw["out_channels"] = out_channels
    if kw["model_name"] not in timm.list_models():
        raise ArchError(f"encoder_name {arch.encoder_name!r}: timm has no model "
                        f"{kw['model_name']!r} (see timm.list_models())")
    if any(opts.get("context") == "aux" for _, opts in kw["sites"].values()):
        raise ArchError("cross attention with context='aux' is not supported with a timm "
                        "encoder; the auxiliary modality joins the input channels instead")
    try:
        return TimmUNet(**kw, make_attention=make, pretrained=pretrained)
    except ValueError as e:  # depth beyond the encoder's feature levels
        raise ArchError(str(e)) from None


def _check_weights_fit(arch: UNetArch) -> None:
    """`OutOfMemoryError` (one line) before anything is allocated when training the model
    needs more than all of the machine's memory by `footprint`'s lower bound (its
    weights with gradients and Adam's moments, at batch 1 on the smallest patch): the rule the
    CLI applies to a search's candidates (`Runtime.check_fits`). A depth-7 UNet of width 4096
    allocated about 24 GB before torch failed, or the process was killed."""
    import os

    from ..errors import OutOfMemoryError
    from .footprint import estimate, gb

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        return
    fp = estimate(arch, [2 ** arch.depth] * arch.spatial_dims)
    if fp.training_bytes > total:
        raise OutOfMemoryError(f"{arch.summary()} needs at least {gb(fp.training_bytes)} to "
                               f"train ({fp.params:,} parameters: {gb(4 * fp.params)} of "
                               f"weights, {gb(16 * fp.params)} with gradients and optimizer "
                               f"state), more than all of this machine's {gb(total)}; use "
                               "smaller widths or depth")
