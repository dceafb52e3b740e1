"""Validation metrics on whole images: Dice and IoU per foreground class, optional HD95.

Averaging: every metric is computed **per image and per class**, then averaged over images
(per class), then over foreground classes (`dice`, `iou`). It is not a Dice of the pooled
pixels of the whole validation set. Empty masks: when a class is absent from both the
prediction and the ground truth of an image, its Dice and IoU for that image are 1 (a correct
"nothing here"); absent from only one of them gives 0. HD95 (off by default) is the larger of
the two directed 95th-percentile surface distances in pixels/voxels; 0 when both are empty,
the image diagonal (the worst possible value) when exactly one is.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def dice_iou_per_class(pred, gt, classes: int) -> tuple[list[float], list[float]]:
    """Dice and IoU of foreground classes 1..classes-1 for one image (integer label maps)."""
    pred, gt = _as_tensor(pred).long(), _as_tensor(gt).long().to(_as_tensor(pred).device)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != ground truth {tuple(gt.shape)}")
    dice, iou = [], []
    for c in range(1, classes):
        p, g = pred == c, gt == c
        inter = (p & g).sum().item()
        ps, gs = p.sum().item(), g.sum().item()
        if ps + gs == 0:
            dice.append(1.0)
            iou.append(1.0)
        else:
            dice.append(2.0 * inter / (ps + gs))
            iou.append(inter / (ps + gs - inter))
    return dice, iou


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                    border_value=0)
    return mask & ~eroded


def hd95(pred: np.ndarray, gt: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance between two binary masks (pixel units)."""
    from scipy import ndimage

    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if not pred.any() and not gt.any():
        return 0.0
    if not pred.any() or not gt.any():
        return float(math.sqrt(sum(s * s for s in pred.shape)))
    sp, sg = _surface(pred), _surface(gt)
    d_to_g = ndimage.distance_transform_edt(~sg)[sp]
    d_to_p = ndimage.distance_transform_edt(~sp)[sg]
    return float(max(np.percentile(d_to_g, 95), np.percentile(d_to_p, 95)))


class MetricAccumulator:
    """Collects per-image metrics; `result()` averages them (see the module docstring)."""

    def __init__(self, classes: int, *, with_hd95: bool = False):
        self.classes = classes
        self.with_hd95 = with_hd95
        self.dice: list[list[float]] = []
        self.iou: list[list[float]] = []
        self.hd: list[list[float]] = []

    def add(self, pred, gt) -> tuple[list[float], list[float]]:
        """Add one image (integer label maps of the same shape); returns its (dice, iou)."""
        d, i = dice_iou_per_class(pred, gt, self.classes)
        self.dice.append(d)
        self.iou.append(i)
        if self.with_hd95:
            p = _as_tensor(pred).cpu().numpy()
            g = _as_tensor(gt).cpu().numpy()
            self.hd.append([hd95(p == c, g == c) for c in range(1, self.classes)])
        return d, i

    def __len__(self) -> int:
        return len(self.dice)

    def result(self) -> dict[str, float | list[float]]:
        """{"dice", "iou": mean foreground, "dice_per_class", "iou_per_class": classes 1.., and
        "hd95", "hd95_per_class" when on}."""
        if not self.dice:
            raise ValueError("no images were evaluated")
        out: dict[str, float | list[float]] = {}
        for key, rows in (("dice", self.dice), ("iou", self.iou)) + (
                (("hd95", self.hd),) if self.with_hd95 else ()):
            per_class = np.mean(np.asarray(rows, dtype=np.float64), axis=0)
            out[key] = float(per_class.mean())
            out[f"{key}_per_class"] = [float(v) for v in per_class]
        return out


def labels_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, *sp) logits -> (B, *sp) integer labels; one channel means sigmoid > 0.5."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)
