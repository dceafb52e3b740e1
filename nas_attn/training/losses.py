"""Segmentation losses: soft Dice + cross-entropy, with deep supervision.

One output channel (binary) uses a sigmoid and binary cross-entropy; several channels use a
softmax and cross-entropy. Soft Dice is a *batch* Dice (sums over the batch and the spatial
dims per class, then the mean over foreground classes): stable with small batches and with
patches that hold no foreground. Everything is computed in float32, also under autocast.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _spatial_resize_nearest(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, *sp) integer labels resized (nearest) to `size`."""
    if tuple(target.shape[1:]) == tuple(size):
        return target
    t = F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest")
    return t[:, 0].long()


class DiceCELoss(nn.Module):
    """`dice_weight * (1 - soft Dice over foreground) + ce_weight * CE` on (B, C, *sp) logits.

    `out_channels` 1 = binary (target 0/1), else `out_channels` classes (target 0..C-1).
    """

    def __init__(self, out_channels: int, *, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 smooth: float = 1.0):
        super().__init__()
        self.out_channels = out_channels
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        target = target.long()
        dims = (0,) + tuple(range(2, logits.dim()))  # batch + spatial
        if self.out_channels == 1:
            fg = (target == 1).float()[:, None]
            ce = F.binary_cross_entropy_with_logits(logits, fg) if self.ce_weight else 0.0
            probs, onehot = torch.sigmoid(logits), fg
        else:
            ce = F.cross_entropy(logits, target) if self.ce_weight else 0.0
            probs = torch.softmax(logits, dim=1)[:, 1:]
            onehot = F.one_hot(target, self.out_channels).movedim(-1, 1)[:, 1:].float()
        loss = self.ce_weight * ce
        if self.dice_weight:
            inter = (probs * onehot).sum(dims)
            denom = probs.sum(dims) + onehot.sum(dims)
            dice = (2 * inter + self.smooth) / (denom + self.smooth)
            loss = loss + self.dice_weight * (1 - dice.mean())
        return loss


def deep_supervision_weights(n_outputs: int, ds_weight: float = 1.0) -> list[float]:
    """Weights for [main, level 1, level 2, ...]: 1, ds_weight/2, ds_weight/4 ... summing to 1."""
    w = [1.0] + [ds_weight * 0.5 ** k for k in range(1, n_outputs)]
    s = sum(w)
    return [x / s for x in w]


class SegLoss(nn.Module):
    """Dice + CE over a list of outputs [main logits, coarser deep-supervision logits ...].

    Targets are resized (nearest) to each output's size; weights from `deep_supervision_weights`.
    A single tensor is treated as a list of one.
    """

    def __init__(self, out_channels: int, *, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 ds_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.base = DiceCELoss(out_channels, dice_weight=dice_weight, ce_weight=ce_weight,
                               smooth=smooth)
        self.ds_weight = ds_weight

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor],
                target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.base(outputs, target)
        weights = deep_supervision_weights(len(outputs), self.ds_weight)
        total = 0.0
        for w, out in zip(weights, outputs):
            if w == 0:
                continue
            total = total + w * self.base(out, _spatial_resize_nearest(target, out.shape[2:]))
        return total
