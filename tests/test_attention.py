"""Attention modules: shapes, gradients, identity at init, naive references, registry errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas_attn.models import tokens
from nas_attn.architecture.registry import (all_info, create_attention, get_info, names, register,
                                             validate_options)
from nas_attn.errors import AttentionOptionError, UnknownAttentionError
from nas_attn.models.layers import IgnoreGuide, PassThrough, resize_to

SIZES = {2: (9, 11), 3: (5, 6, 7)}
GUIDE_SIZES = {2: (5, 7), 3: (3, 3, 5)}  # coarser, odd, not exactly half
WIDTHS = (1, 3, 8, 32)
EXPECTED = {"se", "eca", "cbam_channel", "spatial", "cbam", "scse", "gate", "position",
            "channel_self", "dual", "cross", "self"}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _inputs(dims: int, channels: int, guide: int | None = None, batch: int = 2):
    x = torch.randn(batch, channels, *SIZES[dims], requires_grad=True)
    g = None if guide is None else torch.randn(batch, guide, *GUIDE_SIZES[dims], requires_grad=True)
    return x, g


def _make(name: str, channels: int, dims: int, **options):
    info = get_info(name)
    guide = 2 * channels if info.kind == "paired" else None
    module = create_attention(name, channels, spatial_dims=dims, guide_channels=guide, **options)
    return module, guide


def _residual_scales(module: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in module.named_parameters() if n.rsplit(".", 1)[-1].startswith("gamma")]


def test_every_expected_module_is_registered():
    assert EXPECTED <= set(names())
    assert {i.name for i in all_info() if i.kind == "paired"} == {"gate", "cross"}
    for info in all_info():
        assert info.summary, f"{info.name} has no docstring summary"


# ----- shapes, gradients, NaN, every module x dims x widths -----------------------------------
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("dims", (2, 3))
@pytest.mark.parametrize("name", names())
def test_shape_and_gradients(name, dims, width):
    info = get_info(name)
    if dims not in info.dims:
        with pytest.raises(AttentionOptionError, match=f"{dims}"):
            _make(name, width, dims)
        return
    module, guide = _make(name, width, dims)
    x, g = _inputs(dims, width, guide)
    y = module(x) if g is None else module(x, g)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if g is not None and name == "gate":
        assert g.grad is not None and torch.isfinite(g.grad).all() and g.grad.abs().sum() > 0
    for p in _residual_scales(module):  # the added term is live: its scale gets a gradient
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("dims", (2, 3))
@pytest.mark.parametrize("name", [i.name for i in all_info() if i.residual])
def test_residual_modules_are_identity_at_init(name, dims):
    module, guide = _make(name, 8, dims)
    x, g = _inputs(dims, 8, guide)
    with torch.no_grad():
        y = module(x) if g is None else module(x, g)
    assert torch.equal(y, x)
    assert _residual_scales(module), f"{name} is registered residual but has no gamma"
    assert all(torch.equal(p, torch.zeros_like(p)) for p in _residual_scales(module))


@pytest.mark.parametrize("name", ["gate", "cross"])
def test_paired_modules_handle_guides_of_any_size(name):
    for gsize in [(2, 3), (9, 11), (13, 4)]:  # smaller, equal, larger in one dim
        module = create_attention(name, 4, spatial_dims=2, guide_channels=6)
        x = torch.randn(1, 4, 9, 11)
        g = torch.randn(1, 6, *gsize)
        assert module(x, g).shape == x.shape


# ----- gate ------------------------------------------------------------------------------------
@pytest.mark.parametrize("resample", ["coarse", "fine"])
@pytest.mark.parametrize("dims", (2, 3))
def test_gate_resample_modes(resample, dims):
    module = create_attention("gate", 3, spatial_dims=dims, guide_channels=5, resample=resample)
    x, g = _inputs(dims, 3, 5)
    with torch.no_grad():
        y = module(x, g)
        ratio = y / x
    assert y.shape == x.shape
    # a positive per-position gate in (0, 1), the same for every channel
    assert ((ratio > 0) & (ratio < 1)).all()
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)


def test_gate_modes_differ_and_fine_matches_reference():
    torch.manual_seed(1)
    coarse = create_attention("gate", 4, spatial_dims=2, guide_channels=8, resample="coarse")
    fine = create_attention("gate", 4, spatial_dims=2, guide_channels=8, resample="fine")
    fine.load_state_dict(coarse.state_dict())
    x, g = torch.randn(2, 4, 9, 11), torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        g_up = resize_to(g, x.shape[2:], mode="linear")
        ref = x * torch.sigmoid(fine.psi(torch.relu(fine.w_x(x) + fine.w_g(g_up))))
        assert torch.allclose(fine(x, g), ref, atol=1e-5)
        assert not torch.allclose(coarse(x, g), fine(x, g))
    assert fine.w_x.out_channels == 2  # inter_channels 0 -> reduced_width(C, 2)


# ----- channel / spatial details ---------------------------------------------------------------
@pytest.mark.parametrize("channels,k",
                         [(1, 1), (3, 1), (8, 3), (32, 3), (64, 3), (128, 5), (256, 5)])
def test_eca_kernel_from_paper_formula(channels, k):
    assert create_attention("eca", channels, spatial_dims=2).kernel_size == k


def test_eca_explicit_kernel_and_bad_kernel():
    assert create_attention("eca", 8, spatial_dims=2, kernel_size=5).kernel_size == 5
    with pytest.raises(AttentionOptionError, match="odd"):
        create_attention("eca", 8, spatial_dims=2, kernel_size=4)
    with pytest.raises(AttentionOptionError, match="max_tokens"):
        create_attention("self", 8, spatial_dims=3, max_tokens=-1)


def test_se_matches_reference():
    m = create_attention("se", 32, spatial_dims=3, reduction=8)
    assert m.fc1.out_features == 4
    x = torch.randn(2, 32, 3, 4, 5)
    with torch.no_grad():
        s = torch.sigmoid(m.fc2(torch.relu(m.fc1(x.mean((2, 3, 4))))))
        assert torch.allclose(m(x), x * s[:, :, None, None, None], atol=1e-6)


def test_scse_combine_modes():
    add = create_attention("scse", 8, spatial_dims=2)
    mx = create_attention("scse", 8, spatial_dims=2, combine="max")
    mx.load_state_dict(add.state_dict())
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        xc = x * torch.sigmoid(add.cse(x.mean((2, 3))))[:, :, None, None]
        xs = x * torch.sigmoid(add.sse(x))
        assert torch.allclose(add(x), xc + xs, atol=1e-6)
        assert torch.allclose(mx(x), torch.maximum(xc, xs), atol=1e-6)


# ----- token attention: naive references -------------------------------------------------------
def naive_mha(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Explicit softmax(Q K^T / sqrt(d)) V per head. q (B, Cq, Nq), k (B, Cq, Nk), v (B, Cv, Nk)."""
    dq, dv = q.shape[1] // heads, v.shape[1] // heads
    outs = []
    for h in range(heads):
        qh, kh = q[:, h * dq:(h + 1) * dq], k[:, h * dq:(h + 1) * dq]
        vh = v[:, h * dv:(h + 1) * dv]
        scores = torch.einsum("bci,bcj->bij", qh, kh) / math.sqrt(dq)
        attn = torch.softmax(scores, dim=-1)
        outs.append(torch.einsum("bij,bcj->bci", attn, vh))
    return torch.cat(outs, dim=1)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2)


