"""Tests for nas_attn.data: folder loading/checking, splits, builtin set, augmentation, patches,
sliding-window inference, the per-process caches and the `data check` CLI function."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas_attn.data import (
    AugmentConfig,
    DataConfig,
    SegData,
    build_augment,
    check_folder,
    load_data,
    load_folder,
    make_builtin,
    make_loaders,
    readers,
    sliding_window_predict,
)
from nas_attn.data.loaders import PatchDataset
from nas_attn.errors import DataError

# --------------------------------------------------------------------------- helpers


def _blobs(shape, rng, classes=2, n=3):
    """A mask of a few axis-aligned boxes with ids 1..classes-1."""
    m = np.zeros(shape, np.uint8)
    for k in range(n):
        lo = [int(rng.integers(0, s // 2)) for s in shape]
        sz = [int(rng.integers(s // 6, s // 3)) for s in shape]
        m[tuple(slice(a, a + b) for a, b in zip(lo, sz))] = 1 + k % (classes - 1)
    return m


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)


def _nifti(path: Path, arr: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))


def _folder_2d(root: Path, n=4, size=(32, 32), classes=2, rgb=False, scale255=True, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        m = _blobs(size, rng, classes)
        img = (m * 60 + rng.integers(0, 40, size)).astype(np.uint8)
        if rgb:
            img = np.stack([img, 255 - img, np.full(size, 7, np.uint8)], -1)
        _png(root / "images" / f"s{i}.png", img)
        stored = (m > 0).astype(np.uint8) * 255 if (scale255 and classes == 2) else m
        _png(root / "masks" / f"s{i}.png", stored)
    return root


# --------------------------------------------------------------------------- folders


def test_png_binary_0_255(tmp_path):
    root = _folder_2d(tmp_path / "ds", n=3)
    d = load_folder(root)
    assert isinstance(d, SegData) and len(d) == 3
    assert (d.spatial_dims, d.in_channels, d.classes, d.aux_channels) == (2, 1, 2, 0)
    assert d.names == ["s0", "s1", "s2"]
    for im, m in zip(d.images, d.masks):
        assert im.dtype == np.float32 and im.shape == (1, 32, 32)
        assert 0.0 <= im.min() and im.max() <= 1.0
        assert m.dtype == np.int64 and set(np.unique(m)) <= {0, 1}
    raw = np.asarray(Image.open(root / "masks" / "s0.png"))
    np.testing.assert_array_equal(d.masks[0], raw // 255)
    rep = check_folder(root)
    assert rep.ok and rep.mask_kind == "binary {0,255}" and rep.classes == 2
    assert abs(sum(rep.class_shares.values()) - 1) < 1e-9


def test_png_multiclass_rgb(tmp_path):
    root = _folder_2d(tmp_path / "ds", n=3, classes=4, rgb=True)
    d = load_folder(root)
    assert d.in_channels == 3 and d.classes == 4
    assert d.images[0].shape == (3, 32, 32)
    raw = np.asarray(Image.open(root / "images" / "s0.png"))
    # channel order kept: channel 1 is the inverse of channel 0, channel 2 constant -> 0
    assert np.corrcoef(d.images[0][0].ravel(), raw[..., 0].ravel())[0, 1] > 0.99
    assert np.corrcoef(d.images[0][1].ravel(), raw[..., 0].ravel())[0, 1] < -0.99
    assert d.images[0][2].max() == 0.0
    rep = check_folder(root)
    assert rep.mask_kind.startswith("class ids") and set(rep.class_pixels) <= {0, 1, 2, 3}


def test_npy_and_tiff_channel_rules_2d(tmp_path):
    import tifffile

    root = tmp_path / "ds"
    rng = np.random.default_rng(1)
    m = _blobs((24, 40), rng)
    base = rng.random((2, 24, 40)).astype(np.float32)
    _npy(root / "images" / "chw.npy", base)
    _npy(root / "images" / "hwc.npy", np.moveaxis(base, 0, -1))
    (root / "images").mkdir(exist_ok=True)
    tifffile.imwrite(root / "images" / "pages.tif", base)  # two pages = two channels in 2D
    for s in ("chw", "hwc", "pages"):
        _png(root / "masks" / f"{s}.png", m)
    d = load_folder(root)
    assert d.spatial_dims == 2 and d.in_channels == 2
    for im in d.images:
        assert im.shape == (2, 24, 40)
        np.testing.assert_allclose(im, d.images[0], atol=1e-6)


def test_nifti_3d(tmp_path):
    root = tmp_path / "vol"
    rng = np.random.default_rng(2)
    for i in range(2):
        m = _blobs((16, 16, 12), rng, classes=3)
        _nifti(root / "images" / f"v{i}.nii.gz", (m * 100 + rng.normal(0, 5, m.shape)).astype(np.float32))
        _nifti(root / "masks" / f"v{i}.nii.gz", m)
    d = load_folder(root)
    assert d.spatial_dims == 3 and d.classes == 3 and d.in_channels == 1
    assert d.images[0].shape == (1, 16, 16, 12) and d.masks[0].shape == (16, 16, 12)
    assert d.names == ["v0", "v1"]


def test_npy_3d_with_aux(tmp_path):
    root = tmp_path / "vol"
    rng = np.random.default_rng(3)
    for i in range(3):
        m = _blobs((8, 16, 16), rng)
        _npy(root / "images" / f"v{i}.npy", (m * 3 + rng.random(m.shape)).astype(np.float32))
        _npy(root / "masks" / f"v{i}.npy", m)
        _npy(root / "aux" / f"v{i}.npy", rng.random((2, 8, 16, 16)).astype(np.float32))
    d = load_folder(root)
    assert d.spatial_dims == 3 and d.aux_channels == 2 and len(d.aux) == 3
    assert d.aux[0].shape == (2, 8, 16, 16) and d.images[0].shape == (1, 8, 16, 16)
    # spatial_dims may be forced; a 3D mask cannot be read as 2D
    with pytest.raises(DataError, match="not 2D"):
        load_folder(root, spatial_dims=2)


def test_check_reports_every_problem_at_once(tmp_path):
    root = tmp_path / "bad"
    rng = np.random.default_rng(4)
    gray = lambda: (rng.random((16, 16)) * 255).astype(np.uint8)
    ok_mask = np.zeros((16, 16), np.uint8)
    ok_mask[4:9, 4:9] = 255
    for s in ("good1", "good2"):
        _png(root / "images" / f"{s}.png", gray())
        _png(root / "masks" / f"{s}.png", ok_mask)
    _png(root / "images" / "nomask.png", gray())                       # missing mask
    _png(root / "masks" / "orphanmask.png", ok_mask)                   # mask without image
    _png(root / "images" / "sizemismatch.png", gray())                 # size mismatch
    _png(root / "masks" / "sizemismatch.png", np.zeros((16, 12), np.uint8))
    (root / "images" / "garbled.png").write_bytes(b"not a png at all")  # unreadable
    _png(root / "masks" / "garbled.png", ok_mask)
    _png(root / "images" / "greyvalues.png", gray())                   # mask values {0,128,255}
    bad = ok_mask.copy()
    bad[0, 0] = 128
    _png(root / "masks" / "greyvalues.png", bad)
    _png(root / "images" / "fractional.png", gray())                   # non-integer mask
    _npy(root / "masks" / "fractional.npy", np.full((16, 16), 0.5, np.float32))
    _png(root / "images" / "colourimg.png", np.stack([gray()] * 3, -1))  # mixed channels
    _png(root / "masks" / "colourimg.png", ok_mask)
    (root / "images" / "notes.txt").write_text("hello")                # unsupported file
    for s in ("good1", "good2", "sizemismatch", "garbled", "greyvalues", "fractional"):
        _npy(root / "aux" / f"{s}.npy", np.zeros((16, 16), np.float32))
    _npy(root / "aux" / "colourimg.npy", np.zeros((16, 8), np.float32))  # aux size mismatch
    _npy(root / "aux" / "strayaux.npy", np.zeros((16, 16), np.float32))  # aux without image
    (root / "splits.json").write_text(json.dumps({"train": ["good1", "ghost"], "val": ["good2"]}))

    rep = check_folder(root)
    assert not rep.ok
    text = "\n".join(rep.problems)
    expected = {
        "nomask.png": "no mask", "orphanmask.png": "no image", "sizemismatch": "does not match",
        "garbled.png": "unreadable", "greyvalues.png": "128", "fractional.npy": "non-integer",
        "colourimg": "mixed channel counts", "notes.txt": "unsupported", "strayaux.npy": "no image",
        "aux/colourimg.npy": "does not match", "ghost": "no such image", "nomask.png: no aux": "",
    }
    for name, what in expected.items():
        hits = [p for p in rep.problems if name in p and what in p]
        assert hits, f"no problem mentions {name!r} with {what!r}:\n{text}"
    with pytest.raises(DataError) as exc:
        load_folder(root)
    for name in ("nomask.png", "orphanmask.png", "garbled.png", "greyvalues.png", "ghost"):
        assert name in str(exc.value)


def test_missing_subfolders(tmp_path):
    (tmp_path / "empty").mkdir()
    rep = check_folder(tmp_path / "empty")
    assert any("images/" in p for p in rep.problems) and any("masks/" in p for p in rep.problems)
    assert "not found" in check_folder(tmp_path / "nowhere").problems[0]


# --------------------------------------------------------------------------- splits


def test_explicit_splits_json_txt_and_pattern(tmp_path):
    root = _folder_2d(tmp_path / "ds", n=5)
    (root / "splits.json").write_text(json.dumps({"train": ["s0", "s1", "s2"], "val": ["s3.png", "s4"]}))
    tr, va = load_data(DataConfig(source=str(root)))
    assert tr.names == ["s0", "s1", "s2"] and va.names == ["s3", "s4"]
    assert check_folder(root).split_source == "splits.json"

    root2 = _folder_2d(tmp_path / "ds2", n=5)
    (root2 / "val.txt").write_text("# held out\ns1\n\ns4\n")
    tr, va = load_data(DataConfig(source=str(root2)))
    assert tr.names == ["s0", "s2", "s3"] and va.names == ["s1", "s4"]

    # an explicit pattern wins over the folder's own lists
    tr, va = load_data(DataConfig(source=str(root2), val_pattern="s[03]"))
    assert va.names == ["s0", "s3"] and len(tr) == 3
    with pytest.raises(DataError, match="matches none"):
        load_data(DataConfig(source=str(root2), val_pattern="zzz*"))


def test_split_overlap_is_a_problem(tmp_path):
    root = _folder_2d(tmp_path / "ds", n=3)
    (root / "train.txt").write_text("s0\ns1\n")
    (root / "val.txt").write_text("s1\ns2\n")
    rep = check_folder(root)
    assert any("in both" in p and "s1" in p for p in rep.problems)


def test_random_split_cached_and_seeded():
    cfg = DataConfig(source="builtin", builtin_n=20, builtin_size=32, seed=3)
    tr, va = load_data(cfg)
    assert len(va) == 5 and len(tr) == 15 and not set(tr.names) & set(va.names)
    tr2, va2 = load_data(DataConfig(source="builtin", builtin_n=20, builtin_size=32, seed=3,
                                    patch_size=[16], augment=AugmentConfig(flips=False)))
    assert tr2 is tr and va2 is va  # loader/augment settings do not re-split or regenerate
    _, va3 = load_data(DataConfig(source="builtin", builtin_n=20, builtin_size=32, seed=4))
    assert va3.names != va.names


def test_data_config_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="val_fraction"):
        DataConfig(val_fraction=1.5)
    with pytest.raises(ValidationError, match="extra"):
        DataConfig(sauce="builtin")
    with pytest.raises(ValidationError, match="patch_size"):
        DataConfig(source="builtin3d", patch_size=[16, 16])
    with pytest.raises(ValidationError, match="spatial_dims"):
        DataConfig(spatial_dims=4)
    with pytest.raises(ValidationError, match="scale"):
        AugmentConfig(scale=(1.2, 0.8))
    with pytest.raises(DataError, match="no such folder"):
        load_data(DataConfig(source="/definitely/not/here"))


# --------------------------------------------------------------------------- builtin


def test_builtin_deterministic_and_classes():
    a = make_builtin(2, n=6, size=32, seed=5)
    b = make_builtin(2, n=6, size=32, seed=5)
    c = make_builtin(2, n=6, size=32, seed=6)
    for x, y in zip(a.images + a.masks, b.images + b.masks):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(a.images, c.images))
    assert a.classes == 3 and a.class_names == ["background", "target", "distractor"]
    assert a.images[0].shape == (1, 32, 32) and a.images[0].dtype == np.float32
    assert set(np.unique(np.stack(a.masks))) == {0, 1, 2}
    # a larger n keeps the first samples
    np.testing.assert_array_equal(make_builtin(2, n=8, size=32, seed=5).masks[5], a.masks[5])

    v = make_builtin(3, n=2, size=16, seed=0, aux=True)
    assert v.spatial_dims == 3 and v.images[0].shape == (1, 16, 16, 16)
    assert v.aux_channels == 1 and v.aux[0].shape == (1, 16, 16, 16)


def test_builtin_cue_decides_the_class():
    """Bright cue -> discs are class 1; dark cue -> squares are class 1 (the documented rule)."""
    from scipy import ndimage

    d = make_builtin(2, n=24, size=64, seed=0)
    cs = 64 // 8
    checked = 0
    for im, m in zip(d.images, d.masks):
        corners = [im[0, :cs, :cs], im[0, :cs, -cs:], im[0, -cs:, :cs], im[0, -cs:, -cs:]]
        means = [float(c.mean()) for c in corners]
        bright = max(means) > 0.85
        dark = min(means) < 0.15
        assert bright != dark, means
        lab, _n = ndimage.label(m > 0)
        for obj in ndimage.find_objects(lab):
            region = m[obj]
            cls = int(region.max())
            fill = (region > 0).mean()  # square ~1.0, disc ~pi/4
            is_disc = fill < 0.9
            assert cls == (1 if is_disc == bright else 2)
            checked += 1
    assert checked > 50


# --------------------------------------------------------------------------- augmentation


def _aligned_fraction(img: np.ndarray, mask: np.ndarray) -> float:
    return float(((img > 0.5) == (mask > 0)).mean())


@pytest.mark.parametrize("dims", [2, 3])
def test_augment_keeps_image_and_mask_aligned(dims):
    rng = np.random.default_rng(0)
    shape = (32, 32) if dims == 2 else (16, 16, 16)
    geo = AugmentConfig(intensity=False, affine=False, elastic=False)
    warp = AugmentConfig(intensity=False, affine=True, p_affine=1.0, elastic=True, p_elastic=1.0)
    for cfg, exact in ((geo, True), (warp, False)):
        aug = build_augment(cfg, dims, patch_shape=shape, seed=1)
        for _ in range(6):
            m = _blobs(shape, rng, n=2)
            img = np.stack([m, m], -1).astype(np.float32)  # two channels, both = mask
            out = (aug(image=img, mask=m) if dims == 2 else aug(volume=img, mask3d=m))
            oi = out["image" if dims == 2 else "volume"]
            om = out["mask" if dims == 2 else "mask3d"]
            assert oi.shape == img.shape and om.shape == m.shape
            for ch in range(2):
                if exact:
                    np.testing.assert_array_equal(oi[..., ch] > 0.5, om > 0)
                else:
                    assert _aligned_fraction(oi[..., ch], om) > 0.97
            assert om.sum() > 0


def test_augment_through_patch_dataset_keeps_aux_aligned():
    rng = np.random.default_rng(1)
    for dims, shape in ((2, (40, 40)), (3, (16, 20, 20))):
        masks = [_blobs(shape, rng, classes=3).astype(np.int64) for _ in range(3)]
        data = SegData(images=[(m > 0)[None].astype(np.float32) for m in masks], masks=masks,
                       names=["a", "b", "c"], spatial_dims=dims, in_channels=1, classes=3,
                       aux=[np.stack([m > 0, m == 2]).astype(np.float32) for m in masks], aux_channels=2)
        patch = (24, 24) if dims == 2 else (16, 16, 16)
        aug = build_augment(AugmentConfig(intensity=False), dims, patch_shape=patch, seed=0)
        ds = PatchDataset(data, patch, fg_oversample=0.5, augment=aug, length=12, seed=0)
        for i in range(12):
            it = ds[i]
            x, m, a = it["image"].numpy(), it["mask"].numpy(), it["aux"].numpy()
            assert x.shape == (1,) + patch and a.shape == (2,) + patch and m.shape == patch
            assert _aligned_fraction(x[0], m) > 0.97
            assert _aligned_fraction(a[1], m == 2) > 0.97


def test_intensity_only_touches_image():
    aug = build_augment(AugmentConfig(flips=False, rot90=False, affine=False, intensity=True,
                                      p_intensity=1.0), 2,
                        patch_shape=(16, 16), seed=0)
    img = np.full((16, 16, 1), 0.5, np.float32)
    m = np.ones((16, 16), np.uint8)
    out = aug(image=img, mask=m)
    assert not np.allclose(out["image"], img)
    np.testing.assert_array_equal(out["mask"], m)


# --------------------------------------------------------------------------- loaders


def test_patch_sampler_shapes_and_foreground_oversampling():
    mask = np.zeros((128, 128), np.int64)
    mask[60:62, 90:92] = 1  # a tiny target: a random 16² patch rarely holds it (~2%)
    data = SegData(images=[mask[None].astype(np.float32)], masks=[mask], names=["x"],
                   spatial_dims=2, in_channels=1, classes=2)
    hit = {}
    for p in (0.0, 0.5, 1.0):
        ds = PatchDataset(data, (16, 16), fg_oversample=p, augment=None, length=400, seed=0)
        hits = [bool(ds[i]["mask"].any()) for i in range(400)]
        hit[p] = float(np.mean(hits))
        assert ds[0]["image"].shape == (1, 16, 16) and ds[0]["mask"].dtype == torch.uint8
    assert hit[0.0] < 0.08
    assert 0.4 < hit[0.5] < 0.65
    assert hit[1.0] == 1.0


def test_patch_larger_than_image_is_padded():
    d = make_builtin(2, n=2, size=16, seed=0)
    ds = PatchDataset(d, (24, 20), augment=None, seed=0)
    it = ds[1]
    assert it["image"].shape == (1, 24, 20) and it["mask"].shape == (24, 20)


@pytest.mark.parametrize("dims,size,patch", [(2, 32, [24]), (3, 16, None)])
def test_make_loaders(dims, size, patch):
    cfg = DataConfig(source="builtin3d" if dims == 3 else "builtin", builtin_n=8, builtin_size=size,
                     builtin_aux=True, patch_size=patch)
    tr, va = load_data(cfg)
    tl, vl = make_loaders(tr, va, cfg, batch_size=3, seed=0, samples_per_epoch=7)
    batches = list(tl)
    assert len(batches) == 2  # 7 samples, batch 3, last partial batch dropped
    ps = (24, 24) if patch else (size,) * 3
    b = batches[0]
    assert b["image"].shape == (3, 1) + ps and b["image"].dtype == torch.float32
    assert b["mask"].shape == (3,) + ps and b["mask"].dtype == torch.uint8  # int64 on the device
    assert b["aux"].shape == (3, 1) + ps
    vb = list(vl)
    assert len(vb) == len(va) == 2
    assert vb[0]["image"].shape == (1, 1) + (size,) * dims and "aux" in vb[0]
    # seeded: a second pair of loaders yields the same first batch
    tl2, _ = make_loaders(tr, va, cfg, batch_size=3, seed=0, samples_per_epoch=7)
    b2 = next(iter(tl2))
    for k in b:
        assert torch.equal(b[k], b2[k])


def test_make_loaders_mixed_sizes_use_min(tmp_path):
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    for i, size in enumerate([(32, 40), (36, 32), (40, 40)]):
        m = _blobs(size, rng)
        _png(root / "images" / f"s{i}.png", (m * 200).astype(np.uint8))
        _png(root / "masks" / f"s{i}.png", m)
    cfg = DataConfig(source=str(root), val_pattern="s2", augment=AugmentConfig(affine=False))
    tr, va = load_data(cfg)
    tl, vl = make_loaders(tr, va, cfg, batch_size=2, seed=0)
    assert next(iter(tl))["image"].shape == (2, 1, 32, 32)
    assert next(iter(vl))["mask"].shape == (1, 40, 40)


# --------------------------------------------------------------------------- sliding window


@pytest.mark.parametrize("dims", [2, 3])
def test_sliding_window_matches_whole_image(dims):
    torch.manual_seed(0)
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(2, 3, 1)
    shape = (45, 38) if dims == 2 else (20, 17, 23)
    x = torch.randn((2, 2) + shape)
    with torch.no_grad():
        whole = conv(x)
    patch = [16] * dims
    tiled = sliding_window_predict(conv, x, patch, overlap=0.5, batch=3)
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)

    calls = []
    conv.register_forward_hook(lambda *a: calls.append(1))
    small = torch.randn((1, 2) + (8,) * dims)
    sliding_window_predict(conv, small, patch)
    assert len(calls) == 1


def test_sliding_window_passes_aux():
    class WithAux(torch.nn.Module):
        def forward(self, x, aux=None):
            return x * 2 + aux

    x, a = torch.randn(1, 1, 40, 40), torch.randn(1, 1, 40, 40)
    y = sliding_window_predict(WithAux(), x, (16, 16), aux=a, overlap=0.25)
    torch.testing.assert_close(y, x * 2 + a, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- caches


def test_load_folder_cache_decodes_once(tmp_path, monkeypatch):
    root = _folder_2d(tmp_path / "ds", n=3)
    calls = []
    real = readers.read_array
    monkeypatch.setattr(readers, "read_array", lambda p, role="image": calls.append(p) or real(p, role))
    d1 = load_folder(root)
    n = len(calls)
    assert n == 6
    d2 = load_folder(str(root) + "/")
    assert d2 is d1 and len(calls) == n
    assert check_folder(root).ok and len(calls) == n
    tr1, _ = load_data(DataConfig(source=str(root)))
    tr2, _ = load_data(DataConfig(source=str(root)))
    assert tr1 is tr2 and len(calls) == n
    # a changed file invalidates the entry
    p = root / "images" / "s0.png"
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    d3 = load_folder(root)
    assert d3 is not d1 and len(calls) == 2 * n


# --------------------------------------------------------------------------- CLI


def test_cli_data_check(tmp_path):
    from rich.console import Console

    from nas_attn.cli.data import data_check

    good = _folder_2d(tmp_path / "good", n=2, classes=3)
    con = Console(record=True, width=120)
    assert data_check(good, con) == 0
    out = con.export_text()
    assert "2 images, 2 masks" in out and "classes (3)" in out and "% of pixels" in out

    bad = _folder_2d(tmp_path / "bad", n=2)
    (bad / "masks" / "s1.png").unlink()
    _png(bad / "masks" / "[weird].png", np.zeros((32, 32), np.uint8))
    con = Console(record=True, width=200)
    assert data_check(bad, con) == 1
    out = con.export_text()
    assert "images/s1.png: no mask" in out and "masks/[weird].png: no image" in out


def test_tiff_3d_and_colour_mask_npy(tmp_path):
    import tifffile

    root = tmp_path / "tif"
    rng = np.random.default_rng(5)
    for i in range(2):
        m = _blobs((6, 20, 20), rng)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "images" / f"v{i}.tif", (m * 50 + rng.integers(0, 9, m.shape)).astype(np.uint16))
        tifffile.imwrite(root / "masks" / f"v{i}.tif", m)
    d = load_folder(root)
    assert d.spatial_dims == 3 and d.images[0].shape == (1, 6, 20, 20)

    # an (H, W, 3) grey-as-colour mask stored as .npy is a 2D mask, not 3 slices
    root2 = tmp_path / "col"
    m = _blobs((20, 24), rng)
    _png(root2 / "images" / "a.png", (m * 90).astype(np.uint8))
    _npy(root2 / "masks" / "a.npy", np.stack([m] * 3, -1))
    _png(root2 / "images" / "b.png", (m * 90).astype(np.uint8))
    _npy(root2 / "masks" / "b.npy", m)
    d2 = load_folder(root2)
    assert d2.spatial_dims == 2 and d2.masks[0].shape == (20, 24)


def test_loader_workers_are_seeded():
    cfg = DataConfig(builtin_n=8, builtin_size=32, patch_size=[24], num_workers=1)
    tr, va = load_data(cfg)
    firsts = []
    for seed in (0, 0, 1):
        tl, _ = make_loaders(tr, va, cfg, batch_size=2, seed=seed)
        firsts.append(next(iter(tl))["image"])
    assert torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[0], firsts[2])


def test_reused_loader_reseeded_draws_like_a_fresh_one():
    data = make_builtin(2, n=6, size=32, seed=3)
    cfg = DataConfig(augment={"flips": True, "rot90": True})

    def first_batch(loader):
        return next(iter(loader))

    fresh = make_loaders(data, data, cfg, batch_size=4, seed=7)[0]
    a = first_batch(fresh)
    reused = make_loaders(data, data, cfg, batch_size=4, seed=7)[0]
    for _ in range(2):  # advance its streams as a finished trial would have
        first_batch(reused)
    reused.generator.manual_seed(7)
    reused.dataset.reseed(7)
    b = first_batch(reused)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
