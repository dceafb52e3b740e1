"""Additive attention gate on a skip connection, gated by the decoder feature from below.

Paper: Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018,
arXiv:1804.03999.

alpha = sigmoid(psi(relu(W_x x + W_g g))), output x * alpha (one coefficient per position).

Deviations:
- Sizes: g is brought to the needed size by linear resizing / adaptive pooling to the exact target
  size, never by an assumed factor of 2, so odd and arbitrary sizes work.
- `resample="coarse"` (default, as in the paper) computes the gate at g's resolution: the paper's
  strided W_x is replaced by an adaptive average pool of x to g's exact size followed by a 1x1
  conv (a strided 2x2 conv cannot hit an odd target size); the coefficients are then
  interpolated (bi/trilinear) to x's size. `resample="fine"` brings g to x's size instead and
  computes the gate at full resolution. W_g is applied before resizing (a 1x1 conv commutes with
  linear interpolation), which is cheaper and numerically the same.
- No BatchNorm after W_x / W_g / psi and no output transform W (1x1 conv + BN) of the reference
  code: the module is the gate alone, independent of the batch size.
- Intermediate width `inter_channels` (0 = `reduced_width(C, 2)`, the paper's F_int = F_l / 2).
Multiplicative gate, not residual (at initialisation it scales x by about 0.5).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import conv_nd, reduced_width
from .tokens import linear_resize, pool_to


class AttentionGate(nn.Module):
    """Attention U-Net additive gate: sigmoid(psi(relu(W_x x + W_g g))) scales the skip x."""

    family = "gate"
    kind = "paired"
    option_choices = {"resample": ("coarse", "fine")}  # noqa: RUF012 (read by the registry)

    def __init__(self, channels: int, *, spatial_dims: int, guide_channels: int,
                 inter_channels: int = 0, resample: str = "coarse"):
        super().__init__()
        if resample not in ("coarse", "fine"):
            raise ValueError(f"gate: resample must be 'coarse' or 'fine', got {resample!r}")
        if inter_channels < 0:
            raise ValueError(f"gate: inter_channels must be >= 0 (0 = derive), "
                             f"got {inter_channels}")
        inter = inter_channels or reduced_width(channels, 2)
        conv = conv_nd(spatial_dims)
        self.resample = resample
        self.w_x = conv(channels, inter, 1, bias=False)
        self.w_g = conv(guide_channels, inter, 1)
        self.act = nn.ReLU(inplace=True)
        self.psi = conv(inter, 1, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        if self.resample == "coarse":
            a = self.w_x(pool_to(x, g.shape[2:])) + self.w_g(g)
        else:
            a = self.w_x(x) + linear_resize(self.w_g(g), size)
        alpha = torch.sigmoid(self.psi(self.act(a)))
        return x * linear_resize(alpha, size)
