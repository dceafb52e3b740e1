"""`SegData`: decoded segmentation samples held in memory, the one type every loader returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class SegData:
    """Decoded samples, ready for patch sampling.

    The arrays are numpy arrays in memory, or `nas_attn.data.cached_array.CachedArray`s (read from
    the preprocessed cache on demand: index them for a part, `np.asarray` for the whole).

    - `images[i]`: (C, *spatial). Raw intensities (any numeric dtype) as decoded from a folder
      or generated, while `normalisation` is None; the model's float32 input once a split is
      normalised (`nas_attn.data.intensity.normalise`), with the settings in `normalisation`.
    - `masks[i]`: int64 (*spatial), class ids 0..classes-1 (0 = background).
    - `aux[i]`: float32 (C_aux, *spatial), a second modality on the same grid, or `aux is None`.
    - `classes` counts background, so a binary task has `classes == 2`.
    - `splits`: explicit {"train": [names], "val": [names]} from the folder, if it had any.
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str]
    spatial_dims: int
    in_channels: int
    classes: int
    aux: list[np.ndarray] | None = None
    aux_channels: int = 0
    class_names: list[str] | None = None
    splits: dict[str, list[str]] | None = None
    source: str = ""
    normalisation: dict | None = None
    """The settings the images were normalised with (None: raw values)."""
    spacings: list[tuple[float, ...]] | None = None
    """Per sample, the voxel spacing in mm along the array's spatial axes, where the files
    give it (NIfTI headers); None when any sample has none."""
    fg: list[list] | None = None
    """Per sample, its foreground voxel indices per class present, computed in advance (the
    preprocessed cache's `FgIndex`es); None: the patch sampler computes them."""

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.masks) != n or len(self.names) != n:
            raise ValueError(f"SegData: {n} images, {len(self.masks)} masks, {len(self.names)} names")
        if self.fg is not None and len(self.fg) != n:
            raise ValueError(f"SegData: {n} images but {len(self.fg)} foreground indices")
        if self.aux is not None and len(self.aux) != n:
            raise ValueError(f"SegData: {n} images but {len(self.aux)} aux arrays")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"SegData: spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if self.classes < 2:
            raise ValueError(f"SegData: classes counts background and must be >= 2, got {self.classes}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Spatial shape of every sample."""
        return [tuple(m.shape) for m in self.masks]

    def index_of(self, names: Sequence[str]) -> list[int]:
        pos = {n: i for i, n in enumerate(self.names)}
        return [pos[n] for n in names]

    def subset(self, indices: Sequence[int]) -> SegData:
        """A view on some samples (arrays are shared, not copied)."""
        idx = [int(i) for i in indices]
        return SegData(
            images=[self.images[i] for i in idx],
            masks=[self.masks[i] for i in idx],
            names=[self.names[i] for i in idx],
            spatial_dims=self.spatial_dims,
            in_channels=self.in_channels,
            classes=self.classes,
            aux=None if self.aux is None else [self.aux[i] for i in idx],
            aux_channels=self.aux_channels,
            class_names=self.class_names,
            splits=None,
            source=self.source,
            normalisation=self.normalisation,
            spacings=None if self.spacings is None else [self.spacings[i] for i in idx],
            fg=None if self.fg is None else [self.fg[i] for i in idx],
        )
