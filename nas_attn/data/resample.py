"""One voxel spacing for training, as nnU-Net does it: cases whose spacings differ are resampled
to the median spacing; predictions go back to each input's own grid.

- Target: the per-axis median of the cases' spacings (mm, array axis order). Cases within
  `TOLERANCE` (relative, every axis) of it are left as they are; when every case is, nothing
  is resampled. A case more than `MAX_RATIO` times finer or coarser than the target on an axis
  is refused (one line naming its file): that is another acquisition, not another spacing. A
  folder in which some cases give a spacing and others do not is refused too.
- Images (and aux): third-order splines (`scipy.ndimage.zoom`, edges extended), in float32.
  When the target is anisotropic (its largest spacing more than `ANISO_RATIO` times its
  smallest), the coarse axis is resampled with nearest neighbours and the others with splines,
  so slices are not blurred into each other (nnU-Net's "separate z").
- Labels: nearest neighbour.
- Predictions (`nas_attn.inference.prediction`): class scores resampled linearly back to the input's shape,
  then the arg max (nnU-Net resamples its softmax the same way).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError

TOLERANCE = 0.01
MAX_RATIO = 8.0
ANISO_RATIO = 3.0


def close(a: Sequence[float], b: Sequence[float], tol: float = TOLERANCE) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol * max(abs(y), 1e-12) for x, y in zip(a, b))


def plan_target(spacings: Sequence[tuple[float, ...] | None], files: Sequence[str],
                target: Sequence[float] | None = None) -> tuple[float, ...] | None:
    """The spacing to resample to (module docstring: the median, or `target` when given, e.g.
    a separate test folder brought to the training spacing), or None when nothing needs it."""
    known = [s for s in spacings if s is not None]
    if not known:
        return None
    if len(known) != len(spacings):
        missing = next(f for f, s in zip(files, spacings) if s is None)
        raise DataError(f"{missing}: no voxel spacing in its header, while {len(known)} other "
                        "cases give one (accepted: every case with a spacing, or none)")
    if len({len(s) for s in known}) != 1:
        raise DataError(f"{files[0]}: spacings of different lengths across cases")
    median = target is None
    target = tuple(float(x) for x in (np.median(np.array(known, dtype=np.float64), axis=0)
                                      if target is None else target))
    if len(target) != len(known[0]):
        raise DataError(f"{files[0]}: {len(known[0])} spacing axes, the target has {len(target)}")
    if all(close(s, target) for s in known):
        return None
    for f, s in zip(files, known):
        ratio = max(max(a / b, b / a) for a, b in zip(s, target))
        if ratio > MAX_RATIO:
            raise DataError(
                f"{f}: voxel spacing {'×'.join(f'{v:g}' for v in s)} mm is {ratio:.1f} times the "
                f"{'median' if median else 'training spacing'} "
                f"{'×'.join(f'{v:g}' for v in target)} mm (accepted: within "
                f"{MAX_RATIO:g} times on every axis; leave such a case out or resample it "
                "beforehand)")
    return target


def common_spacing(data) -> list[float] | None:
    """The one voxel spacing of `data`'s samples (a `SegData`; equal within `TOLERANCE`, as
    training data is after `load_data`), else None."""
    sp = getattr(data, "spacings", None)
    if not sp or any(s is None for s in sp) or not all(close(s, sp[0]) for s in sp):
        return None
    return [float(v) for v in sp[0]]


def new_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
              ) -> tuple[int, ...]:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def _zoom(a: np.ndarray, shape: tuple[int, ...], order: int, coarse: int | None) -> np.ndarray:
    from scipy.ndimage import zoom

    if tuple(a.shape) == shape:
        return a
    factors = [n / o for n, o in zip(shape, a.shape)]
    if coarse is None or order == 0:
        return zoom(a, factors, order=order, mode="nearest", grid_mode=False)
    inplane = list(factors)
    inplane[coarse] = 1.0
    out = zoom(a, inplane, order=order, mode="nearest", grid_mode=False)
    along = [1.0] * a.ndim
    along[coarse] = factors[coarse]
    return zoom(out, along, order=0, mode="nearest", grid_mode=False)


def coarse_axis(target: Sequence[float]) -> int | None:
    """The axis resampled with nearest neighbours (an anisotropic target), else None."""
    t = np.asarray(target, dtype=np.float64)
    return int(t.argmax()) if t.max() > ANISO_RATIO * t.min() else None


def resample_image(image: np.ndarray, spacing: Sequence[float], target: Sequence[float]
                   ) -> np.ndarray:
    """(C, *spatial) raw intensities at `spacing` -> float32 at `target`. NaN/inf read as the
    channel's lowest finite value (normalisation reads them so too)."""
    shape = new_shape(image.shape[1:], spacing, target)
    coarse = coarse_axis(target)
    out = np.empty((image.shape[0], *shape), np.float32)
    for c in range(image.shape[0]):
        ch = np.asarray(image[c], dtype=np.float32)
        bad = ~np.isfinite(ch)
        if bad.any():
            ch = np.where(bad, ch[~bad].min() if (~bad).any() else 0.0, ch)
        out[c] = _zoom(ch, shape, 3, coarse)
    return out


def resample_labels(mask: np.ndarray, spacing: Sequence[float], target: Sequence[float]
                    ) -> np.ndarray:
    return _zoom(np.asarray(mask), new_shape(mask.shape, spacing, target), 0, None)


def scores_to_shape(scores, shape: Sequence[int]):
    """(B, K, *spatial) class scores (a torch tensor) resampled linearly to `shape`."""
    import torch.nn.functional as F

    if tuple(scores.shape[2:]) == tuple(shape):
        return scores
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return F.interpolate(scores.float(), size=tuple(int(s) for s in shape), mode=mode,
                         align_corners=True)
