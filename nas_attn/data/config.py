"""Validated settings for data loading (`DataConfig`) and augmentation (`AugmentConfig`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BUILTIN_SOURCES = ("builtin", "builtin3d")
BUILTIN_MAX_VOXELS = 2 ** 28
"""The built-in set is generated in memory (float32 images, int64 masks: about 3 GB at this)."""


def _range(v: tuple[float, float], name: str, lo: float | None = None) -> tuple[float, float]:
    a, b = v
    if a > b:
        raise ValueError(f"{name}: lower bound {a} is above upper bound {b}")
    if lo is not None and a < lo:
        raise ValueError(f"{name}: values must be >= {lo}, got {a}")
    return v


class AugmentConfig(BaseModel):
    """Training-time augmentation; validation data is never augmented.

    Geometric transforms move image, aux and mask together (masks with nearest interpolation);
    intensity transforms touch the image and aux only.
    """

    model_config = ConfigDict(extra="forbid")

    flips: bool = True
    """Random flips along every spatial axis."""
    rot90: bool = True
    """Random 90° rotations in every plane whose two sides are equal (square / cubic patches)."""
    p_flip: float = Field(0.5, ge=0, le=1)
    affine: bool = False
    """Random rotation and scaling (in the H×W plane, the same for every slice in 3D). Off by
    default: in the short budgets of a search it slowed learning more than it helped."""
    rotate: float = Field(15.0, ge=0, le=180)
    """Rotation range in degrees: ±rotate."""
    scale: tuple[float, float] = (0.85, 1.15)
    p_affine: float = Field(0.3, ge=0, le=1)
    intensity: bool = False
    """Brightness shift, contrast factor, gamma and Gaussian noise (off by default, as affine)."""
    brightness: float = Field(0.1, ge=0, le=1)
    contrast: float = Field(0.15, ge=0, le=1)
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: tuple[float, float] = (0.0, 0.03)
    p_intensity: float = Field(0.5, ge=0, le=1)
    elastic: bool = False
    """Elastic deformation (in-plane in 3D); slower, off by default."""
    elastic_alpha: float = Field(300.0, ge=0)
    """Displacement scale (albumentations units; 300 with sigma 10 moves pixels ~1.5 px on average)."""
    elastic_sigma: float = Field(10.0, gt=0)
    p_elastic: float = Field(0.2, ge=0, le=1)
    mirror_pairs: list[tuple[int, int]] = Field(default_factory=list)
    """Mirror-twin classes, e.g. [[1, 7], [2, 8]] for left/right regions: a flip along
    `mirror_axis` swaps each pair's labels, so a flipped left region is labelled right."""
    mirror_axis: int = -1
    """Spatial axis the twins mirror along (0 = first spatial axis, -1 = last, i.e. W: left/right)."""
    lateral_check: bool = True
    """Before flipping or turning along an axis, check the training masks: when a class lies
    mostly on one side of the image centre along that axis (see `lateral_share`) and is not
    covered by `mirror_pairs`, that axis is never flipped (nor turned by 90°), because a flip
    would change what the label means. The decision is reported (`nas-attn data check`, train)."""
    lateral_share: float = Field(0.9, gt=0.5, le=1)
    """A class is lateralised along an axis when more than this share of its training pixels lies
    on one side of the centre."""

    @field_validator("mirror_pairs")
    @classmethod
    def _pairs(cls, v):
        seen: set[int] = set()
        for a, b in v:
            if a < 1 or b < 1 or a == b:
                raise ValueError(f"mirror_pairs: each pair needs two different foreground class ids "
                                 f"(>= 1), got [{a}, {b}]")
            if a in seen or b in seen:
                raise ValueError(f"mirror_pairs: class {a if a in seen else b} is in two pairs")
            seen.update((a, b))
        return [(int(a), int(b)) for a, b in v]

    @field_validator("mirror_axis")
    @classmethod
    def _maxis(cls, v):
        if not -3 <= v <= 2:
            raise ValueError(f"mirror_axis must be a spatial axis -3..2 (-1 = last), got {v}")
        return v

    @field_validator("scale")
    @classmethod
    def _scale(cls, v):
        return _range(v, "scale", lo=0.1)

    @field_validator("gamma")
    @classmethod
    def _gamma(cls, v):
        return _range(v, "gamma", lo=0.05)

    @field_validator("noise_std")
    @classmethod
    def _noise(cls, v):
        return _range(v, "noise_std", lo=0.0)


