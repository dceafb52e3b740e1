"""Intensity normalisation: fitted on the training images only, the same map for every split,
recorded with the checkpoint and replayed by evaluate, predict and model.py."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nas_attn.data import DataConfig, load_data, load_test
from nas_attn.data.intensity import fit_normalisation, normalise, resolve_mode
from nas_attn.data.segdata import SegData


def _slices(root, scales=(1.0, 0.5, 0.25, 1.0, 0.8, 0.3), size=24, seed=0):
    """One 'acquisition' cut into slices whose overall brightness differs (like slices with more
    or less tissue): image i = base * scales[i]. Slice names s0.. ; val = s4, test = s5."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, k in enumerate(scales):
        m = np.zeros((size, size), np.uint8)
        m[4:12, 5:15] = 1
        img = np.clip((60 + 150 * m + rng.integers(0, 30, m.shape)) * k, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"s{i}.png")
        Image.fromarray(m * 255).save(root / "masks" / f"s{i}.png")
    return root


def _np_dataset_map(train_imgs, img):
    """The documented rule, in numpy: lowest per-image 0.5th percentile -> 0, highest 99.5th
    -> 1, clipped."""
    lo = min(np.percentile(np.asarray(a, np.float64), 0.5) for a in train_imgs)
    hi = max(np.percentile(np.asarray(a, np.float64), 99.5) for a in train_imgs)
    return np.clip((np.asarray(img, np.float64) - lo) / (hi - lo), 0, 1), (lo, hi)


def test_dataset_mode_is_one_map_fitted_on_train_only(tmp_path):
    root = _slices(tmp_path / "ds")
    cfg = DataConfig(source=str(root), val_pattern="s4", test_pattern="s5",
                     normalisation="dataset")
    tr, va = load_data(cfg)
    te = load_test(cfg)
    assert tr.names == ["s0", "s1", "s2", "s3"] and va.names == ["s4"] and te.names == ["s5"]
    raw = {f"s{i}": np.asarray(Image.open(root / "images" / f"s{i}.png")) for i in range(6)}
    train_raw = [raw[n] for n in tr.names]
    for split in (tr, va, te):
        assert split.normalisation == tr.normalisation
        for name, img in zip(split.names, split.images):
            want, (lo, hi) = _np_dataset_map(train_raw, raw[name])
            np.testing.assert_allclose(img[0], want, atol=1e-6)
    assert tr.normalisation["low"] == [pytest.approx(lo)]
    assert tr.normalisation["high"] == [pytest.approx(hi)]
    # relative brightness survives: the half-bright slice stays clearly darker
    assert tr.images[1].mean() < 0.8 * tr.images[0].mean()
    # per image, every slice is stretched to the same range instead
    tr_img, _ = load_data(cfg.model_copy(update={"normalisation": "image"}))
    assert tr_img.images[1].mean() == pytest.approx(tr_img.images[0].mean(), rel=0.1)
    assert tr_img.normalisation == {"normalisation": "image", "low_percentile": 0.5,
                                    "high_percentile": 99.5}


def test_validation_and_test_values_do_not_move_the_fit(tmp_path):
    a = _slices(tmp_path / "a")
    b = _slices(tmp_path / "b", scales=(1.0, 0.5, 0.25, 1.0, 0.01, 0.01))  # other val/test
    fits = [load_data(DataConfig(source=str(r), val_pattern="s4", test_pattern="s5",
                                 normalisation="dataset"))[0].normalisation for r in (a, b)]
    assert fits[0] == fits[1]


def test_auto_is_dataset_in_2d_and_per_image_in_3d():
    assert resolve_mode("auto", 2) == "dataset" and resolve_mode("auto", 3) == "image"
    with pytest.raises(ValueError, match="accepted: auto, dataset, image, none"):
        resolve_mode("zscore", 2)


def test_raw_values_refuse_intensity_augmentation():
    # gamma and the [0, 1] clip of the intensity jitter would flatten raw 0..255 values
    with pytest.raises(ValueError, match="augment.intensity works on normalised images"):
        DataConfig(normalisation="none", augment={"intensity": True})
    DataConfig(normalisation="none")  # raw values without intensity jitter are fine
    DataConfig(normalisation="dataset", augment={"intensity": True})


