"""Intensity normalisation: how a split's raw images become the model's input.

Decoding (`check`, `builtin`) keeps every image's raw values; `load_data` normalises the
train, validation and test splits with settings fitted on the **training** images only, and
those settings travel with the model (checkpoint metadata, model.py's INFERENCE), so
`evaluate`, `predict` and the exported `preprocess` see images exactly as training did.

Modes (`DataConfig.normalisation`):

- `dataset`: per channel, one linear map for every image, fitted on the training images: the
  lowest of their 0.5th percentiles -> 0, the highest of their 99.5th percentiles -> 1,
  clipped. Images keep their intensities relative to each other: right for slices or tiles of
  one acquisition (a 2D slice with little tissue is not brightened to look like one full of
  it) and for data already on a common scale. Per-image percentiles make it robust to hot
  pixels without clipping the bright tissue of images that are mostly background (pooled
  percentiles over all pixels of the inia19 slices, 90 % background, would clip the
  brightest 5 % of the brain).
- `image`: per image and channel, between the image's own percentiles (robust to a different
  gain or scanner per image; the right choice for whole volumes from different scans).
- `none`: the values as stored (data normalised beforehand).
- `auto` (the default): `dataset` for 2D samples, `image` for 3D ones (a 2D sample is usually
  a slice or tile of a larger acquisition, a 3D one a whole scan).

On inia19-macaque (2D slices of one brain template), per-image scaling had changed the
intensity of the same tissue from slice to slice; `benchmarks/recipe_reference.py` measures
the difference. The torch code that applies the settings is `nas_attn.models.infer.
normalise_image`, shared with model.py.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .segdata import SegData

MODES = ("auto", "dataset", "image", "none")
SAMPLE_PER_IMAGE = 200_000
"""At most this many finite values per image and channel go into the dataset percentiles."""


def resolve_mode(mode: str, spatial_dims: int) -> str:
    if mode not in MODES:
        raise ValueError(f"normalisation {mode!r} unknown; accepted: {', '.join(MODES)}")
    if mode == "auto":
        return "dataset" if spatial_dims == 2 else "image"
    return mode


def image_range(channel, low: float | None = None, high: float | None = None
                ) -> tuple[float, float] | None:
    """One image's (low, high) percentiles of one channel's finite values, from at most
    `SAMPLE_PER_IMAGE` of them (a subset seeded per image, so the result does not depend on
    the other images); None when none is finite. The `dataset` fit takes the lowest low and
    the highest high over the training images (the preprocessed cache stores this per case)."""
    from ..models.infer import HIGH_PERCENTILE, LOW_PERCENTILE

    low = LOW_PERCENTILE if low is None else low
    high = HIGH_PERCENTILE if high is None else high
    v = np.asarray(channel, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if not v.size:
        return None
    if v.size > SAMPLE_PER_IMAGE:
        v = v[np.random.default_rng(12345).choice(v.size, SAMPLE_PER_IMAGE, replace=False)]
    lo, hi = np.percentile(v, [low, high])
    return float(lo), (float(hi) if hi > lo else float(v.max()))


def _default_percentiles() -> tuple[float, float]:
    """What the preprocessed cache computed its per-case `dataset` ranges with."""
    from ..models.infer import HIGH_PERCENTILE, LOW_PERCENTILE

    return LOW_PERCENTILE, HIGH_PERCENTILE


def _channel_range(arrays: list, c: int, low: float, high: float) -> tuple[float, float]:
    """(lowest per-image `low` percentile, highest per-image `high` percentile) of channel c."""
    lows, highs = [], []
    for a in arrays:
        cached = getattr(a, "dataset_range", None)  # a CachedArray knows its range
        r = cached(c) if cached is not None and (low, high) == _default_percentiles() else \
            image_range(a[c], low, high)
        if r is not None:
            lows.append(r[0])
            highs.append(r[1])
    if not lows:
        return 0.0, 0.0
    return min(lows), max(highs)


def fit_normalisation(train: SegData, mode: str = "auto") -> dict[str, Any]:
    """The settings `normalise` applies, fitted on the (raw) training images of `train`."""
    from ..models.infer import HIGH_PERCENTILE, LOW_PERCENTILE

    resolved = resolve_mode(mode, train.spatial_dims)
    out: dict[str, Any] = {"normalisation": resolved, "low_percentile": LOW_PERCENTILE,
                           "high_percentile": HIGH_PERCENTILE}
    if resolved != "dataset":
        return out
    for prefix, arrays, channels in (("", train.images, train.in_channels),
                                     ("aux_", train.aux, train.aux_channels)):
        if arrays is None:
            continue
        ranges = [_channel_range(arrays, c, LOW_PERCENTILE, HIGH_PERCENTILE)
                  for c in range(channels)]
        out[prefix + "low"] = [lo for lo, _ in ranges]
        out[prefix + "high"] = [hi for _, hi in ranges]
    return out


def normalise(data: SegData, settings: dict[str, Any]) -> SegData:
    """A copy of `data` whose images (and aux) are the model's float32 input under `settings`
    (masks and names shared, not copied; cached arrays become normalising views, nothing is
    read)."""
    from .readers import normalise as run

    def one(a, role="image"):
        view = getattr(a, "normalised", None)
        return view(settings, role) if view is not None else run(a, settings, role)

    return SegData(
        images=[one(a) for a in data.images], masks=data.masks, names=data.names,
        spatial_dims=data.spatial_dims, in_channels=data.in_channels, classes=data.classes,
        aux=None if data.aux is None else [one(a, "aux") for a in data.aux],
        aux_channels=data.aux_channels, class_names=data.class_names, splits=data.splits,
        source=data.source, normalisation=dict(settings), spacings=data.spacings, fg=data.fg)
