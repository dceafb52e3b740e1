"""A PNG grid of validation predictions: grayscale image, ground-truth contour, predicted contour.

Pillow only. One tile per image (3D: the middle slice along the first spatial axis), scaled to
about 256 px, with a caption (name, Dice on the whole image/volume) and a legend above the grid.
Multi-class masks draw the boundaries between all labels.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_save
from ..device import Runtime
from .validation import predict_logits
from ..inference.metrics import dice_iou_per_class, labels_from_logits

GT_COLOUR = (64, 220, 96)       # green
PRED_COLOUR = (255, 64, 200)    # magenta
BOTH_COLOUR = (255, 236, 64)    # yellow where the two contours coincide
BG_COLOUR = (24, 24, 28)
TEXT_COLOUR = (235, 235, 235)
TILE = 256
PAD = 8


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _boundary(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels where the label changes to a 4-neighbour, thickened to about `width` pixels."""
    edge = np.zeros(labels.shape, bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    for _ in range(max(0, width - 2)):
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge


def _gray(image: np.ndarray) -> np.ndarray:
    """(C, H, W) float -> (H, W) uint8, channel mean, stretched to 1st-99th percentile."""
    g = image.mean(axis=0)
    lo, hi = np.percentile(g, [1, 99])
    if hi <= lo:
        lo, hi = float(g.min()), float(g.max()) + 1e-6
    return (np.clip((g - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def render_tile(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, caption: str,
                size: int = TILE) -> Image.Image:
    """One tile: image (C, H, W), label maps (H, W), caption under it."""
    h, w = gt.shape
    s = size / max(h, w)
    out_w, out_h = max(1, round(w * s)), max(1, round(h * s))
    img = Image.fromarray(_gray(image)).resize((out_w, out_h), Image.BILINEAR).convert("RGB")
    gt_up = np.asarray(Image.fromarray(gt.astype(np.uint8)).resize((out_w, out_h), Image.NEAREST))
    pr_up = np.asarray(Image.fromarray(pred.astype(np.uint8)).resize((out_w, out_h), Image.NEAREST))
    width = 3 if s >= 3 else 2
    eg, ep = _boundary(gt_up, width), _boundary(pr_up, width)
    rgb = np.asarray(img).copy()
    rgb[eg] = GT_COLOUR
    rgb[ep] = PRED_COLOUR
    rgb[eg & ep] = BOTH_COLOUR
    font = _font(13)
    cap_h = 22
    tile = Image.new("RGB", (out_w, out_h + cap_h), BG_COLOUR)
    tile.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(tile)
    draw.text((4, out_h + 4), caption, fill=TEXT_COLOUR, font=font)
    return tile


def _legend(width: int) -> Image.Image:
    font = _font(13)
    bar = Image.new("RGB", (width, 24), BG_COLOUR)
    d = ImageDraw.Draw(bar)
    x = PAD
    for colour, label in ((GT_COLOUR, "ground truth"), (PRED_COLOUR, "prediction"),
                          (BOTH_COLOUR, "both")):
        d.rectangle([x, 7, x + 14, 19], fill=colour)
        d.text((x + 20, 5), label, fill=TEXT_COLOUR, font=font)
        x += 20 + int(d.textlength(label, font=font)) + 18
    return bar


def save_preview(model: torch.nn.Module, val_data, path: str | os.PathLike, runtime: Runtime,
                 n: int = 4, *, patch_size=None, overlap: float = 0.25,
                 columns: int = 4) -> Path:
    """Predict the first `n` validation samples and write the grid to `path` (atomically)."""
    path = Path(path)
    count = min(n, len(val_data))
    if count == 0:
        raise ValueError("save_preview: no validation samples")
    model.eval()
    tiles = []
    for i in range(count):
        image = torch.from_numpy(np.ascontiguousarray(val_data.images[i]))[None]
        aux = None
        if val_data.aux is not None:
            aux = runtime.to_device(torch.from_numpy(np.ascontiguousarray(val_data.aux[i]))[None])
        logits = predict_logits(model, runtime.to_device(image), runtime, patch_size=patch_size,
                                overlap=overlap, aux=aux)
        pred = labels_from_logits(logits)[0].cpu().numpy()
        gt = np.asarray(val_data.masks[i])
        dice, _ = dice_iou_per_class(pred, gt, val_data.classes)
        img = np.asarray(val_data.images[i])
        if val_data.spatial_dims == 3:
            # the middle slice across the thinnest axis: the largest picture (a slab of 16
            # coronal slices, stored as X x 16 x Z, shows 168 x 128 instead of a 16-pixel strip)
            ax = int(np.argmin(gt.shape))
            z = gt.shape[ax] // 2
            img, gt, pred = (np.take(img, z, axis=ax + 1), np.take(gt, z, axis=ax),
                             np.take(pred, z, axis=ax))
            where = f" {'zyx'[ax]}={z}"
        else:
            where = ""
        name = str(val_data.names[i])
        name = name if len(name) <= 18 else name[:17] + "…"
        scored = [d for d in dice if not np.isnan(d)]
        label = f"Dice {np.mean(scored):.3f}" if scored else "Dice n/a (empty)"
        tiles.append(render_tile(img, gt, pred, f"{name}{where}  {label}"))
    cols = max(1, min(columns, count))
    rows = (count + cols - 1) // cols
    tw = max(t.width for t in tiles)
    th = max(t.height for t in tiles)
    legend = _legend(cols * (tw + PAD) + PAD)
    grid = Image.new("RGB", (cols * (tw + PAD) + PAD, legend.height + rows * (th + PAD) + PAD),
                     BG_COLOUR)
    grid.paste(legend, (0, 0))
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        grid.paste(t, (PAD + c * (tw + PAD), legend.height + PAD + r * (th + PAD)))
    return atomic_save(path, lambda tmp: grid.save(tmp, format="PNG"))
