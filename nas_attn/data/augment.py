"""Training augmentation built on albumentations 2.

`build_augment(cfg, spatial_dims, patch_shape=...)` returns an `A.Compose` called as

- 2D: `aug(image=HWC float32, mask=HW uint8)`;
- 3D: `aug(volume=DHWC float32, mask3d=DHW uint8)`.

Image and aux travel together as channels of `image` / `volume`, so every geometric transform
moves them and the mask identically (masks use nearest interpolation); intensity transforms
touch only image/aux. Transforms that would change the patch shape (90° turns of a non-square
plane) are left out, so patches always batch.

What runs where (albumentations 2.0.8 as installed):

- 2D: `HorizontalFlip`, `VerticalFlip`, `RandomRotate90` (square patches), `Affine`,
  `ElasticTransform`, and `IntensityJitter` (below).
- 3D: `CubicSymmetry` (all 48 flips/turns of a cube) when flips and rot90 are on and the patch is
  a cube; otherwise `RandomFlip3D` (ours: albumentations has no depth flip) and `RandomRotate90`
  in the H×W plane when H == W. Affine is `InPlaneAffine3D` (ours): the same in-plane rotation
  and scale for every slice, done as one `cv2.warpAffine` over (H, W, D·C), because `A.Affine`
  on a volume warps slice by slice (about 9 ms against 0.05 ms for 16×32×32). Elastic is
  `A.ElasticTransform` (in-plane, one field for all slices).
- Intensity is `IntensityJitter` (ours) in 2D and 3D: `A.RandomBrightnessContrast` and
  `A.GaussNoise` fail on `volume=` in 2.0.8 (KeyError 'images'). It shifts brightness, scales
  contrast about the mean, clips to [0, 1], applies gamma and adds Gaussian noise.

Label safety (`plan_symmetry`): a flip or a 90° turn must not change what a label means. Along
the `mirror_axis`, declared `mirror_pairs` (left/right twins) swap labels when the patch is
flipped (`RandomFlip2D` / `RandomFlip3D` with a look-up table). Any other class that lies mostly
on one side of the image centre along an axis in the training masks (`lateral_share`, checked
when `lateral_check` is on) blocks flips along that axis and the 90° turns of every plane that
holds it (a turn maps one axis onto the other, reversed). The plan's `note` says what was
decided; `nas-attn data check` and `nas-attn train` print it.

All randomness comes from the Compose's own generators (`seed=`), so a seeded pipeline repeats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import albumentations as A
import cv2
import numpy as np

from ..errors import DataError
from .config import AugmentConfig

_CV_MAX_CHANNELS = 512


_NOISE_BANK: np.ndarray | None = None
_NOISE_BANK_SIZE = 1 << 21


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian noise of `shape` and std `sigma`: a random window of a fixed bank of standard
    normals, randomly negated (drawing fresh normals costs ~25 ns each, 1.7 ms for 32³×2)."""
    global _NOISE_BANK
    if _NOISE_BANK is None:
        _NOISE_BANK = np.random.default_rng(12345).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)
    size = int(np.prod(shape))
    if size > _NOISE_BANK_SIZE // 2:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    start = int(rng.integers(0, _NOISE_BANK_SIZE - size))
    sign = np.float32(sigma if rng.random() < 0.5 else -sigma)
    return (_NOISE_BANK[start:start + size] * sign).reshape(shape)


