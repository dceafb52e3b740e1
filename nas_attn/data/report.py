"""`FolderReport`: what checking a dataset folder found (every problem with its file, notes and
a summary), the one record `data check`, training and the cache read."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FolderReport:
    """What `check_folder` found: every problem (with file names) and a summary."""

    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_images: int = 0
    n_masks: int = 0
    n_aux: int = 0
    n_samples: int = 0
    """Complete samples (image + mask [+ aux]) that decoded without a problem."""
    spatial_dims: int | None = None
    size_min: tuple[int, ...] | None = None
    size_max: tuple[int, ...] | None = None
    channels: list[int] = field(default_factory=list)
    aux_channels: list[int] = field(default_factory=list)
    classes: int | None = None
    class_pixels: dict[int, int] = field(default_factory=dict)
    class_names: list[str] | None = None
    mask_kind: str = ""
    splits: dict[str, list[str]] | None = None
    split_source: str | None = None
    layout: str = "folder"
    """`folder`, `nnunet` (v2 raw) or `decathlon` (`nas_attn.data.layouts`)."""
    channel_names: list[str] | None = None
    spacing_min: tuple[float, ...] | None = None
    spacing_max: tuple[float, ...] | None = None
    """Voxel spacing (mm, array axis order) over the samples, where the files give it."""
    resampled_to: tuple[float, ...] | None = None
    """The spacing the samples were resampled to (`scan_folder(resample=True)`), or None."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def class_shares(self) -> dict[int, float]:
        total = sum(self.class_pixels.values())
        return {k: (v / total if total else 0.0) for k, v in sorted(self.class_pixels.items())}

    def summary(self) -> dict:
        """Plain-data summary (JSON-ready)."""
        return {
            "path": self.path, "ok": self.ok, "images": self.n_images, "masks": self.n_masks,
            "aux": self.n_aux, "samples": self.n_samples, "spatial_dims": self.spatial_dims,
            "size_min": list(self.size_min) if self.size_min else None,
            "size_max": list(self.size_max) if self.size_max else None,
            "channels": self.channels, "aux_channels": self.aux_channels,
            "classes": self.classes, "class_names": self.class_names, "mask_kind": self.mask_kind,
            "class_shares": {str(k): round(v, 6) for k, v in self.class_shares.items()},
            "splits": ({k: len(v) for k, v in self.splits.items()} if self.splits else None),
            "split_source": self.split_source, "layout": self.layout,
            "channel_names": self.channel_names,
            "spacing_min": list(self.spacing_min) if self.spacing_min else None,
            "spacing_max": list(self.spacing_max) if self.spacing_max else None,
            "problems": list(self.problems),
            "notes": list(self.notes),
        }
