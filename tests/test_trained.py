"""One trained-model type: `InferenceConfig` (validated once, immutable, one patch-size rule)
and `TrainedModel`, loaded alike from a checkpoint (today's and an older one), an export folder
and a finalize result."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from nas_attn.architecture.description import UNetArch
from nas_attn.inference.trained import InferenceConfig, InferenceConfigError, TrainedModel

TINY = dict(depth=2, widths=(4, 8, 8))
DATASET = {"normalisation": "dataset", "low": [0.0], "high": [2.0], "patch_size": [16],
           "overlap": 0.5, "spacing": [1.0, 2.0], "class_names": ["bg", "left", "right"]}


@pytest.mark.parametrize("given, dims, want", [
    (16, 2, (16, 16)), ([16], 3, (16, 16, 16)), ((8, 12), 2, (8, 12)), (None, 3, None)])
def test_one_patch_size_rule(given, dims, want):
    assert InferenceConfig.make({"patch_size": given}, dims).patch_size == want


@pytest.mark.parametrize("settings, words", [
    ({"patch_size": [16, 16, 16]}, "3 entries for 2D data (give 1 or 2)"),
    ({"patch_size": [0]}, "positive whole number"),
    ({"patch_size": "16"}, "not accepted"),
    ({"overlap": 1.0}, "overlap 1.0 must be in [0, 1)"),
    ({"normalisation": "zscore"}, "normalisation 'zscore' unknown"),
    ({"normalisation": "dataset", "low": [0.0]}, "'high'"),
    ({"normalisation": "dataset", "low": ["x"], "high": [1.0]}, "low: expected a number"),
    ({"spacing": [1.0]}, "spacing [1.0] must have 2 entries"),
    ({"spacing": [1.0, -1.0]}, "must be positive"),
    ({"class_names": [1, 2]}, "class_names must be a list of strings"),
])
def test_a_bad_configuration_is_one_line_naming_the_field(settings, words):
    with pytest.raises(InferenceConfigError) as e:
        InferenceConfig.make(settings, 2)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_round_trip_and_immutable():
    cfg = InferenceConfig.make(DATASET, 2)
    assert cfg.patch_size == (16, 16) and cfg.low == (0.0,) and cfg.spacing == (1.0, 2.0)
    assert InferenceConfig.make(cfg.to_dict(), 2) == cfg
    assert InferenceConfig.make(cfg, 2) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    assert "class_names" not in cfg.to_dict(class_names=False)  # model.py's INFERENCE
    assert cfg.normalisation_settings() == {"normalisation": "dataset", "low": [0.0],
                                            "high": [2.0], "low_percentile": 0.5,
                                            "high_percentile": 99.5}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.patch_size = (8, 8)


def _checkpoint(tmp_path, meta):
    from nas_attn.training.checkpoint import save_checkpoint
    from nas_attn.architecture.builder import build_unet

    arch = UNetArch(**TINY)
    torch.manual_seed(0)
    return arch, save_checkpoint(tmp_path / "best.pt", arch, build_unet(arch).state_dict(), meta)


def test_todays_and_an_older_checkpoint_load_alike(tmp_path):
    """Today's best.pt records the configuration whole; one of 0.1 recorded its parts side by
    side (read by `nas_attn.inference.compat` only, until its stated removal)."""
    from nas_attn.inference import compat
    from nas_attn.inference.prediction import load_model

    cfg = InferenceConfig.make(DATASET, 2)
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    _checkpoint(tmp_path / "new", {"inference": cfg.to_dict()})
    _checkpoint(tmp_path / "old", {"patch_size": [16, 16], "spacing": [1.0, 2.0],
                                   "normalisation": {"normalisation": "dataset", "low": [0.0],
                                                     "high": [2.0]},
                                   "train_config": {"val_overlap": 0.5}})
    new = load_model(tmp_path / "new", "cpu")
    old = load_model(tmp_path / "old", "cpu")
    assert isinstance(new, TrainedModel) and new.kind == "checkpoint"
    assert new.inference == old.inference == cfg
    assert new.notes == [] and old.notes == []
    assert compat.REMOVAL_VERSION == "0.4"


def test_a_finalize_result_loads_its_recommended_model(tmp_path):
    from nas_attn.inference.prediction import ModelLoadError, load_model

    cfg = InferenceConfig.make(DATASET, 2)
    arch, ckpt = _checkpoint(tmp_path, {"inference": cfg.to_dict()})
    final = tmp_path / "final"
    final.mkdir()
    (final / "finalize.json").write_text(json.dumps({"recommended": {"checkpoint": str(ckpt)}}))
    loaded = load_model(final, "cpu")
    assert loaded.source == str(ckpt) and loaded.arch == arch and loaded.inference == cfg
    (final / "finalize.json").write_text(json.dumps({"recommended": {"checkpoint": "gone.pt"}}))
    with pytest.raises(ModelLoadError, match="recommended checkpoint 'gone.pt' is missing"):
        load_model(final, "cpu")


def test_export_and_load_give_back_the_same_trained_model(tmp_path):
    """`export_trained` writes a TrainedModel; loading the folder (its data only, never its
    model.py) gives the same architecture, weights and configuration."""
    from nas_attn.exporting import export_trained
    from nas_attn.inference.prediction import load_model

    cfg = InferenceConfig.make(DATASET, 2)
    arch, ckpt = _checkpoint(tmp_path, {"inference": cfg.to_dict()})
    trained = load_model(ckpt, "cpu")
    export_trained(trained, tmp_path / "export")
    back = load_model(tmp_path / "export", "cpu")
    assert back.kind == "export" and back.arch == arch and back.inference == cfg
    assert back.inference.class_names == ("bg", "left", "right")  # from meta.json
    for (k, a), (_, b) in zip(trained.model.state_dict().items(),
                              back.model.state_dict().items()):
        assert torch.equal(a, b), k