class IntensityJitter(A.ImageOnlyTransform):
    """Brightness shift, contrast factor, gamma, Gaussian noise, on [0, 1] float images/volumes."""

    def __init__(self, brightness: float = 0.1, contrast: float = 0.15,
                 gamma: tuple[float, float] = (0.8, 1.25), noise_std: tuple[float, float] = (0.0, 0.03),
                 p: float = 0.5):
        super().__init__(p=p)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.gamma = (float(gamma[0]), float(gamma[1]))
        self.noise_std = (float(noise_std[0]), float(noise_std[1]))

    def get_params(self) -> dict[str, Any]:
        r = self.py_random
        return {
            "shift": r.uniform(-self.brightness, self.brightness),
            "factor": r.uniform(1.0 - self.contrast, 1.0 + self.contrast),
            "gamma_value": math.exp(r.uniform(math.log(self.gamma[0]), math.log(self.gamma[1]))),
            "sigma": r.uniform(*self.noise_std),
        }

    def apply(self, img: np.ndarray, shift: float = 0.0, factor: float = 1.0,
              gamma_value: float = 1.0, sigma: float = 0.0, **params: Any) -> np.ndarray:
        x = img.astype(np.float32, copy=True)
        mean = np.float32(x.mean())
        x -= mean
        x *= np.float32(factor)
        x += mean + np.float32(shift)
        np.clip(x, 0.0, 1.0, out=x)
        if gamma_value != 1.0:
            np.power(x, np.float32(gamma_value), out=x)
        if sigma > 0:
            x += _noise(self.random_generator, x.shape, sigma)
        return x

    def apply_to_volume(self, volume: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        return self.apply(volume, **params)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness", "contrast", "gamma", "noise_std")


def _flip_mask(mask: np.ndarray, axes: tuple[int, ...], luts: dict[int, np.ndarray]) -> np.ndarray:
    if not axes:
        return mask
    out = np.ascontiguousarray(np.flip(mask, axes))
    for ax in axes:
        if ax in luts:
            out = luts[ax][out]
    return out


class _AxisFlips:
    """Shared by the 2D and 3D flips: flip each of `axes` with probability `p_axis`; a flip
    along an axis in `luts` also maps the mask's labels through that table."""

    def __init__(self, p_axis: float = 0.5, axes: Sequence[int] = (0, 1, 2),
                 luts: dict[int, np.ndarray] | None = None, p: float = 1.0):
        super().__init__(p=p)
        self.p_axis = float(p_axis)
        self.axes = tuple(int(a) for a in axes)
        self.luts = dict(luts or {})

    def get_params(self) -> dict[str, Any]:
        return {"axes": tuple(ax for ax in self.axes if self.py_random.random() < self.p_axis)}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("p_axis", "axes")


class RandomFlip3D(_AxisFlips, A.Transform3D):
    """Flip a volume (and its mask) along each of `axes` (default D, H, W) with probability
    `p_axis`; a flip along an axis in `luts` also maps the mask's labels through that table."""

    def apply_to_volume(self, volume: np.ndarray, axes: tuple[int, ...] = (), **params: Any) -> np.ndarray:
        return np.ascontiguousarray(np.flip(volume, axes)) if axes else volume

    def apply_to_mask3d(self, mask3d: np.ndarray, axes: tuple[int, ...] = (), **params: Any) -> np.ndarray:
        return _flip_mask(mask3d, axes, self.luts)


class RandomFlip2D(_AxisFlips, A.DualTransform):
    """2D counterpart of `RandomFlip3D`: flips H (0) and/or W (1) of `image` (HWC) and `mask`,
    mapping the mask's labels through `luts[axis]` for a flip along that axis."""

    def __init__(self, p_axis: float = 0.5, axes: Sequence[int] = (0, 1),
                 luts: dict[int, np.ndarray] | None = None, p: float = 1.0):
        super().__init__(p_axis=p_axis, axes=axes, luts=luts, p=p)

    def apply(self, img: np.ndarray, axes: tuple[int, ...] = (), **params: Any) -> np.ndarray:
        return np.ascontiguousarray(np.flip(img, axes)) if axes else img

    def apply_to_mask(self, mask: np.ndarray, axes: tuple[int, ...] = (), **params: Any) -> np.ndarray:
        return _flip_mask(mask, axes, self.luts)


# ----- label safety -----------------------------------------------------------------------------
AXIS_NAMES = {2: ("H", "W"), 3: ("D", "H", "W")}


@dataclass
class SymmetryPlan:
    """Which flips and 90° turns keep every label's meaning (see module docstring)."""

    spatial_dims: int
    flip_axes: tuple[int, ...]
    """Spatial axes that may be flipped."""
    luts: dict[int, np.ndarray] = field(default_factory=dict)
    """axis -> label look-up table applied to the mask when flipping along it (mirror pairs)."""
    lateral: dict[int, list[int]] = field(default_factory=dict)
    """axis -> classes found on one side of the centre along it (not excused by mirror pairs)."""
    note: str = ""
    """One line for the user: what was decided and why ('' when nothing is restricted)."""

    @property
    def free_axes(self) -> tuple[int, ...]:
        """Axes that may be flipped without relabelling (so 90° turns may use them)."""
        return tuple(a for a in range(self.spatial_dims) if a not in self.lateral and a not in self.luts)

    def rot_ok(self, a: int, b: int) -> bool:
        return a in self.free_axes and b in self.free_axes

    @classmethod
    def unrestricted(cls, spatial_dims: int) -> SymmetryPlan:
        return cls(spatial_dims, tuple(range(spatial_dims)))


def lateral_classes(masks: Sequence[np.ndarray], classes: int, share: float = 0.9) -> dict[int, list[int]]:
    """axis -> foreground classes with more than `share` of their pixels (summed over `masks`)
    on one side of each image's centre along that axis (the middle row of an odd size counts
    for neither side)."""
    if not masks:
        return {}
    d = masks[0].ndim
    low = np.zeros((d, classes), np.int64)
    high = np.zeros((d, classes), np.int64)
    for m in masks:
        m = np.asarray(m)
        for ax in range(d):
            n = m.shape[ax]
            low[ax] += np.bincount(m.take(np.arange(n // 2), axis=ax).ravel(), minlength=classes)[:classes]
            high[ax] += np.bincount(m.take(np.arange((n + 1) // 2, n), axis=ax).ravel(),
                                    minlength=classes)[:classes]
    out: dict[int, list[int]] = {}
    for ax in range(d):
        tot = low[ax] + high[ax]
        side = np.maximum(low[ax], high[ax])
        lat = [c for c in range(1, classes) if tot[c] > 0 and side[c] > share * tot[c]]
        if lat:
            out[ax] = lat
    return out


def _ids(cs: Sequence[int]) -> str:
    cs = list(cs)
    return ", ".join(map(str, cs[:8])) + (f" and {len(cs) - 8} more" if len(cs) > 8 else "")


def plan_symmetry(cfg: AugmentConfig, masks: Sequence[np.ndarray], spatial_dims: int,
                  classes: int) -> SymmetryPlan:
    """The flips / 90° turns that keep labels meaningful on data with these training `masks`."""
    d = spatial_dims
    names = AXIS_NAMES[d]
    maxis = cfg.mirror_axis % d
    if cfg.mirror_axis >= d or cfg.mirror_axis < -d:
        raise DataError(f"augment.mirror_axis {cfg.mirror_axis} is not a spatial axis of {d}D data "
                        f"(accepted: {-d}..{d - 1})")
    paired: set[int] = set()
    lut = None
    if cfg.mirror_pairs:
        bad = [c for pair in cfg.mirror_pairs for c in pair if c >= classes]
        if bad:
            raise DataError(f"augment.mirror_pairs names class {bad[0]}, but the data has classes "
                            f"0..{classes - 1}")
        lut = np.arange(256, dtype=np.uint8)
        for a, b in cfg.mirror_pairs:
            lut[a], lut[b] = b, a
            paired.update((a, b))
    found = lateral_classes(masks, classes, cfg.lateral_share) if cfg.lateral_check else {}
    lateral = {}
    for ax, cs in found.items():
        rest = [c for c in cs if not (ax == maxis and c in paired)]
        if rest:
            lateral[ax] = rest
    luts = {maxis: lut} if lut is not None and maxis not in lateral else {}
    flip_axes = tuple(a for a in range(d) if a not in lateral) if cfg.flips else ()
    plan = SymmetryPlan(d, flip_axes, luts if cfg.flips else {}, lateral)
    notes = []
    for ax, cs in sorted(lateral.items()):
        notes.append(f"class{'es' if len(cs) > 1 else ''} {_ids(cs)} lie{'' if len(cs) > 1 else 's'} "
                     f"on one side along {names[ax]} (> {cfg.lateral_share:.0%} of their training "
                     f"pixels), so no flips along {names[ax]}")
    if lut is not None:
        pairs = ", ".join(f"{a}<->{b}" for a, b in cfg.mirror_pairs)
        if maxis in lateral:
            notes.append(f"mirror pairs {pairs} not used: {names[maxis]} is not flipped")
        elif cfg.flips:
            notes.append(f"a flip along {names[maxis]} swaps the mirror pairs {pairs}")
    if cfg.rot90 and (lateral or lut is not None):
        blocked = sorted(set(lateral) | ({maxis} if lut is not None else set()))
        notes.append("no 90° turns in planes with " + "/".join(names[a] for a in blocked))
    plan.note = "; ".join(notes)
    return plan


def _warp_stack(x: np.ndarray, matrix: np.ndarray, flags: int) -> np.ndarray:
    """Warp (D, H, W[, C]) with one 2D affine for all slices, as an (H, W, D*C) image."""
    d, h, w = x.shape[:3]
    hw = np.ascontiguousarray(x.reshape(d, h, w, -1).transpose(1, 2, 0, 3).reshape(h, w, -1))
    outs = []
    for s in range(0, hw.shape[2], _CV_MAX_CHANNELS):
        part = np.ascontiguousarray(hw[..., s:s + _CV_MAX_CHANNELS])
        o = cv2.warpAffine(part, matrix, (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT_101)
        outs.append(o.reshape(h, w, -1))
    out = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
    out = out.reshape(h, w, d, -1).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(out.reshape(x.shape))


class InPlaneAffine3D(A.Transform3D):
    """Random rotation (±rotate degrees) and scale in the H×W plane, the same for every slice."""

    def __init__(self, rotate: float = 15.0, scale: tuple[float, float] = (0.85, 1.15), p: float = 0.5):
        super().__init__(p=p)
        self.rotate = float(rotate)
        self.scale = (float(scale[0]), float(scale[1]))

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = data["volume"].shape[1:3]
        angle = self.py_random.uniform(-self.rotate, self.rotate)
        scale = self.py_random.uniform(*self.scale)
        return {"matrix": cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)}

    def apply_to_volume(self, volume: np.ndarray, matrix: np.ndarray | None = None, **params: Any) -> np.ndarray:
        return _warp_stack(volume, matrix, cv2.INTER_LINEAR)

    def apply_to_mask3d(self, mask3d: np.ndarray, matrix: np.ndarray | None = None, **params: Any) -> np.ndarray:
        return _warp_stack(mask3d, matrix, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("rotate", "scale")


def build_augment(cfg: AugmentConfig, spatial_dims: int, *, patch_shape: Sequence[int] | None = None,
                  seed: int | None = None, plan: SymmetryPlan | None = None) -> A.Compose:
    """The training pipeline for `cfg` (see module docstring). `patch_shape` (spatial) decides
    which 90° turns keep the shape; None assumes a square / cubic patch. `plan` (from
    `plan_symmetry`) restricts flips and turns to label-safe ones; None allows all."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    shape = tuple(patch_shape) if patch_shape is not None else (1,) * spatial_dims
    plan = plan or SymmetryPlan.unrestricted(spatial_dims)
    everything = len(plan.free_axes) == spatial_dims
    t: list[A.BasicTransform] = []
    elastic = A.ElasticTransform(alpha=cfg.elastic_alpha, sigma=cfg.elastic_sigma, p=cfg.p_elastic,
                                 interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                                 border_mode=cv2.BORDER_REFLECT_101)
    if spatial_dims == 2:
        if cfg.flips and everything:
            t += [A.HorizontalFlip(p=cfg.p_flip), A.VerticalFlip(p=cfg.p_flip)]
        elif cfg.flips and plan.flip_axes:
            t.append(RandomFlip2D(p_axis=cfg.p_flip, axes=plan.flip_axes, luts=plan.luts))
        if cfg.rot90 and shape[0] == shape[1] and plan.rot_ok(0, 1):
            t.append(A.RandomRotate90(p=1.0))
        if cfg.affine:
            t.append(A.Affine(scale=cfg.scale, rotate=(-cfg.rotate, cfg.rotate), p=cfg.p_affine,
                              interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                              border_mode=cv2.BORDER_REFLECT_101))
    else:
        cubic = len(set(shape)) == 1
        if cfg.flips and cfg.rot90 and cubic and everything:
            t.append(A.CubicSymmetry(p=1.0))
        else:
            if cfg.flips and plan.flip_axes:
                t.append(RandomFlip3D(p_axis=cfg.p_flip, axes=plan.flip_axes, luts=plan.luts))
            if cfg.rot90 and shape[1] == shape[2] and plan.rot_ok(1, 2):
                t.append(A.RandomRotate90(p=1.0))
        if cfg.affine:
            t.append(InPlaneAffine3D(rotate=cfg.rotate, scale=cfg.scale, p=cfg.p_affine))
    if cfg.elastic:
        t.append(elastic)
    if cfg.intensity:
        t.append(IntensityJitter(brightness=cfg.brightness, contrast=cfg.contrast, gamma=cfg.gamma,
                                 noise_std=cfg.noise_std, p=cfg.p_intensity))
    return A.Compose(t, seed=seed)
