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

All randomness comes from the Compose's own generators (`seed=`), so a seeded pipeline repeats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

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


class RandomFlip3D(A.Transform3D):
    """Flip a volume (and its mask) along each of D, H, W with probability `p_axis`."""

    def __init__(self, p_axis: float = 0.5, p: float = 1.0):
        super().__init__(p=p)
        self.p_axis = float(p_axis)

    def get_params(self) -> dict[str, Any]:
        return {"axes": tuple(ax for ax in range(3) if self.py_random.random() < self.p_axis)}

    def apply_to_volume(self, volume: np.ndarray, axes: tuple[int, ...] = (), **params: Any) -> np.ndarray:
        return np.ascontiguousarray(np.flip(volume, axes)) if axes else volume

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("p_axis",)


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
                  seed: int | None = None) -> A.Compose:
    """The training pipeline for `cfg` (see module docstring). `patch_shape` (spatial) decides
    which 90° turns keep the shape; None assumes a square / cubic patch."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    shape = tuple(patch_shape) if patch_shape is not None else (1,) * spatial_dims
    t: list[A.BasicTransform] = []
    elastic = A.ElasticTransform(alpha=cfg.elastic_alpha, sigma=cfg.elastic_sigma, p=cfg.p_elastic,
                                 interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                                 border_mode=cv2.BORDER_REFLECT_101)
    if spatial_dims == 2:
        if cfg.flips:
            t += [A.HorizontalFlip(p=cfg.p_flip), A.VerticalFlip(p=cfg.p_flip)]
        if cfg.rot90 and shape[0] == shape[1]:
            t.append(A.RandomRotate90(p=1.0))
        if cfg.affine:
            t.append(A.Affine(scale=cfg.scale, rotate=(-cfg.rotate, cfg.rotate), p=cfg.p_affine,
                              interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                              border_mode=cv2.BORDER_REFLECT_101))
    else:
        cubic = len(set(shape)) == 1
        if cfg.flips and cfg.rot90 and cubic:
            t.append(A.CubicSymmetry(p=1.0))
        else:
            if cfg.flips:
                t.append(RandomFlip3D(p_axis=cfg.p_flip))
            if cfg.rot90 and shape[1] == shape[2]:
                t.append(A.RandomRotate90(p=1.0))
        if cfg.affine:
            t.append(InPlaneAffine3D(rotate=cfg.rotate, scale=cfg.scale, p=cfg.p_affine))
    if cfg.elastic:
        t.append(elastic)
    if cfg.intensity:
        t.append(IntensityJitter(brightness=cfg.brightness, contrast=cfg.contrast, gamma=cfg.gamma,
                                 noise_std=cfg.noise_std, p=cfg.p_intensity))
    return A.Compose(t, seed=seed)
