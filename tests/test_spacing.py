"""Voxel spacing: cases of different spacings are resampled to the median for training (in
memory and through the cache alike), the model records the spacing it was trained at
(checkpoint, INFERENCE, meta.json), and prediction resamples each input to it and its mask
back onto the input's own grid, affine kept."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas_attn.data import DataConfig, check_folder, clear_cache, load_data
from nas_attn.data import resample as RS
from nas_attn.errors import DataError
from volumes import write_nifti


def _nifti(path: Path, arr: np.ndarray, spacing) -> None:
    write_nifti(path, arr, spacing)


def _ball(shape, spacing, radius_mm=4.0):
    """A ball of `radius_mm` at the centre, in voxels of `spacing` mm."""
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)],
                        indexing="ij")
    return (sum(g ** 2 for g in grids) < radius_mm ** 2).astype(np.uint8)


def _folder(root: Path, spacings) -> Path:
    """One case per spacing, each the same 24 mm cube holding the same ball."""
    rng = np.random.default_rng(0)
    for i, sp in enumerate(spacings):
        shape = tuple(int(round(24 / s)) for s in sp)
        mask = _ball(shape, sp)
        img = (mask * 100 + rng.normal(50, 5, shape)).astype(np.float32)
        _nifti(root / "images" / f"c{i}.nii.gz", img, sp)
        _nifti(root / "masks" / f"c{i}.nii.gz", mask, sp)
    return root


def test_plan_target_is_the_median_and_refuses_strangers():
    assert RS.plan_target([(1.0, 1.0, 1.0)] * 3, ["a", "b", "c"]) is None
    assert RS.plan_target([(1.0, 1.0, 1.0), (1.005, 1.0, 1.0)], ["a", "b"]) is None
    assert RS.plan_target([(1.0, 1.0, 2.0), (2.0, 1.0, 3.0), (1.5, 1.0, 5.0)],
                          ["a", "b", "c"]) == (1.5, 1.0, 3.0)
    with pytest.raises(DataError, match=r"^c: voxel spacing 1×1×30 mm is 10\.0 times"):
        RS.plan_target([(1.0, 1.0, 3.0), (1.0, 1.0, 3.0), (1.0, 1.0, 30.0)], ["a", "b", "c"])
    with pytest.raises(DataError, match="^b: no voxel spacing"):
        RS.plan_target([(1.0, 1.0, 3.0), None], ["a", "b"])


def test_resampling_keeps_the_physical_object():
    sp, target = (0.5, 1.0, 2.0), (1.0, 1.0, 1.0)
    mask = _ball((48, 24, 12), sp)
    out = RS.resample_labels(mask, sp, target)
    assert out.shape == (24, 24, 24)
    # the same ball, drawn directly at the target spacing, up to its boundary voxels
    want = _ball((24, 24, 24), target)
    assert abs(int(out.sum()) - int(want.sum())) < 0.15 * want.sum()
    img = RS.resample_image(mask[None].astype(np.float32) * 10, sp, target)
    assert img.shape == (1, 24, 24, 24) and img.dtype == np.float32
    assert abs(img[0, 12, 12, 12] - 10) < 1 and abs(img[0, 0, 0, 0]) < 1
    # an anisotropic target: the coarse axis with nearest neighbours, no value outside the input
    aniso = RS.resample_image(np.arange(8.0).reshape(1, 1, 1, 8), (1, 1, 8), (1, 1, 4))
    assert set(np.unique(aniso)) <= set(range(8))


@pytest.mark.parametrize("cache", ["off", "on"])
def test_training_data_is_resampled_to_the_median_spacing(tmp_path, cache):
    spacings = [(1.0, 1.0, 1.0), (1.0, 1.0, 2.0), (1.0, 1.0, 2.0), (0.5, 1.0, 2.0)]
    src = _folder(tmp_path / "d", spacings)
    clear_cache()
    tr, va = load_data(DataConfig(source=str(src), cache=cache, val_fraction=0.25))
    target = (1.0, 1.0, 2.0)
    assert all(RS.close(s, target) for s in tr.spacings + va.spacings)
    assert {tuple(m.shape) for m in tr.masks + va.masks} == {(24, 24, 12)}
    for m in tr.masks + va.masks:  # the ball is where it was, at the new spacing
        m = np.asarray(m)
        assert m[12, 12, 6] == 1 and m[0, 0, 0] == 0
    rep = check_folder(src)
    assert rep.ok and any("resamples them to the median 1×1×2 mm" in n for n in rep.notes)


def test_a_spacing_far_from_the_median_is_one_line(tmp_path, cli):
    src = _folder(tmp_path / "d", [(1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (1.0, 1.0, 12.0)])
    clear_cache()
    code, out = cli("data", "check", str(src))
    assert code == 1 and "masks/c2.nii.gz: voxel spacing 1×1×12 mm is 12.0 times the median" \
        in out and "Traceback" not in out


def test_the_model_records_its_spacing_and_predicts_on_each_inputs_grid(tmp_path, cli,
                                                                        monkeypatch):
    import nibabel as nib

    from nas_attn.architecture.description import UNetArch
    from nas_attn.inference.prediction import load_model

    src = _folder(tmp_path / "d", [(1.0, 1.0, 2.0)] * 3 + [(1.0, 1.0, 1.0)])
    arch = tmp_path / "arch.json"
    arch.write_text(UNetArch(spatial_dims=3, classes=2, depth=2, widths=(4, 8, 8)).to_json())
    code, out = cli("train", "--arch", str(arch), "--data", str(src), "--epochs", "1",
                    "--out", str(tmp_path / "t"), "--runs-dir", str(tmp_path / "runs"))
    assert code == 0, out
    loaded = load_model(tmp_path / "t")
    assert loaded.spacing == (1.0, 1.0, 2.0)
    code, out = cli("export", "--checkpoint", str(tmp_path / "t"), "--out", str(tmp_path / "e"),
                    "--runs-dir", str(tmp_path / "runs"))
    assert code == 0, out
    meta = json.loads((tmp_path / "e" / "meta.json").read_text())
    assert meta["inference"]["spacing"] == [1.0, 1.0, 2.0]
    assert "'spacing': [1.0, 1.0, 2.0]" in (tmp_path / "e" / "model.py").read_text()
    assert load_model(tmp_path / "e").spacing == (1.0, 1.0, 2.0)
    # an input at 0.5 mm: its mask comes back at 0.5 mm, on its grid, with its affine
    sp = (0.5, 0.5, 0.5)
    inp = tmp_path / "in" / "fine.nii.gz"
    _nifti(inp, (_ball((48, 48, 48), sp) * 100 + 50).astype(np.float32), sp)
    seen = []
    real = RS.resample_image
    monkeypatch.setattr(RS, "resample_image", lambda img, s, t: seen.append(
        (img.shape, tuple(s), tuple(t))) or real(img, s, t))
    code, out = cli("predict", "--model", str(tmp_path / "e"), str(inp), "--out",
                    str(tmp_path / "pred"))
    assert code == 0, out
    assert seen == [((1, 48, 48, 48), sp, (1.0, 1.0, 2.0))]  # to 24 x 24 x 12 for the model
    res = nib.load(str(tmp_path / "pred" / "fine.nii.gz"))
    assert res.shape == (48, 48, 48)
    np.testing.assert_allclose(res.affine, nib.load(str(inp)).affine)


@pytest.mark.parametrize("cache", ["off", "on"])
def test_a_separate_test_folder_is_brought_to_the_training_spacing(tmp_path, cache):
    from nas_attn.data import load_test

    src = _folder(tmp_path / "d", [(1.0, 1.0, 2.0)] * 3)
    test = _folder(tmp_path / "t", [(1.0, 1.0, 1.0)] * 2)
    clear_cache()
    cfg = DataConfig(source=str(src), test_source=str(test), cache=cache)
    tr, _ = load_data(cfg)
    te = load_test(cfg)
    assert all(RS.close(s, (1.0, 1.0, 2.0)) for s in te.spacings)
    assert {tuple(np.asarray(m).shape) for m in te.masks} == {tuple(tr.shapes[0])}
