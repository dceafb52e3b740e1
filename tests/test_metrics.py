"""The score: per-class Dice pooled over the split, which an empty prediction cannot game."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from nas_attn.device import Runtime
from nas_attn.inference.metrics import MetricAccumulator, dice_iou_per_class
from nas_attn.training import evaluate
from nas_attn.inference.metrics import score_split


def naive_pooled_dice(preds, gts, classes):
    """Independent reference: loops over classes, sums over the split, leaves out classes that
    are in neither the reference nor the prediction."""
    per = []
    for c in range(1, classes):
        tp = sum(int(((p == c) & (g == c)).sum()) for p, g in zip(preds, gts))
        ps = sum(int((p == c).sum()) for p in preds)
        gs = sum(int((g == c).sum()) for g in gts)
        per.append(None if ps + gs == 0 else 2 * tp / (ps + gs))
    scored = [v for v in per if v is not None]
    return (sum(scored) / len(scored) if scored else 1.0), per


def random_split(seed, classes=6, n=5, shape=(12, 10)):
    """Masks where most classes are absent from most images, like real multi-class slices."""
    rng = np.random.default_rng(seed)
    gts = []
    for _ in range(n):
        g = np.zeros(shape, np.int64)
        for c in rng.choice(np.arange(1, classes), size=int(rng.integers(0, 3)), replace=False):
            y, x = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
            g[y:y + int(rng.integers(1, 4)), x:x + int(rng.integers(1, 4))] = c
        gts.append(g)
    gts[0][0, 0] = 1  # at least some foreground in the split
    return gts


@pytest.mark.parametrize("seed", range(6))
def test_all_background_scores_zero_and_perfect_scores_one(seed):
    gts = random_split(seed)
    empty = [np.zeros_like(g) for g in gts]
    res = score_split(empty, gts, 6)
    assert res["dice"] == 0.0 and res["iou"] == 0.0
    assert score_split(gts, gts, 6)["dice"] == 1.0
    assert score_split(gts, gts, 6)["dice_per_image"] == 1.0
    assert res["dice_per_image"] == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_pooled_dice_matches_naive_reference(seed):
    gts = random_split(seed)
    rng = np.random.default_rng(100 + seed)
    preds = [np.where(rng.random(g.shape) < 0.15, rng.integers(0, 6, g.shape), g) for g in gts]
    want, per = naive_pooled_dice(preds, gts, 6)
    res = score_split(preds, gts, 6)
    assert res["dice"] == pytest.approx(want, abs=1e-12)
    assert res["dice_per_class"] == [None if v is None else pytest.approx(v) for v in per]


def test_adding_correctly_empty_images_changes_nothing():
    gts = random_split(3)
    rng = np.random.default_rng(7)
    preds = [np.where(rng.random(g.shape) < 0.2, 0, g) for g in gts]
    before = score_split(preds, gts, 6)
    blank = [np.zeros((12, 10), np.int64)] * 7
    after = score_split(preds + blank, gts + blank, 6)
    for key in ("dice", "iou", "dice_per_class", "iou_per_class", "dice_per_image"):
        assert after[key] == before[key], key


def test_class_absent_from_both_is_left_out_and_false_positive_class_scores_zero():
    gt = np.array([[0, 1, 1], [0, 0, 0]])
    pred = np.array([[0, 1, 1], [0, 0, 3]])   # class 2 in neither, class 3 only predicted
    res = score_split([pred], [gt], 4)
    assert res["dice_per_class"] == [1.0, None, 0.0]
    assert res["dice"] == pytest.approx(0.5)
    assert res["classes_scored"] == 2
    dice, iou = dice_iou_per_class(pred, gt, 4)
    assert dice[0] == 1.0 and math.isnan(dice[1]) and dice[2] == 0.0


def test_pooled_differs_from_per_image_mean_hand_computed():
    # image 1: class 1 big and perfect (8 px); image 2: class 1 tiny (1 px), missed
    g1 = np.zeros((4, 4), int); g1[:2] = 1
    g2 = np.zeros((4, 4), int); g2[0, 0] = 1
    p1, p2 = g1.copy(), np.zeros((4, 4), int)
    acc = MetricAccumulator(2)
    acc.add(p1, g1)
    acc.add(p2, g2)
    res = acc.result()
    assert res["dice"] == pytest.approx(2 * 8 / (8 + 9))        # pooled: TP 8, |P| 8, |G| 9
    assert res["iou"] == pytest.approx(8 / 9)
    assert res["dice_per_image"] == pytest.approx((1.0 + 0.0) / 2)


def test_labels_outside_range_are_refused():
    with pytest.raises(ValueError, match="outside"):
        score_split([np.full((2, 2), 5)], [np.zeros((2, 2), int)], 3)


class _Const(nn.Module):
    """A 'model' that always predicts one class."""

    def __init__(self, classes, label):
        super().__init__()
        self.classes, self.label = classes, label
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, aux=None):
        out = torch.zeros(x.shape[0], self.classes, *x.shape[2:])
        out[:, self.label] = 10.0
        return out + 0 * self.dummy


def test_evaluate_gives_zero_to_a_model_that_predicts_background():
    masks = random_split(1, classes=4, n=4, shape=(16, 16))
    loader = [{"image": torch.rand(1, 1, 16, 16), "mask": torch.from_numpy(m)[None]} for m in masks]
    rt = Runtime.create("cpu", amp=False, channels_last=False, spatial_dims=2)
    res = evaluate(_Const(4, 0), loader, rt, classes=4)
    assert res["dice"] == 0.0 and res["images"] == 4


def test_hd95_in_mm_with_the_voxel_spacing():
    """Two boxes 4 voxels apart along the first axis: 4 voxels, 8 mm at 2 mm along it; a
    spacing along another axis does not change it; one empty mask gives the diagonal in mm."""
    import math

    import numpy as np

    from nas_attn.inference.metrics import MetricAccumulator, hd95

    a = np.zeros((20, 10, 10), bool)
    b = np.zeros_like(a)
    a[2:6, 2:8, 2:8] = True
    b[6:10, 2:8, 2:8] = True
    assert hd95(a, b) == pytest.approx(4.0)
    assert hd95(a, b, (2.0, 1.0, 1.0)) == pytest.approx(8.0)
    assert hd95(a, b, (1.0, 3.0, 3.0)) == pytest.approx(4.0)
    empty = np.zeros_like(a)
    assert hd95(a, empty, (2.0, 1.0, 1.0)) == pytest.approx(math.sqrt(40**2 + 10**2 + 10**2))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, b, (1.0, 1.0))
    acc = MetricAccumulator(2, with_hd95=True)
    acc.add(a.astype(np.int64), b.astype(np.int64), (2.0, 1.0, 1.0))
    res = acc.result()
    assert res["hd95_unit"] == "mm" and res["hd95"] == pytest.approx(8.0)
    acc = MetricAccumulator(2, with_hd95=True)
    acc.add(a.astype(np.int64), b.astype(np.int64))
    assert acc.result()["hd95_unit"] == "voxels"
