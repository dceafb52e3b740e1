"""Sliding-window inference with Gaussian blending, 2D and 3D, in plain torch (copied into
model.py with `infer.py`; training validation uses it too)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from itertools import product

import torch


def _positions(size: int, patch: int, overlap: float) -> list[int]:
    """Patch starts on one axis: every `patch * (1 - overlap)` voxels (at least 1), the last one
    moved back to end at the border (MONAI's `dense_patch_slices`, which
    `tests/test_monai_parity.py` compares against)."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    n = math.ceil((size - patch) / step) + 1
    return [min(i * step, size - patch) for i in range(n)]


@lru_cache(maxsize=16)
def _gaussian(patch: tuple[int, ...], sigma_scale: float = 0.125) -> torch.Tensor:
    """Separable Gaussian weights centred on the patch ((p - 1) / 2, sigma = patch/8), not
    rescaled, floored at 1e-3 (MONAI's `compute_importance_map` in Gaussian mode)."""
    w = None
    for p in patch:
        x = torch.arange(p, dtype=torch.float64) - (p - 1) / 2
        g = torch.exp(-0.5 * (x / max(p * sigma_scale, 1e-6)) ** 2)
        w = g if w is None else w[..., None] * g
    return w.clamp_min(max(float(w.min()), 1e-3)).float()


def forward_logits(model, x: torch.Tensor, aux: torch.Tensor | None) -> torch.Tensor:
    """`model(x)` or `model(x, aux)`; the main output of a model that returns several."""
    out = model(x) if aux is None else model(x, aux)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out