def test_non_finite_huge_and_constant_values():
    imgs = [np.array([[[np.nan, 1e300], [2e300, 3e300]]]), np.array([[[0.0, 1e300], [4e300, np.inf]]])]
    data = SegData(images=imgs, masks=[np.zeros((2, 2), np.int64)] * 2, names=["a", "b"],
                   spatial_dims=2, in_channels=1, classes=2)
    settings = fit_normalisation(data, "dataset")
    assert np.isfinite(settings["low"][0]) and settings["high"][0] > 1e300
    out = normalise(data, settings)
    for x in out.images:
        assert x.dtype == np.float32 and np.isfinite(x).all() and 0 <= x.min() and x.max() <= 1
    assert out.images[0][0, 0, 0] == 0.0  # NaN reads as the lowest value
    assert out.images[1][0, 1, 1] == 0.0  # so does inf
    assert 0.2 < out.images[0][0, 1, 0] < 0.8  # 2e300 lies inside the range, not overflowed
    flat = SegData(images=[np.full((1, 3, 3), 5.0)] * 2, masks=[np.zeros((3, 3), np.int64)] * 2,
                   names=["a", "b"], spatial_dims=2, in_channels=1, classes=2)
    for mode in ("dataset", "image"):
        out = normalise(flat, fit_normalisation(flat, mode))
        assert (out.images[0] == 0).all()
    none = normalise(data, fit_normalisation(data, "none"))
    assert none.images[0].dtype == np.float32 and none.images[0][0, 0, 0] == 0.0


def test_aux_gets_its_own_range():
    rng = np.random.default_rng(0)
    imgs = [rng.random((1, 8, 8)) for _ in range(3)]
    aux = [1000 + 500 * rng.random((2, 8, 8)) for _ in range(3)]
    data = SegData(images=imgs, masks=[np.zeros((8, 8), np.int64)] * 3, names=list("abc"),
                   spatial_dims=2, in_channels=1, classes=2, aux=aux, aux_channels=2)
    s = fit_normalisation(data, "dataset")
    assert len(s["low"]) == 1 and len(s["aux_low"]) == 2 and s["aux_low"][0] > 999
    out = normalise(data, s)
    assert 0 <= out.aux[0].min() and out.aux[0].max() <= 1 and out.aux[0].std() > 0.1


def test_checkpoint_export_and_evaluate_replay_the_training_normalisation(tmp_path, cli):
    """Train on a folder whose slices differ in brightness: the checkpoint records the dataset
    map, the export's INFERENCE carries it, and evaluate on the validation images gives the
    training's validation Dice back (it would differ if they were normalised per image)."""
    root = _slices(tmp_path / "ds", scales=(1.0, 0.5, 0.3, 0.9, 0.6, 0.4, 0.7, 0.35))
    (tmp_path / "arch.json").write_text(json.dumps(
        {"format_version": 1, "spatial_dims": 2, "in_channels": 1, "classes": 2, "depth": 1,
         "widths": [4, 8]}))
    out = tmp_path / "run"
    code, text = cli("train", "--arch", tmp_path / "arch.json", "--data", root, "--epochs", "12",
                     "--out", out, "--val-pattern", "s[67]")
    assert code == 0, text
    import torch

    meta = torch.load(out / "best.pt", map_location="cpu", weights_only=True)["meta"]
    assert meta["inference"]["normalisation"] == "dataset"
    val_dice = meta["metrics"]["dice"]
    code, text = cli("export", "--checkpoint", out, "--out", tmp_path / "exp")
    assert code == 0, text
    inf = json.loads((tmp_path / "exp" / "meta.json").read_text())["inference"]
    assert inf["normalisation"] == "dataset" and inf["low"] == meta["inference"]["low"]
    val = tmp_path / "val"
    (val / "images").mkdir(parents=True)
    (val / "masks").mkdir()
    for n in ("s6", "s7"):
        for sub in ("images", "masks"):
            (val / sub / f"{n}.png").write_bytes((root / sub / f"{n}.png").read_bytes())
    for model in (out, tmp_path / "exp"):
        code, text = cli("evaluate", "--model", model, "--data", val, "--json",
                         tmp_path / "scores.json", "--no-hd95", "--force")
        assert code == 0, text
        got = json.loads((tmp_path / "scores.json").read_text())
        assert got["dice"] == pytest.approx(val_dice, abs=1e-4)
        assert got["normalisation"] == "dataset"