def _randomise(module: nn.Module) -> None:
    for p in _residual_scales(module):
        nn.init.uniform_(p, 0.5, 1.5)


def _ref_position(m, x):
    q, k, v = m.query(x), m.key(x), m.value(x)
    return naive_mha(_flat(q), _flat(k), _flat(v), 1).reshape(x.shape)


def _ref_channel(x):
    f = _flat(x)
    attn = torch.softmax(torch.einsum("bin,bjn->bij", f, f) / math.sqrt(f.shape[-1]), dim=-1)
    return torch.einsum("bij,bjn->bin", attn, f).reshape(x.shape)


@pytest.mark.parametrize("dims", (2, 3))
def test_position_matches_naive(dims):
    m = create_attention("position", 16, spatial_dims=dims, max_tokens=1000)
    _randomise(m)
    x = torch.randn(2, 16, *SIZES[dims])
    with torch.no_grad():
        ref = x + m.gamma * _ref_position(m, x)
        assert torch.allclose(m(x), ref, atol=1e-5)
    assert m.query.out_channels == 2  # reduced_width(16, 8)


@pytest.mark.parametrize("dims", (2, 3))
def test_channel_self_matches_naive(dims):
    m = create_attention("channel_self", 8, spatial_dims=dims, max_tokens=1000)
    _randomise(m)
    x = torch.randn(2, 8, *SIZES[dims])
    with torch.no_grad():
        assert torch.allclose(m(x), x + m.gamma * _ref_channel(x), atol=1e-5)


