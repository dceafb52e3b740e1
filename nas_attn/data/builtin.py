"""A seeded procedural dataset whose labels need long-range context.

Every image (or volume) holds 4-7 objects of two shapes, discs (balls in 3D) and squares (cubes),
of equal area, drawn with the same intensity distribution on a textured, noisy background. One
corner (random among the 4, or 8 in 3D) holds a small square *cue*: bright (0.95) says "discs are
the target", dark (0.05) says "squares are the target".

Classes (`class_names`):

- 0 `background`: background and the cue itself;
- 1 `target`: objects of the shape the cue names;
- 2 `distractor`: objects of the other shape.

Finding objects is local (they stand out from the background), telling a disc from a square is
local too, but whether a disc is class 1 or class 2 depends on a cue that may sit a whole image
away. A network that only sees a neighbourhood can do no better than guess per image between
1 and 2; one whose receptive field or attention reaches the cue can solve it.

`aux=True` adds a second one-channel modality on the same grid: a noisier view of the objects
(on a different texture) without the cue, so it helps find objects but never tells 1 from 2.

Values are in [0, 1] already (fixed scale, no per-image normalisation). Each sample is drawn
from its own generator seeded with (seed, index, spatial_dims), so a larger `n` keeps the first
samples unchanged, and everything is fully deterministic.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataError
from .segdata import SegData

CLASS_NAMES = ["background", "target", "distractor"]
DEFAULTS = {2: {"n": 64, "size": 64}, 3: {"n": 16, "size": 32}}
BG, OBJ, OBJ_SPREAD, CUE_BRIGHT, CUE_DARK = 0.35, 0.65, 0.06, 0.95, 0.05
TEXTURE_AMP, NOISE = 0.06, 0.05


def _texture(rng: np.random.Generator, grids: list[np.ndarray], size: int, amp: float) -> np.ndarray:
    out = 0.0
    for _ in range(2):
        k = rng.integers(1, 5, size=len(grids)) * rng.choice([-1, 1], size=len(grids))
        phase = rng.uniform(0, 2 * math.pi)
        arg = sum(float(kk) * g for kk, g in zip(k, grids)) * (2 * math.pi / size) + phase
        out = out + amp * np.sin(arg)
    return out


def _one(rng: np.random.Generator, d: int, size: int, grids: list[np.ndarray], with_aux: bool):
    shape = (size,) * d
    img = (BG + _texture(rng, grids, size, TEXTURE_AMP)) * np.ones(shape, np.float32)
    mask = np.zeros(shape, np.int64)
    objmap = np.zeros(shape, bool)

    target = int(rng.integers(2))  # 0: discs/balls are the target, 1: squares/cubes
    cs = max(3, size // 8)
    corner = rng.integers(2, size=d)
    cue_lo = [0 if c == 0 else size - cs for c in corner]
    cue_sl = tuple(slice(lo, lo + cs) for lo in cue_lo)
    cue_c = np.array([lo + cs / 2 for lo in cue_lo])

    r_lo, r_hi = (max(3.0, size / 16), max(4.0, size / 9)) if d == 2 else (max(3.0, size / 8), max(4.0, size / 5))
    k_obj = int(rng.integers(4, 8)) if d == 2 else int(rng.integers(3, 7))
    kinds = [0, 1] + [int(t) for t in rng.integers(2, size=k_obj - 2)]
    rng.shuffle(kinds)
    square_a = (math.pi / 4) ** 0.5 if d == 2 else (math.pi / 6) ** (1 / 3)
    placed: list[tuple[np.ndarray, float]] = []
    for kind in kinds:
        for _ in range(30):
            r = float(rng.uniform(r_lo, r_hi))
            c = rng.uniform(r + 1, size - r - 2, size=d)
            if np.abs(c - cue_c).max() < r * 1.3 + cs / 2 + 2:
                continue
            if any(np.linalg.norm(c - c2) < (r + r2) * 1.3 + 2 for c2, r2 in placed):
                continue
            break
        else:
            continue
        placed.append((c, r))
        lo = [max(0, math.floor(ci - r - 1)) for ci in c]
        hi = [min(size, math.ceil(ci + r + 2)) for ci in c]
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        local = [g[tuple(slice(a, b) if j == i else slice(None) for j in range(d))] - ci
                 for i, (g, a, b, ci) in enumerate(zip(grids, lo, hi, c))]
        if kind == 0:
            inside = sum(x * x for x in local) <= r * r
        else:
            inside = np.maximum.reduce([np.abs(x) for x in np.broadcast_arrays(*local)]) <= r * square_a
        inside = np.broadcast_to(inside, tuple(b - a for a, b in zip(lo, hi)))
        img[sl][inside] = OBJ + float(rng.uniform(-OBJ_SPREAD, OBJ_SPREAD))
        mask[sl][inside] = 1 if kind == target else 2
        objmap[sl] |= inside

    img[cue_sl] = CUE_BRIGHT if target == 0 else CUE_DARK
    img += rng.normal(0.0, NOISE, size=shape).astype(np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    aux = None
    if with_aux:
        aux = (0.25 + _texture(rng, grids, size, 0.1) + 0.45 * objmap).astype(np.float32)
        aux += rng.normal(0.0, 0.12, size=shape).astype(np.float32)
        np.clip(aux, 0.0, 1.0, out=aux)
        aux = aux[None]
    return img[None], mask, aux


def make_builtin(spatial_dims: int = 2, *, n: int | None = None, size: int | None = None,
                 seed: int = 0, aux: bool = False) -> SegData:
    """The procedural cue dataset (see module docstring): `n` samples of `size`^spatial_dims,
    1 channel, 3 classes. Defaults: 64 images of 64² (2D), 16 volumes of 32³ (3D)."""
    if spatial_dims not in (2, 3):
        raise DataError(f"builtin data: spatial_dims must be 2 or 3, got {spatial_dims!r}")
    n = DEFAULTS[spatial_dims]["n"] if n is None else n
    size = DEFAULTS[spatial_dims]["size"] if size is None else size
    if not isinstance(n, int) or n < 1:
        raise DataError(f"builtin data: n must be an integer >= 1, got {n!r}")
    if not isinstance(size, int) or size < 16:
        raise DataError(f"builtin data: size must be an integer >= 16 (objects must fit), got {size!r}")
    grids = [g.astype(np.float32) for g in np.ogrid[tuple(slice(0, size) for _ in range(spatial_dims))]]
    images, masks, auxs = [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i, spatial_dims])
        im, m, a = _one(rng, spatial_dims, size, grids, aux)
        images.append(im)
        masks.append(m)
        auxs.append(a)
    return SegData(
        images=images, masks=masks, names=[f"builtin{spatial_dims}d_{seed}_{i:04d}" for i in range(n)],
        spatial_dims=spatial_dims, in_channels=1, classes=3,
        aux=auxs if aux else None, aux_channels=1 if aux else 0,
        class_names=list(CLASS_NAMES), source=f"builtin{'3d' if spatial_dims == 3 else ''}",
    )