def _pad_spatial(t: torch.Tensor, target: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the spatial dims of t (B, C, *sp) up to `target`, centred (as the training
    loader pads samples smaller than the patch); the slices that cut the original back out."""
    spatial = tuple(t.shape[2:])
    before = [(max(0, p - s)) // 2 for s, p in zip(spatial, target)]
    extra = [max(0, p - s) for s, p in zip(spatial, target)]
    if not any(extra):
        return t, tuple(slice(None) for _ in spatial)
    pads = []
    for b, e in zip(reversed(before), reversed(extra)):  # F.pad: last axis first
        pads += [b, e - b]
    crop = tuple(slice(b, b + s) for b, s in zip(before, spatial))
    return torch.nn.functional.pad(t, pads), crop


def patch_shape(patch_size, spatial_dims: int) -> list[int]:
    """The one rule for a patch size, wherever one is given (a space, a training, an export,
    model.py): a whole number, or a list of one, is that size on every spatial axis; else one
    positive entry per axis. ValueError, naming what is accepted, otherwise."""
    many = isinstance(patch_size, (list, tuple))
    ps = list(patch_size) if many else [patch_size]
    if not ps or any(isinstance(p, bool) or not hasattr(p, "__index__") or p.__index__() < 1
                     for p in ps):
        raise ValueError(f"patch_size {patch_size!r} is not accepted; give a positive whole "
                         f"number or a list of 1 or {spatial_dims} of them")
    ps = [p.__index__() for p in ps]
    if len(ps) == 1:
        ps = ps * spatial_dims
    if len(ps) != spatial_dims:
        raise ValueError(f"patch_size {ps} has {len(ps)} entries for {spatial_dims}D data "
                         f"(give 1 or {spatial_dims})")
    return ps


def _window_patch(image: torch.Tensor, patch_size, overlap: float,
                  aux: torch.Tensor | None) -> list[int]:
    """The patch as one int per spatial axis (one number means every axis), after checking
    the arguments of `sliding_window_predict`."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    spatial = tuple(image.shape[2:])
    d = len(spatial)
    if d not in (2, 3):
        raise ValueError(f"image must be (B, C, H, W) or (B, C, D, H, W), got shape "
                         f"{tuple(image.shape)}")
    ps = patch_shape(patch_size, d)
    if aux is not None and tuple(aux.shape[2:]) != spatial:
        raise ValueError(f"aux spatial shape {tuple(aux.shape[2:])} differs from image {spatial}")
    return ps


def _tiled(model, image: torch.Tensor, patch: tuple[int, ...], overlap: float,
           aux: torch.Tensor | None, batch: int, fill: bool) -> torch.Tensor:
    """The Gaussian-weighted average of the model's logits over patches tiling `image` (no
    smaller than `patch` on any axis), `batch` patches per forward pass."""
    spatial = tuple(image.shape[2:])
    starts = list(product(*[_positions(s, p, overlap) for s, p in zip(spatial, patch)]))
    weight = _gaussian(patch).to(image.device)
    b = image.shape[0]
    out = norm = None
    step = min(max(1, int(batch)), len(starts))  # never more filler than patches
    for i in range(0, len(starts), step):
        chunk = starts[i:i + step]
        sls = [tuple(slice(s, s + p) for s, p in zip(st, patch)) for st in chunk]
        parts = [image[(slice(None), slice(None)) + sl] for sl in sls]
        aparts = None if aux is None else [aux[(slice(None), slice(None)) + sl] for sl in sls]
        missing = step - len(chunk) if fill else 0
        if missing:  # the last group: same batch size as the others (no new shape to tune)
            parts.append(parts[0].new_zeros((missing * b,) + parts[0].shape[1:]))
            if aparts is not None:
                aparts.append(aparts[0].new_zeros((missing * b,) + aparts[0].shape[1:]))
        x = torch.cat(parts, dim=0)
        a = None if aparts is None else torch.cat(aparts, dim=0)
        y = forward_logits(model, x, a).float()
        if out is None:
            out = torch.zeros((b, y.shape[1]) + spatial, dtype=torch.float32, device=image.device)
            norm = torch.zeros((1, 1) + spatial, dtype=torch.float32, device=image.device)
        for j, sl in enumerate(sls):
            full = (slice(None), slice(None)) + sl
            out[full] += y[j * b:(j + 1) * b] * weight
            norm[full] += weight
    return out / norm


@torch.no_grad()
def sliding_window_predict(model, image: torch.Tensor, patch_size: Sequence[int] | int, *,
                           overlap: float = 0.25, aux: torch.Tensor | None = None,
                           batch: int = 4, fill: bool | None = None) -> torch.Tensor:
    """Logits (B, out, *spatial) of `model` over `image` (B, C, *spatial).

    Every forward pass sees the patch size, so cuDNN (benchmark mode) tunes its kernels once
    for training and evaluation instead of once per new image shape: an image smaller than the
    patch on an axis is zero-padded (centred, as the training loader pads small samples) to the
    patch there and its logits are cut back; an image of exactly the patch size takes one plain
    forward pass. Larger images are tiled by patches with `overlap`, a step of
    `patch * (1 - overlap)` with the last patch moved back to end at the border (MONAI's
    tiling), and overlapping outputs are averaged with Gaussian weights (sigma = patch/8),
    which downweights patch borders. `aux` (B, C_aux, *spatial) is padded
    and cut the same way and passed as `model(x, aux)`. `batch` patches per image go through the
    model at once; with `fill` (default: on CUDA, where cuDNN tunes per shape; elsewhere the
    filler is only work thrown away) the last, partial group is filled up with zero patches to
    the same batch size (their outputs are dropped). Runs under `torch.no_grad()`, on the
    image's device; put the model in eval mode first (BatchNorm would otherwise use per-batch statistics, and the
    filler patches would change the results).
    """
    ps = _window_patch(image, patch_size, overlap, aux)
    spatial = tuple(image.shape[2:])
    if any(s < p for s, p in zip(spatial, ps)):
        padded = tuple(max(s, p) for s, p in zip(spatial, ps))
        image, crop = _pad_spatial(image, padded)
        if aux is not None:
            aux = _pad_spatial(aux, padded)[0]
        out = sliding_window_predict(model, image, ps, overlap=overlap, aux=aux, batch=batch,
                                     fill=fill)
        return out[(slice(None), slice(None)) + crop]
    if all(s == p for s, p in zip(spatial, ps)):
        return forward_logits(model, image, aux)
    fill = image.device.type == "cuda" if fill is None else fill
    return _tiled(model, image, tuple(ps), overlap, aux, batch, fill)
