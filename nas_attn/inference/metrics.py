"""The one definition of the score: Dice (and IoU) per class, pooled over the whole split.

`dice` (what the search optimises, what picks a trial's best epoch, what `show`, `train`,
`finalize` and the export metadata report) is computed as nnU-Net's "global Dice":

- every image adds its per-class true positives, false positives and false negatives to
  split-wide totals (one confusion matrix; one host sync per image);
- Dice of class c = 2·TP_c / (2·TP_c + FP_c + FN_c) over the whole split;
- `dice` is the mean over the foreground classes that occur in the reference **or** in the
  prediction somewhere in the split. A class absent from both is left out (it is not a success
  to be counted as 1); a class predicted but absent from the reference scores 0.

Why pooled rather than a mean of per-image Dice: most classes of real multi-class data are
absent from most slices, so a per-image mean either rewards predicting nothing (absent in
both = 1: an all-background model scored 0.51 on a 17-class task, above 10 of 12 trials) or,
with absent-in-both left out, swings on a few stray pixels in slices where a class is tiny.
Pooled Dice has neither problem: a model that predicts only background scores exactly 0 on any
split with foreground, a perfect one scores 1, and adding images that hold no foreground and
are correctly predicted empty does not change it.

Every image's counts are kept (`cases`: `nas_attn.stats.counts.CaseCounts` as JSON, TP / FP / FN
per image and foreground class), so the pooled Dice of any subset or resample of the images is
recomputed exactly: `CaseCounts.pooled()` of `cases` is `dice`, the same sums and the same float
operations (`pooled_from_sums`). Intervals and paired comparisons (`nas_attn.stats`) start there.

Also reported: `dice_per_image`, the mean over images of each image's Dice over the classes
present in its reference or prediction (MONAI's `ignore_empty`, nnU-Net's per-case mean);
`dice_per_class` / `iou_per_class` (classes 1.., `None` where a class is absent from both);
`hd95` (optional), per image and class where the class is present in the reference or the
prediction (the image diagonal when only one of them has it), averaged per class over images.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..stats.counts import CaseCounts, pooled_from_sums


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def confusion(pred, gt, classes: int) -> np.ndarray:
    """(classes, classes) int64 counts, rows = reference, columns = prediction, for integer label
    maps of one shape. Computed where the tensors live, read back with one sync."""
    pred = _as_tensor(pred)
    gt = _as_tensor(gt).to(pred.device)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != ground truth {tuple(gt.shape)}")
    p, g = pred.reshape(-1).long(), gt.reshape(-1).long()
    n = classes * classes
    bad = (p < 0) | (p >= classes) | (g < 0) | (g >= classes)
    idx = torch.where(bad, n, g * classes + p)          # the last bin counts invalid labels
    counts = torch.bincount(idx, minlength=n + 1).cpu().numpy().astype(np.int64)
    if counts[n]:
        raise ValueError(f"{int(counts[n])} label values outside 0..{classes - 1}")
    return counts[:n].reshape(classes, classes)


def scores_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU of foreground classes 1.. from a confusion matrix; NaN where a class is in
    neither the reference nor the prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)[1:]
    ref = cm.sum(1)[1:]
    prd = cm.sum(0)[1:]
    union = ref + prd - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(ref + prd > 0, 2.0 * tp / (ref + prd), np.nan)
        iou = np.where(union > 0, tp / union, np.nan)
    return dice, iou


def _nanmean(v) -> float:
    v = np.asarray(v, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


def _listed(v) -> list[float | None]:
    return [None if math.isnan(x) else float(x) for x in np.asarray(v, dtype=np.float64)]


def dice_iou_per_class(pred, gt, classes: int) -> tuple[list[float], list[float]]:
    """Dice and IoU of classes 1..classes-1 for one image; NaN where a class is absent from both
    the prediction and the reference (left out of any mean, never counted as 1)."""
    d, i = scores_from_confusion(confusion(pred, gt, classes))
    return [float(x) for x in d], [float(x) for x in i]


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                    border_value=0)
    return mask & ~eroded


def hd95(pred: np.ndarray, gt: np.ndarray, spacing=None) -> float:
    """95th-percentile symmetric Hausdorff distance between two binary masks: in mm with the
    voxel `spacing` (mm per axis), else in pixels / voxels. NaN when both are empty, the image
    diagonal when exactly one is."""
    from scipy import ndimage

    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    step = [1.0] * pred.ndim if spacing is None else [float(v) for v in spacing]
    if len(step) != pred.ndim:
        raise ValueError(f"spacing {list(step)} has {len(step)} entries for a {pred.ndim}D mask")
    if not pred.any() and not gt.any():
        return math.nan
    if not pred.any() or not gt.any():
        return float(math.sqrt(sum((s * v) ** 2 for s, v in zip(pred.shape, step))))
    sp, sg = _surface(pred), _surface(gt)
    d_to_g = ndimage.distance_transform_edt(~sg, sampling=step)[sp]
    d_to_p = ndimage.distance_transform_edt(~sp, sampling=step)[sg]
    return float(max(np.percentile(d_to_g, 95), np.percentile(d_to_p, 95)))


class MetricAccumulator:
    """Adds images one at a time; `result()` gives the split's scores (module docstring)."""

    def __init__(self, classes: int, *, with_hd95: bool = False):
        if classes < 2:
            raise ValueError(f"classes counts background and must be >= 2, got {classes}")
        self.classes = classes
        self.with_hd95 = with_hd95
        self.total = np.zeros((classes, classes), dtype=np.int64)
        self.confusions: list[np.ndarray] = []
        self.names: list[str] = []
        self.per_image: list[float] = []
        self.hd: list[list[float]] = []
        self.hd_units: set[str] = set()
        self.images = 0

    def add(self, pred, gt, spacing=None, name: str | None = None) -> list[float]:
        """Add one image (integer label maps of one shape; `spacing`: its voxel size in mm, for
        HD95 in mm; `name`: the case's name in the per-case counts, else its index); returns its
        per-class Dice (NaN where the class is in neither)."""
        cm = confusion(pred, gt, self.classes)
        self.total += cm
        self.confusions.append(cm)
        self.names.append(str(self.images) if name is None else str(name))
        self.images += 1
        dice, _ = scores_from_confusion(cm)
        if not np.isnan(dice).all():
            self.per_image.append(_nanmean(dice))
        if self.with_hd95:
            p = _as_tensor(pred).cpu().numpy()
            g = _as_tensor(gt).cpu().numpy()
            self.hd.append([hd95(p == c, g == c, spacing) for c in range(1, self.classes)])
            self.hd_units.add("voxels" if spacing is None else "mm")
        return [float(x) for x in dice]

    def __len__(self) -> int:
        return self.images

    def case_counts(self) -> CaseCounts:
        """TP, FP and FN of every image added so far, per foreground class."""
        return CaseCounts.from_confusions(self.names, self.confusions, self.classes)

    def result(self) -> dict[str, float | list | dict | None]:
        """`dice`, `iou` (pooled, mean over classes present), `dice_per_class`, `iou_per_class`,
        `classes_scored`, `dice_per_image`, `images`, `cases` (the per-case counts as JSON),
        and `hd95`, `hd95_per_class` when on."""
        if not self.images:
            raise ValueError("no images were evaluated")
        dice, iou = scores_from_confusion(self.total)
        scored = int((~np.isnan(dice)).sum())
        cases = self.case_counts()
        out: dict[str, float | list | dict | None] = {
            # nothing in the reference and nothing predicted anywhere: perfect agreement (1.0)
            "dice": float(pooled_from_sums(cases.tp.sum(0), cases.fp.sum(0), cases.fn.sum(0))),
            "iou": _nanmean(iou) if scored else 1.0,
            "dice_per_class": _listed(dice),
            "iou_per_class": _listed(iou),
            "classes_scored": scored,
            "dice_per_image": _nanmean(self.per_image) if self.per_image else 1.0,
            "images": self.images,
            "cases": cases.to_dict(),
        }
        if self.with_hd95:
            rows = np.asarray(self.hd, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                per_class = [_nanmean(rows[:, k]) for k in range(rows.shape[1])]
            out["hd95"] = _nanmean(per_class) if not np.isnan(per_class).all() else 0.0
            out["hd95_per_class"] = _listed(per_class)
            out["hd95_unit"] = self.hd_units.pop() if len(self.hd_units) == 1 else "mixed"
        return out


def score_split(preds, gts, classes: int, *, with_hd95: bool = False) -> dict:
    """`MetricAccumulator` over pairs of label maps: the score of a whole split in one call."""
    acc = MetricAccumulator(classes, with_hd95=with_hd95)
    for p, g in zip(preds, gts):
        acc.add(p, g)
    return acc.result()


def labels_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, *sp) logits -> (B, *sp) integer labels; one channel means sigmoid > 0.5."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)
