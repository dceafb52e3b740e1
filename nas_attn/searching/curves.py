"""Training-curve PNG (train loss and validation Dice per epoch), drawn with PIL only."""
from __future__ import annotations

import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_save

SERIES = (("train_loss", (214, 96, 77), "train loss"), ("dice", (67, 147, 195), "val Dice"))


def save_curve(curve: list[dict], path: str | os.PathLike, title: str = "",
               size: tuple[int, int] = (560, 320)) -> Path:
    """Plot each series on its own 0..max scale (Dice on 0..1) against the epoch; atomic write."""
    w, h = size
    left, right, top, bottom = 48, 16, 34, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    d.text((left, 8), title or "training curve", fill="black", font=font)
    d.rectangle([left, top, w - right, h - bottom], outline=(160, 160, 160))
    epochs = [c.get("epoch", i + 1) for i, c in enumerate(curve)]
    if not epochs:
        d.text((left + 10, top + 10), "no epoch finished", fill="gray", font=font)
    else:
        e0, e1 = min(epochs), max(max(epochs), min(epochs) + 1)
        sx = lambda e: left + (e - e0) / (e1 - e0) * (w - left - right)  # noqa: E731
        for k in range(5):
            y = top + k / 4 * (h - top - bottom)
            d.line([left, y, w - right, y], fill=(235, 235, 235))
            d.text((8, y - 6), f"{1 - k / 4:.2f}", fill=(67, 147, 195), font=font)
        for e in sorted(set(epochs)):
            d.text((sx(e) - 3, h - bottom + 4), str(e), fill="black", font=font)
        d.text(((w - right + left) / 2 - 14, h - 16), "epoch", fill="black", font=font)
        for i, (key, colour, label) in enumerate(SERIES):
            pts = [(e, c[key]) for e, c in zip(epochs, curve)
                   if isinstance(c.get(key), (int, float)) and math.isfinite(c[key])]
            if not pts:
                continue
            top_v = 1.0 if key == "dice" else max(v for _, v in pts) or 1.0
            sy = lambda v: top + (1 - v / top_v) * (h - top - bottom)  # noqa: E731
            xy = [(sx(e), sy(v)) for e, v in pts]
            if len(xy) > 1:
                d.line(xy, fill=colour, width=2)
            for x, y in xy:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            scale = "" if key == "dice" else f" (max {top_v:.3g})"
            d.text((w - right - 150, top + 6 + 14 * i), f"- {label}{scale}", fill=colour, font=font)
    return atomic_save(path, lambda tmp: img.save(tmp, format="PNG"))
