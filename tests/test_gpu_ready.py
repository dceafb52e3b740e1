"""The CUDA path's mechanisms, proven on the CPU: dtype and memory format kept by every attention
module under bf16 autocast, device selection and precision policy, the cost probe under the
training's settings and its out-of-memory handling, loader workers, window padding."""
from __future__ import annotations

import contextlib

import pytest
import torch

from nas_attn import device as device_mod
from nas_attn.attention import create_attention, get_info, names, tokens
from nas_attn.device import Runtime

SMALL = {2: (12, 12), 3: (4, 5, 6)}   # within the token budget: attention at full resolution
LARGE = {2: (24, 32), 3: (8, 10, 12)}  # beyond it: pooled grid, interpolated back
FORMATS = {2: torch.channels_last, 3: torch.channels_last_3d}


def _site(name: str, dims: int, channels: int = 16):
    info = get_info(name)
    guide = 2 * channels if info.kind == "paired" else None
    m = create_attention(name, channels, spatial_dims=dims, guide_channels=guide)
    with torch.no_grad():  # live residual terms (gamma = 0 would hide a dtype leak)
        for n, p in m.named_parameters():
            if n.rsplit(".", 1)[-1].startswith("gamma"):
                p.fill_(0.5)
    return m, guide


@pytest.mark.parametrize("sizes", (SMALL, LARGE), ids=("within_budget", "pooled"))
@pytest.mark.parametrize("dims", (2, 3))
@pytest.mark.parametrize("name", names())
def test_attention_keeps_dtype_and_memory_format_under_autocast(name, dims, sizes):
    if dims not in get_info(name).dims:
        pytest.skip(f"{name} is {get_info(name).dims}D only")
    torch.manual_seed(0)
    fmt = FORMATS[dims]
    m, guide = _site(name, dims)
    m = m.to(memory_format=fmt)
    x = torch.randn(2, 16, *sizes[dims]).to(memory_format=fmt).bfloat16().requires_grad_()
    g = None
    if guide is not None:
        g = torch.randn(2, guide, *(max(1, s // 2) for s in sizes[dims]))
        g = g.to(memory_format=fmt).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x) if g is None else m(x, g)
    assert y.dtype == torch.bfloat16, f"{name} returned {y.dtype} for bfloat16 input"
    assert y.is_contiguous(memory_format=fmt), f"{name} dropped {fmt}"
    (y.float() * torch.randn(y.shape)).sum().backward()
    assert x.grad.dtype == torch.bfloat16 and x.grad.is_contiguous(memory_format=fmt)
    # float32 input under autocast (the first layer's case): float32 back
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x32 = torch.randn(2, 16, *sizes[dims]).to(memory_format=fmt)
        y32 = m(x32) if g is None else m(x32, g)
    assert y32.dtype == torch.float32


@pytest.mark.parametrize("dims", (2, 3))
@pytest.mark.parametrize("name", ["channel_self", "dual"])
def test_channel_attention_same_numbers_in_both_formats(name, dims):
    torch.manual_seed(0)
    m, _ = _site(name, dims)
    x = torch.randn(2, 16, *LARGE[dims])
    ref = m(x)
    out = m(x.to(memory_format=FORMATS[dims]))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_sk_matches_timm_forward():
    torch.manual_seed(0)
    for c in (8, 7):  # split and unsplit input
        m = create_attention("sk", c, spatial_dims=2).eval()
        x = torch.randn(2, c, 9, 11)
        torch.testing.assert_close(m(x), m.module(x))


def test_interpolation_matrices_are_cached(monkeypatch):
    calls = []
    real = tokens._build_interp
    monkeypatch.setattr(tokens, "_build_interp", lambda *a: calls.append(a[:2]) or real(*a))
    monkeypatch.setattr(tokens, "_CONSTANTS", {})
    t = torch.randn(1, 2, 5, 7)
    a = tokens.linear_resize(t, (9, 13))
    b = tokens.linear_resize(t, (9, 13))
    assert len(calls) == 2 and torch.equal(a, b)  # one build per axis, then reused
    monkeypatch.setattr(tokens, "CACHE_CONSTANTS", False)
    c = tokens.linear_resize(t, (9, 13))
    assert len(calls) == 4 and torch.equal(a, c)
    with torch.inference_mode():  # inference tensors must not enter the cache
        monkeypatch.setattr(tokens, "CACHE_CONSTANTS", True)
        tokens.linear_resize(torch.randn(1, 2, 3, 4), (6, 8))
    assert all(k[0][1:] != (6, 3) for k in tokens._CONSTANTS)
