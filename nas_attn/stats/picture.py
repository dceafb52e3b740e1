"""The per-case picture of a comparison: for every case, each seed's per-case Dice of A minus
B (a dot per seed), the cases sorted by their mean difference, beside the pooled difference and
its 95 % interval (a band). Users would rather look than read a table of 17 classes: a gain
carried by a few cases, or by one seed, shows at a glance. Drawn with PIL only."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_save
from .compare import Comparison
from .counts import CaseCounts

SEED_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                (140, 86, 75), (227, 119, 194), (127, 127, 127))


def per_case_differences(a: Sequence[CaseCounts], b: Sequence[CaseCounts]) -> np.ndarray:
    """(seeds, cases) per-case Dice of A minus B (NaN where a case has no class on either
    side), cases in A's order."""
    return np.stack([ra.per_case() - rb.subset(ra.names).per_case() for ra, rb in zip(a, b)])


def save_case_picture(a: Sequence[CaseCounts], b: Sequence[CaseCounts], comparison: Comparison,
                      path: str | os.PathLike, title: str, seeds: Sequence[int] | None = None,
                      size: tuple[int, int] = (760, 380)) -> Path:
    """The picture (module docstring) as a PNG at `path` (atomic write); `seeds`: the seeds'
    numbers for the legend."""
    diffs = per_case_differences(a, b)
    with np.errstate(invalid="ignore"):
        order = np.argsort(np.nan_to_num(np.nanmean(diffs, 0), nan=0.0))
    w, h = size
    left, right, top, bottom = 56, 16, 48, 44
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    finite = diffs[np.isfinite(diffs)]
    c = comparison.diff
    span = max([0.02, c.high if math.isfinite(c.high) else 0, -c.low if math.isfinite(c.low)
                else 0] + ([float(np.abs(finite).max())] if finite.size else []))
    span = min(1.0, span * 1.1)
    sy = lambda v: top + (1 - (v + span) / (2 * span)) * (h - top - bottom)  # noqa: E731
    n = diffs.shape[1]
    sx = lambda i: left + (i + 0.5) / max(1, n) * (w - left - right)  # noqa: E731
    d.text((left, 6), title, fill="black", font=font)
    d.text((left, 20), "per-case Dice difference, A - B (a dot per seed); band: the pooled "
           f"difference {c.value:+.4f} and its 95 % interval", fill=(90, 90, 90), font=font)
    if math.isfinite(c.low) and math.isfinite(c.high):
        d.rectangle([left, sy(min(span, c.high)), w - right, sy(max(-span, c.low))],
                    fill=(225, 236, 246))
    d.line([left, sy(c.value), w - right, sy(c.value)], fill=(67, 147, 195), width=2)
    d.line([left, sy(0), w - right, sy(0)], fill=(120, 120, 120))
    d.rectangle([left, top, w - right, h - bottom], outline=(160, 160, 160))
    for k in range(5):
        v = span - k * span / 2
        d.text((6, sy(v) - 6), f"{v:+.3f}", fill="black", font=font)
    for s in range(diffs.shape[0]):
        colour = SEED_COLOURS[s % len(SEED_COLOURS)]
        for pos, i in enumerate(order):
            v = diffs[s, i]
            if math.isfinite(v):
                x, y = sx(pos) + (s - diffs.shape[0] / 2) * 2, sy(v)
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        d.text((w - right - 70, top + 4 + 12 * s), f"seed {seeds[s] if seeds else s + 1}",
               fill=colour, font=font)
    d.text((left, h - bottom + 6), f"{n} cases, sorted by their mean difference", fill="black",
           font=font)
    d.text((left, h - bottom + 20), comparison.text(), fill="black", font=font)
    return atomic_save(path, lambda tmp: img.save(tmp, format="PNG"))
