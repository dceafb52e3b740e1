"""Multi-head self-attention over positions for encoder, bottleneck and decoder blocks.

Papers: Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018, arXiv:1711.07971
(the residual non-local block with a zero-initialised output); Vaswani et al., "Attention Is All
You Need", NeurIPS 2017, arXiv:1706.03762 (multi-head scaled dot-product attention, pre-norm
transformer block as used by ViT-style models).

out = x + gamma * W_o MHA(W_q h, W_k h, W_v h), h = GroupNorm(x) (+ optional positional term).

Deviations:
- The non-local block zero-initialises the BatchNorm after W_z; here a scalar gamma starts at 0
  (same effect: the identity at initialisation) and a GroupNorm pre-norm replaces the BN.
- Token budget (`max_tokens`, see tokens.py): beyond it x is pooled to a grid within budget,
  normalised, attended there (queries included), projected, scaled by gamma and interpolated
  back to full size. Below the budget this is exactly the pre-norm block; above it the GroupNorm
  statistics are those of the pooled map (no full-size normalised copy is kept). The paper's
  non-local block attends at full resolution (optionally sub-sampling keys/values only).
- Position: none by default (non-local blocks use none). `pos=True` adds a conditional positional
  encoding, a depthwise 3^d conv of the normalised token grid (Chu et al., "Conditional
  Positional Encodings for Vision Transformers", arXiv:2102.10882), rather than fixed sinusoids,
  so it is the same for any size and dimension.
- Inner width `reduced_width(C, reduction)` (default C); `heads` is used when it divides the
  inner width, else gcd(inner width, heads).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import conv_nd, norm_layer, reduced_width
from .tokens import (
    DEFAULT_MAX_TOKENS,
    attend_tokens,
    fit_heads,
    linear_resize,
    pool_tokens,
)


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention (non-local block), residual with gamma = 0."""

    family = "self"
    residual = True

    def __init__(self, channels: int, *, spatial_dims: int, heads: int = 4, reduction: int = 1,
                 pos: bool = False, max_tokens: int = DEFAULT_MAX_TOKENS):
        super().__init__()
        if reduction < 1:
            raise ValueError(f"self: reduction must be >= 1, got {reduction}")
        if max_tokens < 0:
            raise ValueError(f"self: max_tokens must be >= 0 (0 = no budget), got {max_tokens}")
        inner = reduced_width(channels, reduction)
        self.inner = inner
        self.heads = fit_heads(inner, heads)
        self.max_tokens = max_tokens
        conv = conv_nd(spatial_dims)
        self.norm = norm_layer("group", channels, spatial_dims)
        self.pos = conv(channels, channels, 3, padding=1, groups=channels) if pos else None
        self.qkv = conv(channels, 3 * inner, 1)
        self.out = conv(inner, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(pool_tokens(x, self.max_tokens))
        if self.pos is not None:
            h = h + self.pos(h)
        q, k, v = self.qkv(h).split(self.inner, dim=1)
        out = self.out(attend_tokens(q, k, v, self.heads, self.max_tokens))
        return x + linear_resize(self.gamma.to(out.dtype) * out, x.shape[2:])