@pytest.mark.parametrize("dims", (2, 3))
def test_dual_matches_naive(dims):
    m = create_attention("dual", 8, spatial_dims=dims, max_tokens=1000)
    _randomise(m)
    x = torch.randn(2, 8, *SIZES[dims])
    with torch.no_grad():
        ref = x + m.position.gamma * _ref_position(m.position, x) + \
            m.channel.gamma * _ref_channel(x)
        assert torch.allclose(m(x), ref, atol=1e-5)


@pytest.mark.parametrize("pos", [False, True])
@pytest.mark.parametrize("dims", (2, 3))
def test_self_matches_naive(dims, pos):
    m = create_attention("self", 8, spatial_dims=dims, heads=4, pos=pos, max_tokens=1000)
    _randomise(m)
    x = torch.randn(2, 8, *SIZES[dims])
    with torch.no_grad():
        h = m.norm(x)
        if pos:
            h = h + m.pos(h)
        q, k, v = m.qkv(h).split(8, dim=1)
        att = naive_mha(_flat(q), _flat(k), _flat(v), 4).reshape(x.shape)
        assert torch.allclose(m(x), x + m.gamma * m.out(att), atol=1e-5)
    assert m.heads == 4


@pytest.mark.parametrize("dims", (2, 3))
def test_cross_decoder_matches_naive(dims):
    m = create_attention("cross", 8, spatial_dims=dims, guide_channels=12, max_tokens=1000)
    _randomise(m)
    x, g = _inputs(dims, 8, 12)
    with torch.no_grad():
        q = m.query(resize_to(g, x.shape[2:], mode="linear"))
        att = naive_mha(_flat(q), _flat(m.key(x)), _flat(m.value(x)), m.heads).reshape(x.shape)
        assert torch.allclose(m(x, g), x + m.gamma * m.out(att), atol=1e-5)
    assert m.heads == 4


@pytest.mark.parametrize("dims", (2, 3))
def test_cross_aux_matches_naive(dims):
    # auxiliary modality at full input resolution (larger than x), its own width
    m = create_attention("cross", 6, spatial_dims=dims, guide_channels=5, context="aux",
                         max_tokens=1000)
    _randomise(m)
    x = torch.randn(2, 6, *SIZES[dims])
    aux = torch.randn(2, 5, *[2 * s + 1 for s in SIZES[dims]])
    with torch.no_grad():
        a = resize_to(aux, x.shape[2:], mode="linear")
        att = naive_mha(_flat(m.query(x)), _flat(m.key(a)), _flat(m.value(a)), m.heads)
        assert torch.allclose(m(x, aux), x + m.gamma * m.out(att.reshape(x.shape)), atol=1e-5)
    assert m.heads == 2  # 4 does not divide 6: gcd fallback
    assert m.query.in_channels == 6 and m.key.in_channels == 5


# ----- token budget ----------------------------------------------------------------------------
TOKEN_MODULES = ["position", "channel_self", "dual", "self", "cross"]


@pytest.mark.parametrize("dims", (2, 3))
@pytest.mark.parametrize("name", TOKEN_MODULES)
def test_token_budget_bounds_cost(name, dims, monkeypatch):
    budget = 12
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.shape, k.shape, v.shape))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    module, guide = _make(name, 8, dims, max_tokens=budget)
    _randomise(module)
    x, g = _inputs(dims, 8, guide)
    y = module(x) if g is None else module(x, g)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()
    assert seen, f"{name} did not go through scaled_dot_product_attention"
    n = math.prod(SIZES[dims])
    assert n > budget
    for q, k, v in seen:
        if v[-1] == n:  # channel attention: C tokens, pooled positions as their features
            assert q[-2] == 8 and q[-1] <= budget
        else:  # attention over positions: pooled queries and keys
            assert q[-2] <= budget and k[-2] <= budget
    # budget 0 = full resolution: the same weights give a different (unpooled) result
    full, _ = _make(name, 8, dims, max_tokens=0)
    full.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert not torch.allclose(full(x) if g is None else full(x, g), y)


@pytest.mark.parametrize("size,budget", [((128, 128), 256), ((9, 11), 12), ((64, 16), 256),
                                         ((1, 500), 20), ((17, 19, 23), 256), ((5, 6, 7), 1000),
                                         ((40, 40, 3), 100)])
def test_token_grid(size, budget):
    grid = tokens.token_grid(size, budget)
    assert math.prod(grid) <= max(budget, 1)
    assert all(1 <= gi <= si for gi, si in zip(grid, size))
    if math.prod(size) <= budget:
        assert grid == size
    else:
        assert math.prod(grid) > budget // 2  # uses the budget
    assert tokens.token_grid(size, 0) == tuple(size)
    assert tokens.token_grid((128, 128), 256) == (16, 16)


