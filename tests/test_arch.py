import json

import pytest

from nas_attn.architecture.description import FORMAT_VERSION, AttnSpec, BlockSpec, UNetArch
from nas_attn.errors import ArchError, AttentionOptionError, UnknownAttentionError


def test_defaults_are_plain_unet():
    a = UNetArch()
    assert a.depth == 4 and len(a.encoder) == len(a.skip) == len(a.decoder) == 4
    assert all(s.name is None for _, s in a.sites())
    assert a.out_channels == 1 and UNetArch(classes=4).out_channels == 4
    assert [n for n, _ in a.sites()][:5] == ["encoder.0", "encoder.1", "encoder.2", "encoder.3",
                                             "bottleneck"]


def test_json_round_trip_exact(every_site_arch):
    a = every_site_arch(block=BlockSpec(convs=1, norm="group", act="gelu", dropout=0.1),
                        upsample="interp", deep_supervision=True)
    text = a.to_json()
    b = UNetArch.from_json(text)
    assert b == a
    assert b.to_json() == text
    d = json.loads(text)
    assert d["format_version"] == FORMAT_VERSION
    assert d["skip"][0] == {"name": "gate", "options": {"resample": "fine"}}
    assert d["bottleneck"] == {"name": "self", "options": {"heads": 2}}


def test_pinned_json_of_plain_arch():
    text = UNetArch(depth=1, widths=(4, 8)).to_json()
    assert text == (
        '{"format_version": 1, "spatial_dims": 2, "in_channels": 1, "classes": 2, "depth": 1, '
        '"widths": [4, 8], "block": {"convs": 2, "norm": "batch", "act": "relu", "dropout": 0.0}, '
        '"upsample": "transpose", "encoder_name": "unet", "aux_channels": 0, '
        '"deep_supervision": false, "encoder": [{"name": null, "options": {}}], '
        '"bottleneck": {"name": null, "options": {}}, "skip": [{"name": null, "options": {}}], '
        '"decoder": [{"name": null, "options": {}}]}')


def test_summaries(every_site_arch):
    a = every_site_arch()
    line = a.summary()
    assert "\n" not in line
    assert line.startswith("2D d3 w8-16-32-64 batch/relux2 transpose |")
    assert "enc[0:se(reduction=4) 1:cbam 2:position(max_tokens=64)]" in line
    assert "bott[self(heads=2)]" in line and "skip[0:gate(resample=fine) 1:cross 2:eca]" in line
    assert UNetArch().summary().endswith("| no attention")
    desc = a.describe().splitlines()
    assert any(l.split() == ["skip.1", "cross"] for l in desc)
    assert len(desc) == 3 + 10


@pytest.mark.parametrize("kw, words", [
    (dict(widths=(8, 16)), ["widths has 2 entries", "depth 4 needs 5"]),
    (dict(depth=2, widths=(8, 0, 16)), ["widths must be integers"]),
    (dict(depth=0, widths=(8,)), ["depth must be"]),
    (dict(classes=1), ["classes must be"]),
    (dict(spatial_dims=4), ["spatial_dims"]),
    (dict(upsample="pixelshuffle"), ["upsample", "transpose, interp"]),
    (dict(encoder_name="resnet"), ["encoder_name", "timm:<model name>"]),
    (dict(spatial_dims=3, encoder_name="timm:resnet18"), ["2D only"]),
    (dict(depth=1, widths=(4, 8), skip=(AttnSpec(), AttnSpec())), ["skip has 2 sites"]),
    (dict(depth=1, widths=(4, 8), decoder=(AttnSpec.make("gate"),)), ["decoder.0", "skip site"]),
    (dict(depth=1, widths=(4, 8), skip=(AttnSpec.make("cross", context="aux"),)),
     ["aux_channels > 0"]),
])
def test_invalid_arch_messages(kw, words):
    with pytest.raises(ArchError) as e:
        UNetArch(**kw)
    for w in words:
        assert w in str(e.value)


def test_unknown_attention_lists_known():
    with pytest.raises(UnknownAttentionError) as e:
        UNetArch(depth=1, widths=(4, 8), encoder=(AttnSpec.make("transformerXL"),))
    msg = str(e.value)
    assert "'transformerXL'" in msg and "se" in msg and "gate" in msg and "none" in msg


def test_unknown_option_names_accepted():
    with pytest.raises(AttentionOptionError) as e:
        UNetArch(depth=1, widths=(4, 8), encoder=(AttnSpec.make("se", ratio=4),))
    assert "'ratio'" in str(e.value) and "reduction" in str(e.value) and "encoder.0" in str(e.value)


def test_2d_only_module_in_3d_is_clear():
    with pytest.raises(AttentionOptionError) as e:
        UNetArch(spatial_dims=3, depth=1, widths=(4, 8), encoder=(AttnSpec.make("gc"),))
    assert "spatial_dims [2]" in str(e.value)


@pytest.mark.parametrize("text, words", [
    ("{", ["not valid JSON"]),
    ('{"format_version": 99}', ["format_version 99"]),
    ('{"format_version": 1, "depht": 3}', ["unknown keys", "depht"]),
    ('{"format_version": 1, "block": {"norms": "x"}}', ["block has unknown keys"]),
    ('{"format_version": 1, "depth": 1, "widths": [4, 8], "encoder": [{"name": "se", "opts": {}}]}',
     ["encoder.0", "unknown keys"]),
])
def test_from_json_errors(text, words):
    with pytest.raises(ArchError) as e:
        UNetArch.from_json(text)
    for w in words:
        assert w in str(e.value)


def test_attnspec_options_frozen_and_sorted():
    s = AttnSpec.make("gate", resample="coarse", inter_channels=4)
    assert s.options == (("inter_channels", 4), ("resample", "coarse"))
    assert hash(s) == hash(AttnSpec("gate", {"resample": "coarse", "inter_channels": 4}))
    with pytest.raises(ArchError):
        AttnSpec(None, (("x", 1),))


def test_with_sites():
    a = UNetArch().with_sites(skip_2=AttnSpec.make("gate"), bottleneck=AttnSpec.make("se"))
    assert a.site("skip.2").name == "gate" and a.bottleneck.name == "se"
    assert a.attention_names() == ["gate", "se"]
