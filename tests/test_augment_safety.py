"""Augmentation never changes what a label means: lateralised classes block flips and turns,
declared mirror pairs swap labels under a flip, symmetric data keeps every flip."""

from __future__ import annotations

import numpy as np
import pytest

from nas_attn.data import (
    AugmentConfig,
    DataConfig,
    SegData,
    build_augment,
    make_loaders,
    symmetry_plan,
)
from nas_attn.data.augment import lateral_classes, plan_symmetry
from nas_attn.errors import DataError

S = 32


def _sided(n: int = 6, seed: int = 0) -> SegData:
    """Class 1 only in the left quarter, class 2 only in the right quarter, class 3 anywhere;
    the image shows every class with its own intensity."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        m = np.zeros((S, S), np.int64)
        r = int(rng.integers(4, 14))
        m[r:r + 12, 2:8] = 1
        m[r:r + 12, S - 8:S - 2] = 2
        c = int(rng.integers(8, 20))
        m[c:c + 4, 12:20] = 3
        images.append((m / 4.0).astype(np.float32)[None])
        masks.append(m)
    return SegData(images=images, masks=masks, names=[f"s{i}" for i in range(n)], spatial_dims=2,
                   in_channels=1, classes=4)


def _symmetric(n: int = 6, seed: int = 0) -> SegData:
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        m = np.zeros((S, S), np.int64)
        for _ in range(6):
            y, x = rng.integers(0, S - 4, 2)
            m[y:y + 4, x:x + 4] = 1
        images.append(m.astype(np.float32)[None])
        masks.append(m)
    return SegData(images=images, masks=masks, names=[f"s{i}" for i in range(n)], spatial_dims=2,
                   in_channels=1, classes=2)


def test_lateral_classes_found_per_axis():
    data = _sided()
    lat = lateral_classes(data.masks, data.classes, 0.9)
    assert lat.get(1) == [1, 2]          # W: class 1 left, class 2 right
    assert 3 not in lat.get(1, [])       # the centred class is not lateral
    assert lateral_classes(_symmetric(20).masks, 2, 0.9) == {}


def test_lateralised_classes_never_change_side():
    """Many augmented patches with every geometric transform on: class 1 stays left, 2 right."""
    data = _sided()
    cfg = DataConfig(augment=AugmentConfig(affine=True, p_affine=1.0, intensity=True))
    plan = symmetry_plan(data, cfg)
    assert 1 not in plan.flip_axes and plan.lateral[1] == [1, 2]
    assert "no flips along W" in plan.note and "no 90° turns" in plan.note
    loader, _ = make_loaders(data, data, cfg, batch_size=8, seed=0, samples_per_epoch=400)
    assert loader.dataset.symmetry is not None
    seen = 0
    cols = np.arange(S)[None, None, :]
    for batch in loader:
        m = batch["mask"].numpy()
        left = np.where(m == 1, cols, -1).max()
        right = np.where(m == 2, cols, S).min()
        if (m == 1).any():
            assert left < S // 2, "class 1 (left only) appeared on the right"
            seen += 1
        if (m == 2).any():
            assert right >= S // 2, "class 2 (right only) appeared on the left"
    assert seen > 10


def test_without_lateral_check_flips_move_classes():
    """The test above can fail: with the check off the same pipeline puts class 1 on the right."""
    data = _sided()
    cfg = DataConfig(augment=AugmentConfig(lateral_check=False, affine=False, intensity=False))
    loader, _ = make_loaders(data, data, cfg, batch_size=8, seed=0, samples_per_epoch=200)
    cols = np.arange(S)[None, None, :]
    moved = any((np.where(b["mask"].numpy() == 1, cols, -1) >= S // 2).any() for b in loader)
    assert moved


def test_mirror_pairs_swap_labels_and_flip_pixels_together():
    data = _sided()
    aug_cfg = AugmentConfig(mirror_pairs=[[1, 2]], affine=False, intensity=False)
    plan = plan_symmetry(aug_cfg, data.masks, 2, data.classes)
    assert 1 in plan.flip_axes and 1 in plan.luts
    assert "swaps the mirror pairs 1<->2" in plan.note
    aug = build_augment(aug_cfg, 2, patch_shape=(S, S), seed=3, plan=plan)
    img = data.images[0][0]
    mask = data.masks[0].astype(np.uint8)
    flipped_w = 0
    for _ in range(100):
        out = aug(image=np.ascontiguousarray(img[..., None]), mask=mask)
        oi, om = out["image"][..., 0], out["mask"].astype(np.int64)
        labels_in_image = np.rint(oi * 4).astype(np.int64)  # the label each pixel came from
        swapped = np.where(labels_in_image == 1, 2, np.where(labels_in_image == 2, 1, labels_in_image))
        w_flip = np.array_equal(oi, np.flip(img, 1)) or np.array_equal(oi, np.flip(img, (0, 1)))
        if w_flip:
            flipped_w += 1
            np.testing.assert_array_equal(om, swapped)
        else:
            np.testing.assert_array_equal(om, labels_in_image)
        cols = np.arange(S)[None, :]
        assert np.where(om == 1, cols, -1).max() < S // 2
        assert np.where(om == 2, cols, S).min() >= S // 2
    assert 20 < flipped_w < 80


def test_symmetric_binary_data_keeps_all_flips_and_turns():
    data = _symmetric()
    plan = symmetry_plan(data, DataConfig())
    assert plan.flip_axes == (0, 1) and plan.luts == {} and plan.note == ""
    aug = build_augment(AugmentConfig(), 2, patch_shape=(S, S), seed=0, plan=plan)
    names = {type(t).__name__ for t in aug.transforms}
    assert {"HorizontalFlip", "VerticalFlip", "RandomRotate90"} <= names


def test_3d_lateral_axis_blocks_its_flip_only():
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(3):
        m = np.zeros((8, 16, 16), np.int64)
        m[:, 4:12, 1:6] = 1   # left along W only
        z = int(rng.integers(0, 4))
        m[z:z + 4, 6:10, 6:10] = 2
        masks.append(m)
    cfg = AugmentConfig()
    plan = plan_symmetry(cfg, masks, 3, 3)
    assert plan.flip_axes == (0, 1)
    aug = build_augment(cfg, 3, patch_shape=(8, 16, 16), seed=0, plan=plan)
    names = [type(t).__name__ for t in aug.transforms]
    assert "CubicSymmetry" not in names and "RandomRotate90" not in names
    vol = np.zeros((8, 16, 16, 1), np.float32)
    for _ in range(30):
        out = aug(volume=vol, mask3d=masks[0].astype(np.uint8))
        assert (out["mask3d"][..., 8:] != 1).all()


def test_mirror_pairs_validated():
    with pytest.raises(ValueError, match="two different foreground"):
        AugmentConfig(mirror_pairs=[[0, 1]])
    with pytest.raises(ValueError, match="in two pairs"):
        AugmentConfig(mirror_pairs=[[1, 2], [2, 3]])
    with pytest.raises(DataError, match="classes 0..3"):
        plan_symmetry(AugmentConfig(mirror_pairs=[[1, 7]]), _sided().masks, 2, 4)


def test_data_check_prints_the_augmentation_decision(tmp_path):
    from PIL import Image
    from rich.console import Console

    from nas_attn.cli.data import data_check

    data = _sided(n=4)
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for name, img, m in zip(data.names, data.images, data.masks):
        Image.fromarray((img[0] * 255).astype(np.uint8)).save(tmp_path / "images" / f"{name}.png")
        Image.fromarray(m.astype(np.uint8)).save(tmp_path / "masks" / f"{name}.png")
    con = Console(record=True, width=300)
    assert data_check(tmp_path, con) == 0
    out = con.export_text()
    assert "augmentation:" in out and "no flips along W" in out


def test_defaults_are_the_measured_recipe():
    """benchmarks/recipe_reference.py measured these: batch 4, no affine / intensity jitter."""
    from nas_attn.training import TrainConfig

    assert TrainConfig().batch_size == 4
    a = AugmentConfig()
    assert a.flips and a.rot90 and a.lateral_check and not a.affine and not a.intensity