@pytest.mark.parametrize("src,dst", [((4, 5), (9, 11)), ((9, 11), (4, 5)), ((16, 16), (128, 128)),
                                     ((3, 3, 5), (5, 6, 7)), ((5, 6, 7), (2, 9, 7)),
                                     ((1, 1), (3, 4))])
def test_linear_resize_matches_interpolate(src, dst):
    t = torch.randn(2, 3, *src, dtype=torch.float64, requires_grad=True)
    ours, ref = tokens.linear_resize(t, dst), resize_to(t, dst, mode="linear")
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-12)
    w = torch.randn_like(ref)
    g1, = torch.autograd.grad((ours * w).sum(), t)
    g2, = torch.autograd.grad((ref * w).sum(), t)
    assert torch.allclose(g1, g2, atol=1e-12)


@pytest.mark.parametrize("src,dst", [((12, 18), (4, 6)), ((9, 11), (4, 5)),
                                     ((12, 18, 10), (4, 6, 5)), ((5, 6, 7), (3, 3, 5))])
def test_pool_to_matches_adaptive_pool(src, dst):
    t = torch.randn(2, 3, *src)
    ref = (F.adaptive_avg_pool2d if len(src) == 2 else F.adaptive_avg_pool3d)(t, dst)
    assert torch.allclose(tokens.pool_to(t, dst), ref, atol=1e-6)


def test_fit_heads():
    assert tokens.fit_heads(16, 4) == 4
    assert tokens.fit_heads(6, 4) == 2
    assert tokens.fit_heads(1, 4) == 1
    with pytest.raises(ValueError):
        tokens.fit_heads(8, 0)


# ----- registry --------------------------------------------------------------------------------
def test_register_twice_raises():
    class Dummy(nn.Module):
        def __init__(self, channels, *, spatial_dims):
            super().__init__()

    with pytest.raises(ValueError, match="already registered"):
        register("se", family="channel")(Dummy)


def test_register_refuses_swallowed_options():
    class Swallow(nn.Module):
        def __init__(self, channels, *, spatial_dims, **kwargs):
            super().__init__()

    with pytest.raises(TypeError, match="keyword-only"):
        register("test_swallow_never_registered", family="channel")(Swallow)
    assert "test_swallow_never_registered" not in names()


def test_unknown_name_lists_known():
    with pytest.raises(UnknownAttentionError) as e:
        create_attention("squeeze", 8, spatial_dims=2)
    assert "'squeeze'" in str(e.value) and "se" in str(e.value) and "cbam" in str(e.value)


def test_unknown_option_names_it_and_accepted():
    with pytest.raises(AttentionOptionError) as e:
        create_attention("se", 8, spatial_dims=2, ratio=4)
    msg = str(e.value)
    assert "'ratio'" in msg and "reduction=16" in msg


def test_bad_option_values():
    with pytest.raises(AttentionOptionError, match="'coarse', 'fine'"):
        create_attention("gate", 8, spatial_dims=2, guide_channels=8, resample="bilinear")
    with pytest.raises(AttentionOptionError, match="context"):
        validate_options("cross", {"context": "encoder"})
    with pytest.raises(AttentionOptionError, match="must be of type int"):
        validate_options("self", {"heads": "4"})
    with pytest.raises(AttentionOptionError, match="bool"):
        validate_options("self", {"pos": 1})
    with pytest.raises(AttentionOptionError, match="bool, int, float or str"):
        validate_options("se", {"reduction": [4]})


def test_none_paired_and_wrapping():
    assert isinstance(create_attention(None, 8, spatial_dims=2), PassThrough)
    with pytest.raises(AttentionOptionError, match="skip"):
        create_attention("gate", 8, spatial_dims=2)
    wrapped = create_attention("se", 8, spatial_dims=3, guide_channels=16)
    assert isinstance(wrapped, IgnoreGuide)
    x = torch.randn(1, 8, 3, 4, 5)
    assert wrapped(x, torch.randn(1, 16, 2, 2, 3)).shape == x.shape


def test_2d_only_modules_refuse_3d_clearly():
    two_d = [i.name for i in all_info() if i.dims == (2,)]
    assert two_d, "expected timm modules registered for 2D"
    for name in two_d:
        with pytest.raises(AttentionOptionError, match="spatial_dims"):
            create_attention(name, 8, spatial_dims=3)
