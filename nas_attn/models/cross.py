"""Multi-head cross-attention on a skip connection.

Paper: Petit et al., "U-Net Transformer: Self and Cross Attention for Medical Image
Segmentation", MLMI 2021, arXiv:2103.06104 (multi-head cross-attention in the skip connections);
see also Wang et al., "UCTransNet: Rethinking the Skip Connections in U-Net from a Channel-wise
Perspective with Transformer", AAAI 2022, arXiv:2109.04335 (cross-attention between skip and
decoder features).

context="decoder" (default): queries from the decoder feature g (resized to x's size), keys and
values from the encoder skip x: out = x + gamma * W_o MHA(W_q g, W_k x, W_v x).
context="aux": g is an auxiliary modality's feature map (guide_channels = its width); queries
come from x, keys and values from g resized to x's size (cross-modal fusion: the skip feature
queries the other modality; an extension of the papers, which use a single modality).

Deviations:
- U-Net Transformer computes Q and K from the decoder feature and V from the skip and uses the
  result as a sigmoid gate on the skip (after a conv-BN-ReLU); here Q comes from the decoder and
  K, V from the skip (the transformer-decoder convention) and the output is a residual term with
  a learnable scale starting at 0, so the module starts as the identity.
- No positional encoding (the paper adds 2D sinusoidal encodings); dimension generic (2D / 3D).
- Token budget (`max_tokens`, see tokens.py): beyond it x is pooled to a token grid, g is brought
  straight to that grid (average-pooled where it is larger, linearly resized where smaller, rather
  than resized to x's size and then pooled), attention runs on the grid and the result is
  interpolated back to x's size. Projections run on the small maps (1x1 convs commute with
  average pooling and linear resizing), and the residual scale multiplies the coarse result.
- Inner width `reduced_width(C, reduction)`; `heads` is used when it divides the inner width,
  else gcd(inner width, heads).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import conv_nd, reduced_width
from .tokens import (
    DEFAULT_MAX_TOKENS,
    attend_tokens,
    fit_heads,
    linear_resize,
    pool_to,
    to_grid,
    token_grid,
)


class CrossAttention(nn.Module):
    """Multi-head cross-attention: decoder (or aux modality) feature attends to the skip."""

    family = "cross"
    kind = "paired"
    residual = True
    option_choices = {"context": ("decoder", "aux")}  # noqa: RUF012 (read by the registry)

    def __init__(self, channels: int, *, spatial_dims: int, guide_channels: int, heads: int = 4,
                 reduction: int = 1, context: str = "decoder",
                 max_tokens: int = DEFAULT_MAX_TOKENS):
        super().__init__()
        if context not in ("decoder", "aux"):
            raise ValueError(f"cross: context must be 'decoder' or 'aux', got {context!r}")
        if reduction < 1:
            raise ValueError(f"cross: reduction must be >= 1, got {reduction}")
        if max_tokens < 0:
            raise ValueError(f"cross: max_tokens must be >= 0 (0 = no budget), got {max_tokens}")
        inner = reduced_width(channels, reduction)
        self.heads = fit_heads(inner, heads)
        self.context = context
        self.max_tokens = max_tokens
        conv = conv_nd(spatial_dims)
        q_in, kv_in = (guide_channels, channels)
        if context == "aux":
            q_in, kv_in = kv_in, q_in
        self.query = conv(q_in, inner, 1)
        self.key = conv(kv_in, inner, 1)
        self.value = conv(kv_in, inner, 1)
        self.out = conv(inner, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        grid = token_grid(size, self.max_tokens)
        xp = pool_to(x, grid)
        if self.context == "decoder":
            q = to_grid(self.query, g, size, grid)
            k, v = self.key(xp), self.value(xp)
        else:
            q = self.query(xp)
            k, v = to_grid(self.key, g, size, grid), to_grid(self.value, g, size, grid)
        out = self.out(attend_tokens(q, k, v, self.heads, self.max_tokens))
        return x + linear_resize(self.gamma.to(out.dtype) * out, size)
