"""Shared token attention: every attention over positions or channels goes through here.

Functions only, at module level, importing only torch and `..layers`: `nas_attn.export` copies
this file whole into standalone `model.py` files, next to `layers.py`.

Cost bound. A feature map of N positions attended at full resolution costs O(N^2) time (and,
without a fused kernel, O(N^2) memory): 128^2 positions are 16384 tokens, 2.7e8 scores per head
and image. Beyond a token budget (`max_tokens`) the maps are average-pooled to a grid of at most
`max_tokens` positions (aspect ratio kept as far as integer sizes allow), attention runs there and
the result is brought back to full size by (bi/tri)linear interpolation. Queries are pooled too,
so the cost of one attention call is bounded by max_tokens^2 * width at every level.

Default budget: `DEFAULT_MAX_TOKENS` = 256 positions (a 16x16 grid in 2D, 6x6x7 in 3D). With it,
token attention at every site of a depth-4 UNet (widths 16..256, 128^2 input) stays within 2x the
plain UNet's training step time and 1.5x its peak memory on a CPU (benchmarks/attention_cost.py):
the pooled attention costs 256^2 * width multiply-adds per head, below one 3x3 conv of the same
level for widths <= 256 at 128^2. Deep levels (16^2 and below in a 128^2 UNet) are under the budget
and attend at full resolution. Raise it per site (option `max_tokens`) for finer global context;
0 means no budget (full resolution everywhere, quadratic cost).

Pooling commutes exactly with 1x1 convolutions (an average pool and a per-position affine map
commute, since the pooling weights sum to one), and so does linear resizing; modules therefore pool
*before* their q/k/v projections and project *before* resizing back, which gives the same numbers
as projecting at full resolution for a fraction of the cost.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..layers import resize_to

DEFAULT_MAX_TOKENS = 256


def token_grid(size, max_tokens: int) -> tuple[int, ...]:
    """Spatial size to attend on: `size` itself when within budget (or budget 0), else a grid
    with product <= max_tokens and roughly the same aspect ratio (every side >= 1)."""
    size = tuple(int(s) for s in size)
    n = math.prod(size)
    if max_tokens <= 0 or n <= max_tokens:
        return size
    scale = (max_tokens / n) ** (1.0 / len(size))
    grid = [max(1, min(s, int(math.floor(s * scale + 1e-9)))) for s in size]
    while math.prod(grid) > max_tokens:  # only when a side was clamped at 1
        i = max(range(len(grid)), key=lambda j: grid[j])
        grid[i] -= 1
    # use left-over budget: grow the side that stays furthest below its share, if it fits
    grown = True
    while grown:
        grown = False
        order = sorted(range(len(grid)), key=lambda j: grid[j] / size[j])
        for i in order:
            if grid[i] < size[i] and math.prod(grid) // grid[i] * (grid[i] + 1) <= max_tokens:
                grid[i] += 1
                grown = True
                break
    return tuple(grid)


def pool_to(x: torch.Tensor, size) -> torch.Tensor:
    """Adaptive average pool of the spatial dims of x to `size` (no-op when already there)."""
    size = tuple(int(s) for s in size)
    in_size = tuple(x.shape[2:])
    if in_size == size:
        return x
    if all(s >= 1 and i % s == 0 for i, s in zip(in_size, size)):  # same numbers, ~2x faster
        kernel = tuple(i // s for i, s in zip(in_size, size))
        return (F.avg_pool2d if x.dim() == 4 else F.avg_pool3d)(x, kernel, kernel)
    if x.dim() == 4:
        return F.adaptive_avg_pool2d(x, size)
    return F.adaptive_avg_pool3d(x, size)


def pool_tokens(x: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """x pooled to its token grid (itself when within budget)."""
    return pool_to(x, token_grid(x.shape[2:], max_tokens))


def resample_project(conv, x: torch.Tensor, size) -> torch.Tensor:
    """`conv(resize_to(x, size, "linear"))` for a 1x1 conv, in the cheaper order (they commute)."""
    size = tuple(int(s) for s in size)
    if math.prod(size) < math.prod(x.shape[2:]):
        return conv(resize_to(x, size, mode="linear"))
    return resize_to(conv(x), size, mode="linear")


def to_grid(conv, g: torch.Tensor, size, grid) -> torch.Tensor:
    """A 1x1 `conv` of the guide map g, brought to x's spatial `size` on x's token `grid`.

    Within budget (grid == size) this is exactly `conv(resize_to(g, size, "linear"))`. Beyond it
    g goes straight to the grid: average-pooled when it is at least as large as the grid in every
    dim, else linearly resized; no full-size copy of g is made.
    """
    size, grid = tuple(int(s) for s in size), tuple(int(s) for s in grid)
    if grid != size and all(a >= b for a, b in zip(g.shape[2:], grid)):
        return conv(pool_to(g, grid))
    return resample_project(conv, g, grid)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, *spatial) -> (B, heads, N, C // heads), contiguous (the fused CPU kernel needs a
    unit stride in the last dim; the maps here are within the token budget, so the copy is small)."""
    b, c = t.shape[:2]
    return t.reshape(b, heads, c // heads, -1).transpose(-1, -2).contiguous()


def merge_heads(t: torch.Tensor, size) -> torch.Tensor:
    """(B, heads, N, d) -> (B, heads * d, *size)."""
    b, h, _, d = t.shape
    return t.transpose(-1, -2).reshape(b, h * d, *size)


def fit_heads(width: int, heads: int) -> int:
    """Number of heads actually used: `heads` when it divides width, else gcd(width, heads)."""
    if heads < 1:
        raise ValueError(f"heads must be >= 1, got {heads}")
    return heads if width % heads == 0 else math.gcd(width, heads)


def attend_tokens(q_map: torch.Tensor, k_map: torch.Tensor, v_map: torch.Tensor, heads: int = 1,
                  max_tokens: int = DEFAULT_MAX_TOKENS) -> torch.Tensor:
    """Multi-head softmax(Q K^T / sqrt(d)) V over positions, via scaled_dot_product_attention.

    q_map (B, Cq, *Sq), k_map (B, Cq, *Sk), v_map (B, Cv, *Sk); heads must divide Cq and Cv.
    Maps beyond `max_tokens` positions are pooled to a grid within budget first; the result
    (B, Cv, *Sq) is brought back to q_map's size by linear interpolation.
    """
    out_size = tuple(q_map.shape[2:])
    q_map = pool_tokens(q_map, max_tokens)
    kv_grid = token_grid(k_map.shape[2:], max_tokens)
    k_map = pool_to(k_map, kv_grid)
    v_map = pool_to(v_map, kv_grid)
    out = F.scaled_dot_product_attention(
        split_heads(q_map, heads), split_heads(k_map, heads), split_heads(v_map, heads))
    return resize_to(merge_heads(out, q_map.shape[2:]), out_size, mode="linear")


def channel_weights(x: torch.Tensor, max_tokens: int = DEFAULT_MAX_TOKENS) -> torch.Tensor:
    """Channel self-attention weights (DANet CAM): softmax(X X^T / sqrt(N)), shape (B, C, C).

    Channels are the tokens and positions their features; the positions are pooled to at most
    `max_tokens` first. Computed by scaled_dot_product_attention with identity values, so the
    caller applies the (small) C x C matrix to the full-resolution x with one batched matmul
    (`torch.baddbmm`), which keeps no extra full-size tensor for backward. Cost O(C^2 N).
    """
    b, c = x.shape[:2]
    key = pool_tokens(x, max_tokens).reshape(b, 1, c, -1)
    eye = torch.eye(c, dtype=x.dtype, device=x.device).expand(b, 1, c, c)
    return F.scaled_dot_product_attention(key, key, eye).reshape(b, c, c)
