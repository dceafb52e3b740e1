import pytest
import torch

from nas_attn.architecture.description import AttnSpec, UNetArch
from nas_attn.architecture.registry import get_info, names
from nas_attn.architecture.builder import build_unet

A = AttnSpec.make


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def plain_count(in_ch, out, widths, k=2):
    """Hand count of the plain UNet (batch norm, 2 convs, transposed-conv up-sampling) in 2D."""
    total, prev = 0, in_ch
    for w in widths:
        total += prev * w * 9 + 2 * w + w * w * 9 + 2 * w
        prev = w
    for i in range(len(widths) - 1):
        w, below = widths[i], widths[i + 1]
        total += below * w * k * k + w  # transposed conv with bias
        total += 2 * w * w * 9 + 2 * w + w * w * 9 + 2 * w
    return total + widths[0] * out + out


def test_pinned_parameter_count_reference_arch():
    # depth-4, width-16 plain UNet: the reference of the benchmarks
    model = build_unet(UNetArch())
    assert n_params(model) == plain_count(1, 1, (16, 32, 64, 128, 256)) == 1_942_289


def test_pinned_parameter_count_every_site(every_site_arch):
    assert n_params(build_unet(every_site_arch())) == 141_161


@pytest.mark.parametrize("dims, size", [(2, (37, 53)), (2, (1, 7)), (3, (20, 33, 17)), (3, (5, 6, 7))])
@pytest.mark.parametrize("upsample", ["transpose", "interp"])
def test_odd_input_sizes(dims, size, upsample):
    arch = UNetArch(spatial_dims=dims, depth=3, widths=(4, 8, 8, 16), upsample=upsample,
                    skip=(A("gate"), A("gate", resample="fine"), A("cross")),
                    bottleneck=A("self"))
    model = build_unet(arch)
    x = torch.randn(2, 1, *size)
    assert model(x).shape == (2, 1, *size)


def test_multiclass_multichannel_output():
    arch = UNetArch(in_channels=3, classes=4, depth=2, widths=(4, 8, 16))
    assert build_unet(arch)(torch.randn(1, 3, 19, 21)).shape == (1, 4, 19, 21)


@pytest.mark.parametrize("dims", [2, 3])
def test_every_site_used_at_once(dims):
    single = [n for n in names() if get_info(n).kind == "single" and dims in get_info(n).dims]
    paired = [n for n in names() if get_info(n).kind == "paired"]
    depth = 3
    cycle = lambda lst, k: tuple(A(lst[(k + i) % len(lst)]) for i in range(depth))  # noqa: E731
    arch = UNetArch(spatial_dims=dims, depth=depth, widths=(4, 8, 8, 16),
                    encoder=cycle(single, 0), bottleneck=A("dual"),
                    skip=(A(paired[0]), A(paired[1 % len(paired)]), A(single[-1])),
                    decoder=cycle(single, 3), deep_supervision=True)
    model = build_unet(arch)
    size = (23, 17) if dims == 2 else (9, 11, 10)
    x = torch.randn(2, 1, *size, requires_grad=True)
    outs = model.forward_all(x)
    assert outs[0].shape == (2, 1, *size)
    assert len(outs) == depth  # main + deep supervision at levels 1..depth-1
    sum(o.mean() for o in outs).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # every site really holds its module
    mods = {type(m).__name__ for m in model.modules()}
    assert len(mods) > 10


def test_plain_unet_matches_no_attention_forward_at_init():
    """Residual modules start as the identity: a UNet with them equals the plain UNet."""
    torch.manual_seed(0)
    residual = [n for n in names() if get_info(n).residual and get_info(n).kind == "single"]
    plain = UNetArch(depth=2, widths=(4, 8, 16), block=UNetArch().block)
    fancy = UNetArch(depth=2, widths=(4, 8, 16), bottleneck=A(residual[0]),
                     decoder=(A(residual[-1]), AttnSpec()))
    m1 = build_unet(plain).eval()
    m2 = build_unet(fancy).eval()
    missing = m2.load_state_dict(m1.state_dict(), strict=False)
    assert not missing.unexpected_keys
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(m1(x), m2(x))


def test_aux_modality_cross_attention_and_early_fusion():
    arch = UNetArch(depth=2, widths=(4, 8, 16), aux_channels=2,
                    skip=(A("cross", context="aux"), AttnSpec()))
    m = build_unet(arch)
    assert m.aux_encoder and not m.early_fusion
    x, aux = torch.randn(1, 1, 15, 18), torch.randn(1, 2, 15, 18)
    assert m(x, aux).shape == (1, 1, 15, 18)
    with pytest.raises(ValueError, match="aux"):
        m(x)
    fused = build_unet(UNetArch(depth=2, widths=(4, 8, 16), aux_channels=2))
    assert fused.early_fusion and fused(x, aux).shape == (1, 1, 15, 18)


def test_timm_encoder_2d():
    arch = UNetArch(encoder_name="timm:resnet18", depth=3, widths=(8, 16, 32, 64),
                    encoder=(A("se"), AttnSpec(), AttnSpec()), skip=(A("gate"),) * 3,
                    bottleneck=A("eca"), in_channels=2)
    m = build_unet(arch)
    assert m(torch.randn(1, 2, 45, 61)).shape == (1, 1, 45, 61)


def test_timm_encoder_errors():
    from nas_attn.errors import ArchError

    with pytest.raises(ArchError, match="no model"):
        build_unet(UNetArch(encoder_name="timm:not_a_net", depth=1, widths=(4, 8)))
    with pytest.raises(ArchError, match="depth must be at most"):
        build_unet(UNetArch(encoder_name="timm:resnet18", depth=6, widths=(4,) * 7))
