"""A trained model in one shape: `InferenceConfig` (how it must see images) and `TrainedModel`
(architecture, weights, that configuration and where it came from).

Training returns its `InferenceConfig` (`TrainResult.inference`) and records it in best.pt;
finalize, export, predict, evaluate and the Python API read and pass these two types:

- `InferenceConfig` is immutable and validated once, here: the patch size (the one broadcast
  rule, `nas_attn.models.sliding.patch_shape`: one number means every axis), the sliding-window
  overlap, the intensity normalisation training fitted (`nas_attn.models.infer.normalise_image`
  settings), the voxel spacing in mm where the data gave one, and the class names.
  `to_dict()` is what best.pt, meta.json and model.py's `INFERENCE` hold.
- `TrainedModel` is what `na.load_model` returns for an export folder, a checkpoint, a
  `nas-attn train` folder or a finalize result (`nas_attn.prediction.load_model`) and what
  `na.export` writes (`nas_attn.exporting.export_trained`).

Older checkpoints and studies (before the configuration was recorded whole) are read by
`nas_attn.compat` only.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..architecture.description import UNetArch
from ..errors import NasAttnError
from ..data.readers import normalise
from ..models.infer import DEFAULT_OVERLAP, HIGH_PERCENTILE, LOW_PERCENTILE, NORMALISATIONS
from ..models.sliding import patch_shape

_PER_CHANNEL = ("low", "high", "aux_low", "aux_high")


class InferenceConfigError(NasAttnError, ValueError):
    """An inference configuration that cannot be used (the message names the field)."""


def _finite(v: Any, name: str, error: type[Exception]) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise error(f"{name}: expected a number, got {v!r}") from None
    if not math.isfinite(f):
        raise error(f"{name}: expected a finite number, got {v!r}")
    return f


def broadcast_patch(patch_size: Any, spatial_dims: int,
                    error: type[Exception] = InferenceConfigError) -> tuple[int, ...] | None:
    """`patch_shape`'s rule as a tuple (None stays None), its ValueError raised as `error`."""
    if patch_size is None:
        return None
    try:
        return tuple(patch_shape(patch_size, spatial_dims))
    except ValueError as e:
        raise error(str(e)) from None


