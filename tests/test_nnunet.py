"""A searched placement trained by nnU-Net v2 (`nas_attn.nnunet`): the exported plans build the
package's network through nnU-Net's own `get_network_from_plans`, forward and backward with deep
supervision on and off, at the scales nnU-Net's trainer derives from the plans."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas_attn.architecture.description import AttnSpec, UNetArch
from nas_attn.errors import NasAttnError
from nas_attn.nnunet import CLASS_NAME, derive_plans, write_plans

nnunet_plans = pytest.importorskip("nnunetv2.utilities.get_network_from_plans")


def user_plans(dims: int, patch) -> dict:
    """What nnUNetv2_plan_and_preprocess writes, reduced to what the derivation reads."""
    conv = f"torch.nn.modules.conv.Conv{dims}d"
    return {"dataset_name": "Dataset001_Toy", "plans_name": "nnUNetPlans",
            "configurations": {
                "cfg": {"data_identifier": "nnUNetPlans_cfg", "batch_size": 2,
                        "patch_size": list(patch), "spacing": [1.0] * dims,
                        "architecture": {
                            "network_class_name":
                                "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                            "arch_kwargs": {"n_stages": 4, "conv_op": conv,
                                            "strides": [[1] * dims] + [[2] * dims] * 3},
                            "_kw_requires_import": ["conv_op"]}},
                "cfg_child": {"inherits_from": "cfg", "batch_size": 1}}}


def build(plans: dict, conf: str, classes: int, deep_supervision: bool):
    a = plans["configurations"][conf]["architecture"]
    return nnunet_plans.get_network_from_plans(
        a["network_class_name"], a["arch_kwargs"], a["_kw_requires_import"], input_channels=2,
        output_channels=classes, allow_init=True, deep_supervision=deep_supervision)


@pytest.mark.parametrize("dims, patch", [(2, (32, 48)), (3, (16, 16, 32))])
def test_nnunet_builds_the_searched_network_with_deep_supervision_on_and_off(dims, patch):
    gate, se = AttnSpec.make("gate"), AttnSpec.make("se", reduction=2)
    arch = UNetArch(spatial_dims=dims, depth=3, widths=(4, 8, 16, 32), skip=(gate, None, gate),
                    encoder=(se, None, None), bottleneck=AttnSpec.make("eca"))
    plans = derive_plans(user_plans(dims, patch), arch, "cfg")
    conf = plans["configurations"]["cfg"]
    assert conf["architecture"]["network_class_name"] == CLASS_NAME
    assert conf["data_identifier"] == "nnUNetPlans_cfg"  # nnU-Net's preprocessed data reused
    assert conf["patch_size"] == list(patch) and plans["plans_name"] == "nasAttnPlans"
    json.dumps(plans)
    net = build(plans, "cfg", 5, True)
    assert net.arch.attention_names() == arch.attention_names()  # the searched placement
    x = torch.randn(2, 2, *patch)
    outs = net(x)
    # the scales nnU-Net's trainer takes from the plans (nnUNetTrainer._get_deep_supervision_scales)
    scales = list(list(i) for i in 1 / np.cumprod(np.vstack(
        conf["architecture"]["arch_kwargs"]["strides"]), axis=0))[:-1]
    assert len(outs) == len(scales) == arch.depth
    for out, scale in zip(outs, scales):
        assert out.shape == (2, 5, *[int(p * s) for p, s in zip(patch, scale)])
    sum(o.float().mean() for o in outs).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    net.decoder.deep_supervision = False  # what the trainer's set_deep_supervision_enabled does
    assert net(x).shape == (2, 5, *patch)
    # nnU-Net's predictor builds without deep supervision and loads the trained weights
    plain = build(plans, "cfg", 5, False)
    plain.load_state_dict(net.state_dict())
    plain.eval()
    net.eval()
    with torch.no_grad():
        assert torch.allclose(plain(x), net(x))


def test_a_binary_task_gets_two_softmax_channels_as_nnunet_expects():
    plans = derive_plans(user_plans(2, (32, 32)), UNetArch(depth=2, widths=(4, 8, 16)), "cfg")
    net = build(plans, "cfg", 2, False)
    assert net(torch.randn(1, 2, 32, 32)).shape == (1, 2, 32, 32)


def test_plans_that_do_not_fit_are_refused_with_one_line(tmp_path):
    arch = UNetArch(depth=3, widths=(4, 8, 16, 32))
    with pytest.raises(NasAttnError, match="not a multiple of 2\\*\\*depth = 8"):
        derive_plans(user_plans(2, (36, 48)), arch, "cfg")
    with pytest.raises(NasAttnError, match="is 3D .* choose a 2D configuration"):
        derive_plans(user_plans(3, (16, 16, 16)), arch, "cfg")
    with pytest.raises(NasAttnError, match="no configuration '3d_fullres'; they have cfg"):
        derive_plans(user_plans(2, (32, 32)), arch, "3d_fullres")
    child = derive_plans(user_plans(2, (32, 32)), arch, "cfg_child")  # inherits the patch
    assert child["configurations"]["cfg_child"]["architecture"]["network_class_name"] == \
        CLASS_NAME
    src = tmp_path / "nnUNetPlans.json"
    src.write_text(json.dumps(user_plans(2, (32, 32))))
    out = write_plans(src, arch, "cfg")
    assert out == tmp_path / "nasAttnPlans.json" and json.loads(src.read_text()) == \
        user_plans(2, (32, 32))  # the user's plans untouched
    assert write_plans(src, arch, "cfg") == out  # the same again: fine
    with pytest.raises(NasAttnError, match="exists with other contents"):
        write_plans(src, UNetArch(depth=2, widths=(4, 8, 16)), "cfg")
    with pytest.raises(NasAttnError, match="no such file"):
        write_plans(tmp_path / "nope.json", arch, "cfg")


def test_the_export_says_to_train_without_mirroring_when_a_class_lies_on_one_side(
        tmp_path, cli, write_space, tiny_space):
    """nnU-Net's default trainer mirrors every axis: on left/right classes (inia19's twins) it
    would teach a mirrored structure the other side's label. The export reads nnU-Net's own
    reference segmentations and names nnUNetTrainerNoMirroring in the command it prints."""
    from PIL import Image

    runs = tmp_path / "runs"
    assert cli("search", "--space", write_space(tiny_space), "--study", "s", "--runs-dir", runs,
               "--trials", "1")[0] == 0
    pre = tmp_path / "nnUNet_preprocessed" / "Dataset001_Toy"
    (pre / "gt_segmentations").mkdir(parents=True)
    (pre / "nnUNetPlans.json").write_text(json.dumps(user_plans(2, (32, 32))))
    left = np.zeros((32, 32), np.uint8)
    left[8:24, 2:12] = 1  # class 1 only ever on the left

    def export(masks):
        for i, m in enumerate(masks):
            Image.fromarray(m).save(pre / "gt_segmentations" / f"case_{i}.png")
        code, out = cli("export", "s", "--format", "nnunet", "--configuration", "cfg",
                        "--nnunet-plans", pre / "nnUNetPlans.json", "--runs-dir", runs)
        assert code == 0, out
        return " ".join(out.split())

    out = export([left, np.roll(left, 3, axis=0)])
    assert "class 1 lies on one side of the image along axis 1" in out, out
    assert "-p nasAttnPlans -tr nnUNetTrainerNoMirroring" in out
    assert ("-device cpu" in out) == (not torch.cuda.is_available())
    (pre / "gt_segmentations" / "case_9.png").write_bytes(b"not a png")  # skipped, no traceback
    out = export([left | left[:, ::-1], np.roll(left | left[:, ::-1], 3, axis=0)])  # both sides
    assert "NoMirroring" not in out and "-p nasAttnPlans" in out, out
