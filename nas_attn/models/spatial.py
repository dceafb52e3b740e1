"""Spatial attention (a per-position gate) and the combined channel + spatial gates.

Papers:
- `spatial`, `cbam`: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018,
  arXiv:1807.06521.
- `scse`: Roy, Navab, Wachinger, "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully
  Convolutional Networks", MICCAI 2018, arXiv:1803.02579.

Deviations:
- Dimension generic: channel-wise mean/max maps and a k^d convolution (k x k or k x k x k).
- CBAM's spatial branch has a BatchNorm after its conv in the reference code; omitted here (the
  conv has a bias), which keeps the gate independent of the batch size.
- `cbam` is composed of the `cbam_channel` and `spatial` modules (channel gate, then spatial
  gate), as timm's CbamModule is; its channel MLP runs on (B, C) vectors with `nn.Linear`.
  State dicts of the earlier self-contained layout (`mlp.*`, `conv.*`) still load.
- `scse` combines its two recalibrated maps by addition by default, as in Roy et al.'s paper
  (x*c + x*s); `combine="max"` gives the element-wise max used in their later work (Roy et al.,
  TMI 2019). Reduced widths go through `reduced_width` (floor 1).
Multiplicative gates, not residual: not the identity at initialisation.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .channel import CBAMChannel
from .layers import conv_nd, reduced_width, rename_on_load


class SpatialAttention(nn.Module):
    """CBAM spatial attention: channel mean & max maps, k^d conv, sigmoid position gate."""

    family = "spatial"

    def __init__(self, channels: int, *, spatial_dims: int, kernel_size: int = 7):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"spatial: kernel_size must be odd and >= 1, got {kernel_size}")
        self.conv = conv_nd(spatial_dims)(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True).values], dim=1)
        # channels-last: oneDNN runs this 2-channel k^d conv (and its backward) about 3x faster
        last = torch.channels_last if m.dim() == 4 else torch.channels_last_3d
        if not torch.jit.is_tracing():  # a layout only; ONNX has no memory formats
            m = m.contiguous(memory_format=last)
        return x * torch.sigmoid(self.conv(m)).contiguous()


class CBAM(nn.Module):
    """CBAM: channel gate (avg+max descriptors, shared MLP), then spatial gate (k^d conv)."""

    family = "spatial"

    def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 16,
                 kernel_size: int = 7):
        super().__init__()
        self.channel = CBAMChannel(channels, spatial_dims=spatial_dims, reduction=reduction)
        self.spatial = SpatialAttention(channels, spatial_dims=spatial_dims,
                                        kernel_size=kernel_size)
        rename_on_load(self, [("mlp", "channel.mlp"), ("conv", "spatial.conv")])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class SCSE(nn.Module):
    """scSE: channel SE gate and 1x1-conv spatial gate applied concurrently, combined (add/max)."""

    family = "spatial"
    option_choices = {"combine": ("add", "max")}  # noqa: RUF012 (read by the registry)

    def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 16,
                 combine: str = "add"):
        super().__init__()
        if reduction < 1:
            raise ValueError(f"scse: reduction must be >= 1, got {reduction}")
        if combine not in ("add", "max"):
            raise ValueError(f"scse: combine must be 'add' or 'max', got {combine!r}")
        self.combine = combine
        hidden = reduced_width(channels, reduction)
        self.cse = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels))
        self.sse = conv_nd(spatial_dims)(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        c = torch.sigmoid(self.cse(flat.sum(-1) / flat.shape[-1]))
        xc = x * c.reshape(*c.shape, *([1] * (x.dim() - 2)))
        xs = x * torch.sigmoid(self.sse(x))
        return xc + xs if self.combine == "add" else torch.maximum(xc, xs)
