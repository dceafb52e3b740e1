"""Channel attention: a per-channel gate computed from global descriptors.

Papers:
- `se`: Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507.
- `eca`: Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
  Networks", CVPR 2020, arXiv:1910.03151.
- `cbam_channel`: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018,
  arXiv:1807.06521 (its channel attention sub-module).

Deviations:
- Dimension generic: the global pools average (and max) over all spatial dims, so the same module
  serves 2D and 3D; the descriptor MLPs are `nn.Linear` layers on (B, C) vectors (equivalent to
  the papers' FC / 1x1 convs).
- Reduced widths use `reduced_width(C, reduction)` (floor 1) instead of C // r, so narrow layers
  (C < r) keep a one-unit bottleneck rather than a zero-width one.
- ECA: the kernel size follows the paper's formula k = |log2(C)/gamma + b/gamma|_odd with
  gamma=2, b=1 (which gives k=1 for C < 8) unless `kernel_size` is set.
Multiplicative gates (x * sigmoid(...)), not residual: not the identity at initialisation.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .layers import reduced_width


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global average pool, MLP C -> C/r -> C, sigmoid channel gate."""

    family = "channel"

    def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 16):
        super().__init__()
        if reduction < 1:
            raise ValueError(f"se: reduction must be >= 1, got {reduction}")
        hidden = reduced_width(channels, reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        s = flat.sum(-1) / flat.shape[-1]  # = mean; its backward skips a full-size division
        s = torch.sigmoid(self.fc2(self.act(self.fc1(s))))
        return x * s.reshape(*s.shape, *([1] * (x.dim() - 2)))


class EfficientChannelAttention(nn.Module):
    """ECA: global average pool, 1D conv of size k across channels (no reduction), sigmoid gate."""

    family = "channel"

    def __init__(self, channels: int, *, spatial_dims: int, kernel_size: int = 0):
        super().__init__()
        if kernel_size == 0:
            t = int(abs((math.log2(channels) + 1) / 2))  # gamma = 2, b = 1
            kernel_size = t if t % 2 else t + 1
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"eca: kernel_size must be odd and >= 1 (or 0 = derive), "
                             f"got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        s = (flat.sum(-1) / flat.shape[-1]).unsqueeze(1)  # global average (B, 1, C)
        s = torch.sigmoid(self.conv(s)).squeeze(1)
        return x * s.reshape(*s.shape, *([1] * (x.dim() - 2)))


class CBAMChannel(nn.Module):
    """CBAM channel attention: avg- and max-pooled descriptors, shared MLP, sum, sigmoid gate."""

    family = "channel"

    def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 16):
        super().__init__()
        if reduction < 1:
            raise ValueError(f"cbam_channel: reduction must be >= 1, got {reduction}")
        hidden = reduced_width(channels, reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        s = torch.sigmoid(self.mlp(flat.sum(-1) / flat.shape[-1]) + self.mlp(flat.max(-1).values))
        return x * s.reshape(*s.shape, *([1] * (x.dim() - 2)))
