"""Shared token attention: every attention over positions or channels goes through here.

Functions only, at module level, importing only torch (and math): `nas_attn.exporting` copies what
the exported attention classes use from here into standalone `model.py` files.

Cost bound. A feature map of N positions attended at full resolution costs O(N^2) time (and,
without a fused kernel, O(N^2) memory): 128^2 positions are 16384 tokens, 2.7e8 scores per head
and image. Beyond a token budget (`max_tokens`) the maps are average-pooled to a grid of at most
`max_tokens` positions (aspect ratio kept as far as integer sizes allow), attention runs there and
the result is brought back to full size by (bi/tri)linear interpolation (`linear_resize`: the
numbers of `resize_to(..., mode="linear")`, computed by one small matrix product per axis, whose
backward is several times faster on CPU than the interpolation kernel's). Queries are pooled too,
so one attention call costs at most max_tokens^2 * width multiply-adds per image at every level.

Default budget: `DEFAULT_MAX_TOKENS` = 256 positions (a 16x16 grid in 2D, 7x6x6 for a cube in
3D). Measured with benchmarks/attention_cost.py (depth-4 UNet, widths 16..256, 4 x 128^2, one CPU
thread; `self` / `dual` at all 13 sites, time and peak-memory ratios to the plain UNet):
budget 256: self 1.55x / 1.45x, dual 1.64x / 1.48x; budget 512: 2.14x / 1.56x and 1.95x / 1.58x;
budget 1024: 3.34x / 1.75x and 2.42x / 1.73x. 256 is the largest of these that keeps the design
targets (<= 2x time, <= 1.5x memory). In a 128^2 UNet only levels 0-2 are pooled; 16^2 and below
attend at full resolution. Raise it per site (option `max_tokens`) for finer global context; 0
means no budget (full resolution everywhere, quadratic cost).

Pooling commutes exactly with 1x1 convolutions (an average pool and a per-position affine map
commute, since the pooling weights sum to one), and so does linear resizing; modules therefore pool
*before* their q/k/v projections and project *before* resizing back, which gives the same numbers
as projecting at full resolution for a fraction of the cost.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_MAX_TOKENS = 256

CACHE_CONSTANTS = True
"""Keep the interpolation matrices (and CAM's identity values) per size, dtype and device
instead of rebuilding them on every call: each build is about a dozen small kernels, which made
up a fifth of an attention-heavy training step's launches. False = rebuild (the old path, for
benchmarks/gpu_step.py)."""
_CONSTANTS = {}
_CONSTANTS_MAX = 512


def _constant(key, build, like: torch.Tensor) -> torch.Tensor:
    """`build()` memoised under (key, dtype, device). Not cached while torch.compile traces (it
    folds constants itself) or under inference mode (such tensors cannot be used by autograd)."""
    if not CACHE_CONSTANTS or torch.compiler.is_compiling() or torch.is_inference_mode_enabled() \
            or torch.jit.is_tracing():
        return build()
    full = (key, like.dtype, like.device)
    hit = _CONSTANTS.get(full)
    if hit is None:
        if len(_CONSTANTS) >= _CONSTANTS_MAX:
            _CONSTANTS.clear()
        with torch.no_grad():
            hit = _CONSTANTS[full] = build()
    return hit


# While tracing (TorchScript, ONNX export) sizes are traced 0-dim tensors: the helpers below then
# compute grids, pooling and interpolation matrices with tensor operations on them (the
# `_traced_*` functions), so the recorded graph follows the input's size instead of fixing the
# size it was traced at. Eagerly they give the same grids (tests/test_onnx_all.py compares them)
# and the same numbers up to float rounding.
_SCRIPTED = {}


def _grid_loop(size: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """`token_grid` on a tensor of sizes, written for torch.jit.script: its loops become loops
    of the traced graph (ONNX `Loop`), so the grid follows the input size exactly."""
    s = size.to(torch.float64)
    n = s.prod()
    if max_tokens <= 0 or bool(n <= max_tokens):
        return size
    scale = (max_tokens / n) ** (1.0 / s.numel())
    grid = torch.clamp(torch.minimum(s, torch.floor(s * scale + 1e-9)), min=1.0)
    while bool(grid.prod() > max_tokens):  # only when a side was clamped at 1
        i = int(torch.argmax(grid))
        grid[i] = grid[i] - 1
    grown = True
    while grown:  # grow the side furthest below its share (the first on ties) while it fits
        fits = (grid < s) & (grid.prod() / grid * (grid + 1) <= max_tokens)
        grown = bool(fits.any())
        if grown:
            i = int(torch.argmin(torch.where(fits, grid / s, torch.full_like(s, float("inf")))))
            grid[i] = grid[i] + 1
    return grid.to(size.dtype)


def _traced_sizes(size) -> list[torch.Tensor]:
    return [torch.as_tensor(s) for s in size]


def _traced_token_grid(size, max_tokens: int) -> list[torch.Tensor]:
    """`token_grid` for traced sizes: `_grid_loop`, scripted once."""
    if "grid" not in _SCRIPTED:
        _SCRIPTED["grid"] = torch.jit.script(_grid_loop)
    return list(_SCRIPTED["grid"](torch.stack(_traced_sizes(size)), int(max_tokens)).unbind(0))


def token_grid(size, max_tokens: int) -> tuple[int, ...]:
    """Spatial size to attend on: `size` itself when within budget (or budget 0), else a grid
    with product <= max_tokens and roughly the same aspect ratio (every side >= 1)."""
    if torch.jit.is_tracing():
        return tuple(_traced_token_grid(size, max_tokens))
    size = tuple(int(s) for s in size)
    n = math.prod(size)
    if max_tokens <= 0 or n <= max_tokens:
        return size
    scale = (max_tokens / n) ** (1.0 / len(size))
    grid = [max(1, min(s, math.floor(s * scale + 1e-9))) for s in size]
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


def interp_matrix(n_out: int, n_in: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) matrix of 1D linear interpolation, as F.interpolate(align_corners=False),
    in like's dtype and device (positions computed in float32 at least, as torch does);
    memoised (`CACHE_CONSTANTS`)."""
    return _constant(("interp", n_out, n_in), lambda: _build_interp(n_out, n_in, like), like)


