"""DANet dual attention: position attention, channel self-attention, and their sum.

Paper: Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv:1809.02983.

- `position` (PAM): q, k = 1x1 convs to reduced_width(C, reduction) channels, v = 1x1 conv to C,
  out = x + gamma * softmax(q^T k) v over positions.
- `channel_self` (CAM): out = x + gamma * softmax(X X^T) X, a C x C affinity over positions.
- `dual`: x + gamma_p * PAM term + gamma_c * CAM term, each gamma its own learnable scale:
  the `position` module, then the `channel_self` module's term added to its output (composed,
  not copied; state dicts of the earlier flat layout, `query.*` ... `gamma_channel`, still load).
All residual with gamma = 0 at initialisation (as in the paper), so each starts as the identity.

Deviations:
- Token budget (`max_tokens`, see tokens.py): PAM attends on a pooled grid beyond the budget and
  interpolates the result back; CAM computes its C x C affinity on positions pooled to the budget
  and applies it to the full-resolution x (no interpolation needed); the affinity comes from
  scaled_dot_product_attention (identity values) and is applied with one batched matmul-add.
  Each residual scale multiplies the coarse term before it is interpolated back (the same
  numbers; it keeps no full-size tensor for backward). The paper attends at full
  resolution (1/8 of the input), which is quadratic in the number of positions.
- Scores are scaled by 1/sqrt(d) (d = q/k width for PAM, number of pooled positions for CAM) as in
  scaled dot-product attention; the paper uses unscaled dot products. CAM follows the paper's
  softmax(X X^T); the official code's softmax(max(E) - E) equals softmax(-E) (a row-constant
  shift) and is not used.
- `dual` sums the two residual terms directly; DANet wraps each branch in 3x3 conv-BN-ReLU layers
  before and after the attention and fuses with a further conv, which belong to the head, not to
  an attention module placed inside a UNet.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import conv_nd, reduced_width, rename_on_load
from .tokens import (
    DEFAULT_MAX_TOKENS,
    apply_channel_weights,
    attend_tokens,
    channel_weights,
    linear_resize,
    pool_tokens,
)


class PositionAttention(nn.Module):
    """DANet position attention module: self-attention over positions, residual gamma = 0."""

    family = "dual"
    residual = True

    def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 8,
                 max_tokens: int = DEFAULT_MAX_TOKENS):
        super().__init__()
        if reduction < 1:
            raise ValueError(f"position: reduction must be >= 1, got {reduction}")
        if max_tokens < 0:
            raise ValueError(f"position: max_tokens must be >= 0 (0 = no budget), got {max_tokens}")
        inner = reduced_width(channels, reduction)
        conv = conv_nd(spatial_dims)
        self.max_tokens = max_tokens
        self.query = conv(channels, inner, 1)
        self.key = conv(channels, inner, 1)
        self.value = conv(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = pool_tokens(x, self.max_tokens)
        out = attend_tokens(self.query(p), self.key(p), self.value(p), 1, self.max_tokens)
        return x + linear_resize(self.gamma.to(out.dtype) * out, x.shape[2:])


class ChannelSelfAttention(nn.Module):
    """DANet channel attention module: C x C affinity over positions, residual gamma = 0."""

    family = "dual"
    residual = True

    def __init__(self, channels: int, *, spatial_dims: int, max_tokens: int = DEFAULT_MAX_TOKENS):
        super().__init__()
        if max_tokens < 0:
            raise ValueError(f"channel_self: max_tokens must be >= 0 (0 = no budget), "
                             f"got {max_tokens}")
        self.max_tokens = max_tokens
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """x + gamma * CAM(x); with `base`, the term is added to `base` instead of x."""
        weights = channel_weights(x, self.max_tokens)
        return apply_channel_weights(x if base is None else base,
                                     self.gamma.to(weights.dtype) * weights, x)


class DualAttention(nn.Module):
    """DANet dual attention: position and channel attention terms summed, each with its gamma."""

    family = "dual"
    residual = True

    def __init__(self, channels: int, *, spatial_dims: int, reduction: int = 8,
                 max_tokens: int = DEFAULT_MAX_TOKENS):
        super().__init__()
        self.position = PositionAttention(channels, spatial_dims=spatial_dims,
                                          reduction=reduction, max_tokens=max_tokens)
        self.channel = ChannelSelfAttention(channels, spatial_dims=spatial_dims,
                                            max_tokens=max_tokens)
        rename_on_load(self, [(n, f"position.{n}") for n in ("query", "key", "value")]
                       + [("gamma_position", "position.gamma"), ("gamma_channel", "channel.gamma")])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel(x, base=self.position(x))