@dataclass(frozen=True)
class InferenceConfig:
    """How a trained model must see images to match its training (module docstring)."""

    spatial_dims: int = 2
    patch_size: tuple[int, ...] | None = None
    """The training patch; None: every image in one pass."""
    overlap: float = DEFAULT_OVERLAP
    normalisation: str = "image"
    """`dataset` (the training set's per-channel range), `image` (each image's percentiles) or
    `none`."""
    low_percentile: float = LOW_PERCENTILE
    high_percentile: float = HIGH_PERCENTILE
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    aux_low: tuple[float, ...] | None = None
    aux_high: tuple[float, ...] | None = None
    spacing: tuple[float, ...] | None = None
    """The voxel spacing (mm, array axis order) the model was trained at, where known."""
    class_names: tuple[str, ...] | None = field(default=None, compare=False)

    @classmethod
    def make(cls, settings: InferenceConfig | Mapping[str, Any] | None, spatial_dims: int, *,
             error: type[Exception] = InferenceConfigError) -> InferenceConfig:
        """The validated configuration of `settings` (a configuration, or the dict `to_dict`
        writes: {"patch_size", "overlap", "normalisation", "low", "high", ..., "spacing"});
        None: one pass, each image by its own percentiles (models trained before the
        normalisation was recorded). Each problem raises `error` naming the field."""
        if isinstance(settings, InferenceConfig):
            settings = settings.to_dict()
        s = dict(settings or {})
        ov = DEFAULT_OVERLAP if s.get("overlap") is None else _finite(s["overlap"], "overlap",
                                                                      error)
        if not 0.0 <= ov < 1.0:
            raise error(f"overlap {ov} must be in [0, 1)")
        mode = s.get("normalisation") or "image"
        mode = "image" if mode == "percentile" else mode
        if mode not in NORMALISATIONS:
            raise error(f"normalisation {mode!r} unknown; accepted: {', '.join(NORMALISATIONS)}")
        per_channel: dict[str, tuple[float, ...] | None] = {}
        if mode == "dataset":
            for key in _PER_CHANNEL:
                values = s.get(key)
                if values is None and key.startswith("aux_"):
                    continue
                if not isinstance(values, (list, tuple)) or not values:
                    raise error(f"normalisation 'dataset' needs a list of per-channel {key!r} "
                                f"values, got {values!r}")
                per_channel[key] = tuple(_finite(v, key, error) for v in values)
        spacing = s.get("spacing")
        if spacing is not None:
            if not isinstance(spacing, (list, tuple)) or len(spacing) != spatial_dims:
                raise error(f"spacing {spacing!r} must have {spatial_dims} entries (mm per axis)")
            spacing = tuple(_finite(v, "spacing", error) for v in spacing)
            if any(v <= 0 for v in spacing):
                raise error(f"spacing {list(spacing)} must be positive")
        names = s.get("class_names")
        if names is not None and not (isinstance(names, (list, tuple))
                                      and all(isinstance(n, str) for n in names)):
            raise error(f"class_names must be a list of strings, got {names!r}")
        return cls(spatial_dims=spatial_dims,
                   patch_size=broadcast_patch(s.get("patch_size"), spatial_dims, error),
                   overlap=ov, normalisation=mode,
                   low_percentile=_finite(s.get("low_percentile", LOW_PERCENTILE),
                                          "low_percentile", error),
                   high_percentile=_finite(s.get("high_percentile", HIGH_PERCENTILE),
                                           "high_percentile", error),
                   spacing=spacing, class_names=None if names is None else tuple(names),
                   **per_channel)

    @classmethod
    def of_training(cls, train_data, patch_size, overlap: float) -> InferenceConfig:
        """How a training on `train_data` sees images: its patch and overlap, the
        normalisation `load_data` fitted (data it did not normalise, a SegData built by hand,
        reached the model as it is: say so, or inference would replay the old per-image
        default), the images' common spacing and the class names."""
        from ..data.resample import common_spacing

        norm = getattr(train_data, "normalisation", None) or {"normalisation": "none"}
        return cls.make({**norm, "patch_size": patch_size, "overlap": overlap,
                         "spacing": common_spacing(train_data),
                         "class_names": getattr(train_data, "class_names", None)},
                        train_data.spatial_dims)

    def to_dict(self, *, class_names: bool = True) -> dict[str, Any]:
        """Plain data (lists, numbers, strings): best.pt's and meta.json's "inference" and
        model.py's `INFERENCE` (which leaves out the class names: `class_names=False`)."""
        out: dict[str, Any] = {
            "patch_size": None if self.patch_size is None else list(self.patch_size),
            "overlap": self.overlap, "normalisation": self.normalisation,
            "low_percentile": self.low_percentile, "high_percentile": self.high_percentile}
        for key in _PER_CHANNEL:
            if getattr(self, key) is not None:
                out[key] = list(getattr(self, key))
        if self.spacing is not None:
            out["spacing"] = list(self.spacing)
        if class_names and self.class_names is not None:
            out["class_names"] = list(self.class_names)
        return out

    def normalisation_settings(self) -> dict[str, Any]:
        """What `normalise_image` takes: the mode and its numbers."""
        return {k: v for k, v in self.to_dict(class_names=False).items()
                if k not in ("patch_size", "overlap", "spacing")}


@dataclass
class TrainedModel:
    """A model ready for inference, with how it was trained to see images."""

    arch: UNetArch
    model: torch.nn.Module
    inference: InferenceConfig
    source: str = ""
    """The file or folder it was loaded from (empty for a model trained in this process)."""
    kind: str = "trained"
    """`export`, `checkpoint` or `trained` (in memory)."""
    notes: list[str] = field(default_factory=list)
    """What the user should know (settings recovered from an older file, accepted hashes)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Where it came from: scores, epoch, the training and data configuration, versions."""

    @property
    def patch_size(self) -> tuple[int, ...] | None:
        return self.inference.patch_size

    @property
    def overlap(self) -> float:
        return self.inference.overlap

    @property
    def spacing(self) -> tuple[float, ...] | None:
        return self.inference.spacing

    @property
    def normalisation(self) -> dict[str, Any]:
        """The training normalisation (`nas_attn.models.infer.normalise_image` settings)."""
        return self.inference.normalisation_settings()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def normalise(self, image: np.ndarray, role: str = "image") -> torch.Tensor:
        """A raw (C, *spatial) array as the model's (1, C, *spatial) input on its device."""
        return torch.from_numpy(normalise(image, self.normalisation, role))[None].to(self.device)