def _build_interp(n_out: int, n_in: int, like: torch.Tensor) -> torch.Tensor:
    calc = torch.float64 if like.dtype == torch.float64 else torch.float32
    dst = torch.arange(n_out, dtype=calc, device=like.device)
    src = ((dst + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = src - i0.to(calc)
    rows = torch.arange(n_out, device=like.device)
    m = torch.zeros(n_out, n_in, dtype=calc, device=like.device)
    m.index_put_((rows, i0), 1 - w1, accumulate=True)
    m.index_put_((rows, i1), w1, accumulate=True)
    return m.to(like.dtype)


def _traced_interp(n_out: torch.Tensor, n_in: torch.Tensor) -> torch.Tensor:
    """`_build_interp` (float32) from traced sizes, without index_put."""
    dst = torch.arange(n_out, dtype=torch.float32)
    src = ((dst + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = torch.minimum(src.floor(), n_in - 1.0)
    i1 = torch.minimum(i0 + 1, n_in - 1.0)
    w1 = (src - i0)[:, None]
    cols = torch.arange(n_in, dtype=torch.float32)[None]
    return (cols == i0[:, None]) * (1 - w1) + (cols == i1[:, None]) * w1


def _traced_pool(n_out: torch.Tensor, n_in: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) matrix of 1D adaptive average pooling (torch's start/end rule)."""
    i = torch.arange(n_out)[:, None]
    start = torch.div(i * n_in, n_out, rounding_mode="floor")
    end = torch.div((i + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
    j = torch.arange(n_in)[None]
    return ((j >= start) & (j < end)).to(torch.float32) / (end - start).to(torch.float32)


def _traced_axes(t: torch.Tensor, size, matrix) -> torch.Tensor:
    """Apply `matrix(n_out, n_in)` along every spatial axis of t (traced sizes)."""
    for axis, n_out in enumerate(_traced_sizes(size)):
        n_in = torch.as_tensor(t.shape[2 + axis])
        m = matrix(n_out, n_in).to(device=t.device, dtype=t.dtype)
        last = t.dim() - 1  # transpose, not movedim: a negative axis breaks ONNX's Transpose
        t = (t.transpose(2 + axis, last) @ m.t()).transpose(2 + axis, last)
    return t


def linear_resize(t: torch.Tensor, size) -> torch.Tensor:
    """Same numbers as `resize_to(t, size, mode="linear")`, computed as one small matrix product
    per spatial axis: on CPU its backward is several times faster than the interpolation
    kernel's (which dominated the cost of bringing pooled attention back to full size)."""
    if torch.jit.is_tracing():
        return _traced_axes(t, size, _traced_interp)
    size = tuple(int(s) for s in size)
    if tuple(t.shape[2:]) == size:
        return t
    last = t.dim() - 3
    for axis in reversed(range(len(size))):
        n_in, n_out = t.shape[2 + axis], size[axis]
        if n_in == n_out:
            continue
        m = interp_matrix(n_out, n_in, t)
        if axis == last:
            t = t @ m.t()
        else:
            head, after = t.shape[:2 + axis], t.shape[3 + axis:]
            t = (m @ t.reshape(*head, n_in, math.prod(after))).reshape(*head, n_out, *after)
    return t


def pool_to(x: torch.Tensor, size) -> torch.Tensor:
    """Adaptive average pool of the spatial dims of x to `size` (no-op when already there)."""
    if torch.jit.is_tracing():
        return _traced_axes(x, size, _traced_pool)
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
    if torch.jit.is_tracing():
        return linear_resize(conv(x), size)
    size = tuple(int(s) for s in size)
    if math.prod(size) < math.prod(x.shape[2:]):
        return conv(linear_resize(x, size))
    return linear_resize(conv(x), size)


def to_grid(conv, g: torch.Tensor, size, grid) -> torch.Tensor:
    """A 1x1 `conv` of the guide map g, brought to x's spatial `size` on x's token `grid`.

    Within budget (grid == size) this is exactly `conv(resize_to(g, size, "linear"))`. Beyond it
    g goes straight to the grid: average-pooled when it is at least as large as the grid in every
    dim, else linearly resized; no full-size copy of g is made.
    """
    if torch.jit.is_tracing():  # both ways, chosen in the graph
        gs, sz, gr = (torch.stack(_traced_sizes(v)) for v in (g.shape[2:], size, grid))
        pooled = (gr != sz).any() & (gs >= gr).all()
        return torch.where(pooled, conv(pool_to(g, grid)), resample_project(conv, g, grid))
    size, grid = tuple(int(s) for s in size), tuple(int(s) for s in grid)
    if grid != size and all(a >= b for a, b in zip(g.shape[2:], grid)):
        return conv(pool_to(g, grid))
    return resample_project(conv, g, grid)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, *spatial) -> (B, heads, N, C // heads), contiguous: the fused CPU kernel needs a
    unit stride in the last dim (the maps here are within the token budget: a small copy)."""
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
    When the q/k head width is below v's, q and k may be zero-padded to it (scale kept at
    1/sqrt(q/k head width)): the scores are unchanged and the fused (flash) CPU kernel, which
    needs equal widths, is used instead of the math path that stores the Nq x Nk weights.
    Maps beyond `max_tokens` positions are pooled to a grid within budget first; the result
    (B, Cv, *Sq) is brought back to q_map's size by linear interpolation.
    """
    out_size = tuple(q_map.shape[2:])
    q_map = pool_tokens(q_map, max_tokens)
    kv_grid = token_grid(k_map.shape[2:], max_tokens)
    k_map = pool_to(k_map, kv_grid)
    v_map = pool_to(v_map, kv_grid)
    q, k, v = split_heads(q_map, heads), split_heads(k_map, heads), split_heads(v_map, heads)
    dq, dv, nq, nk = q.shape[-1], v.shape[-1], q.shape[-2], k.shape[-2]
    if dq < dv and not torch.jit.is_tracing() and (nq + nk) * dv < nq * nk:
        # zero-pad q and k to v's width: same scores, and the fused kernel applies (it needs equal
        # widths); worth it when padded q, k are smaller than the Nq x Nk weights it then avoids
        q, k = F.pad(q, (0, dv - dq)), F.pad(k, (0, dv - dq))
    out = F.scaled_dot_product_attention(q, k, v, scale=dq ** -0.5)
    return linear_resize(merge_heads(out, q_map.shape[2:]), out_size)


def channel_weights(x: torch.Tensor, max_tokens: int = DEFAULT_MAX_TOKENS) -> torch.Tensor:
    """Channel self-attention weights (DANet CAM): softmax(X X^T / sqrt(N)), shape (B, C, C).

    Channels are the tokens and positions their features; the positions are pooled to at most
    `max_tokens` first. Computed by scaled_dot_product_attention with identity values, so the
    caller applies the (small) C x C matrix to the full-resolution x with one batched matmul
    (`torch.baddbmm`), which keeps no extra full-size tensor for backward. Cost O(C^2 N).
    """
    b, c = x.shape[:2]
    key = pool_tokens(x, max_tokens).reshape(b, 1, c, -1)
    eye = _constant(("eye", c), lambda: torch.eye(c, dtype=x.dtype, device=x.device), x)
    return F.scaled_dot_product_attention(key, key, eye.expand(b, 1, c, c)).reshape(b, c, c)


def apply_channel_weights(base: torch.Tensor, weights: torch.Tensor,
                          x: torch.Tensor) -> torch.Tensor:
    """base + weights @ x over channels (weights (B, C, C), base and x (B, C, *spatial)), with
    one batched matmul-add, in x's memory format and dtype: a channels-last x is multiplied as
    its (B, N, C) view (x^T W^T), so no copy is made forward or backward."""
    b, c = x.shape[:2]
    if not x.is_contiguous() and x.movedim(1, -1).is_contiguous():
        xt = x.movedim(1, -1).reshape(b, -1, c)
        out = torch.baddbmm(base.movedim(1, -1).reshape(b, -1, c), xt, weights.transpose(1, 2))
        return out.reshape(b, *x.shape[2:], c).movedim(-1, 1).to(x.dtype)
    out = torch.baddbmm(base.flatten(2), weights, x.flatten(2))
    return out.reshape(x.shape).to(x.dtype)