class DataConfig(BaseModel):
    """Where the data comes from and how training patches are drawn."""

    model_config = ConfigDict(extra="forbid")

    source: str = "builtin"
    """'builtin' (2D cue set), 'builtin3d', or a dataset folder path (see `load_folder`)."""
    spatial_dims: int | None = None
    """2 or 3; None infers it (from the files, or 2 for 'builtin')."""
    val_fraction: float = 0.25
    """Share of samples held out for validation when no explicit split exists."""
    val_pattern: str | None = None
    """Glob on sample names (e.g. 'tile_r3*') that selects the validation samples; overrides a
    folder's split files and val_fraction."""
    test_pattern: str | None = None
    """Glob on sample names that selects the test samples (held out of train and validation,
    scored once by `finalize`); overrides a folder's test list."""
    test_source: str | None = None
    """A separate dataset folder used as the test split (same channels and classes)."""
    seed: int = 0
    patch_size: list[int] | None = None
    """Training patch size per spatial axis (one number = all axes). None: whole images if all
    training samples have one size, else the per-axis minimum size."""
    normalisation: Literal["auto", "dataset", "image", "none"] = "auto"
    """How raw intensities become the model's input (`nas_attn.data.intensity`): `dataset`,
    one per-channel percentile range (0.5th -> 0, 99.5th -> 1) fitted on the training images
    and applied to every image; `image`, each image's own percentiles; `none`, the values as
    stored; `auto`, `dataset` for 2D data and `image` for 3D."""
    fg_oversample: float = Field(0.33, ge=0, le=1)
    """Probability that a training patch is centred on a foreground voxel."""
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    builtin_n: int | None = None
    """Samples of the built-in set (default 64 in 2D, 16 in 3D)."""
    builtin_size: int | None = None
    """Side of the built-in images (default 64 in 2D, 32 in 3D)."""
    builtin_aux: bool = False
    """Give the built-in set its auxiliary modality."""
    cache: Literal["auto", "on", "off"] = "auto"
    """Read a dataset folder through the preprocessed cache on disk (`nas_attn.data.cache`:
    decoded once, read patch by patch, memory independent of the data's size): `auto` for 3D
    folders, `on`, `off` (decode into memory)."""
    cache_dir: str | None = None
    """Where the cache lives; None: `$NAS_ATTN_CACHE_DIR` (the CLI's --cache-dir, default
    `<runs dir>/cache`), else `runs/cache`."""
    num_workers: int | None = Field(None, ge=0)
    """Training DataLoader workers; None: 0 on the CPU, several on CUDA (`auto_workers`)."""

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("source must be 'builtin', 'builtin3d' or a dataset folder path, got ''")
        return v

    @field_validator("spatial_dims")
    @classmethod
    def _dims(cls, v):
        if v is not None and v not in (2, 3):
            raise ValueError(f"spatial_dims must be 2, 3 or null (infer), got {v}")
        return v

    @field_validator("val_fraction")
    @classmethod
    def _frac(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {v}")
        return v

    @field_validator("val_pattern", "test_pattern")
    @classmethod
    def _pattern(cls, v, info):
        if v is not None and not v.strip():
            raise ValueError(f"{info.field_name} must be a non-empty glob such as 'tile_r3*', or null")
        return v

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, v):
        if v is None:
            return v
        if not 1 <= len(v) <= 3:
            raise ValueError(f"patch_size must list 1 to 3 sizes (one per spatial axis), got {v}")
        if any(int(s) < 4 for s in v):
            raise ValueError(f"patch_size entries must be >= 4, got {v}")
        return [int(s) for s in v]

    @field_validator("builtin_n")
    @classmethod
    def _bn(cls, v):
        if v is not None and not 2 <= v <= 100_000:
            raise ValueError(f"builtin_n must be 2..100000 (one train and one val sample at "
                             f"least), got {v}")
        return v

    @field_validator("builtin_size")
    @classmethod
    def _bs(cls, v):
        if v is not None and not 16 <= v <= 2048:
            raise ValueError(f"builtin_size must be 16..2048, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.source == "builtin3d" and self.spatial_dims == 2:
            raise ValueError("source 'builtin3d' is 3D but spatial_dims is 2")
        dims = self.resolved_builtin_dims
        if dims and self.is_builtin:  # the generator holds the whole set in memory
            n = self.builtin_n or (64 if dims == 2 else 16)
            size = self.builtin_size or (64 if dims == 2 else 32)
            if n * size ** dims > BUILTIN_MAX_VOXELS:
                raise ValueError(
                    f"builtin_n {n} x builtin_size {size}^{dims} = {n * size ** dims:.3g} "
                    f"voxels; the built-in generator makes at most {BUILTIN_MAX_VOXELS:.3g} "
                    "(about 3 GB in memory): fewer or smaller samples")
        if dims and self.patch_size is not None and len(self.patch_size) not in (1, dims):
            raise ValueError(f"patch_size {self.patch_size} has {len(self.patch_size)} entries "
                             f"for {dims}D data (give 1 or {dims})")
        if self.normalisation == "none" and self.augment.intensity:
            raise ValueError("augment.intensity works on normalised images (values in [0, 1]); "
                             "with normalisation 'none' turn it off or choose auto, dataset or "
                             "image")
        return self

    @property
    def is_builtin(self) -> bool:
        return self.source in BUILTIN_SOURCES

    @property
    def resolved_builtin_dims(self) -> int | None:
        """Spatial dims of a built-in source, else `spatial_dims` (None = infer from files)."""
        if self.source == "builtin3d":
            return 3
        if self.source == "builtin":
            return self.spatial_dims or 2
        return self.spatial_dims
