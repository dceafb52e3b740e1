"""`predict_logits`: one whole image through a model under the run's runtime (autocast), at the
training patch size by sliding window; training validation, `evaluate` and the preview use it."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..device import Runtime
from ..models.sliding import sliding_window_predict


def _patch_tuple(patch_size, spatial_dims: int) -> tuple[int, ...] | None:
    if patch_size is None:
        return None
    if isinstance(patch_size, int):
        return (patch_size,) * spatial_dims
    sizes = tuple(int(p) for p in patch_size)
    return sizes * spatial_dims if len(sizes) == 1 else sizes


def predict_logits(model: nn.Module, image: torch.Tensor, runtime: Runtime, *, patch_size=None,
                   overlap: float = 0.25, aux: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 logits (1, C, *sp) for one whole image (1, C_in, *sp) already on the device.
    With a patch size, always through `nas_attn.models.sliding`, which runs the
    model at the training patch shape only (a smaller image is padded as in training and
    cropped back, a larger one tiled), so cuDNN never tunes for a new shape."""
    patch = _patch_tuple(patch_size, image.dim() - 2)
    with torch.no_grad(), runtime.autocast():
        if patch is not None:
            logits = sliding_window_predict(model, image, patch, overlap=overlap, aux=aux)
        else:
            logits = model(image, aux)
    return logits.float()
