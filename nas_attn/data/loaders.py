"""Torch datasets and loaders over in-memory `SegData`.

Training: `PatchDataset` draws one patch per item. The patch lies at a uniform random position,
or, with probability `fg_oversample`, is centred (as far as the borders allow) on a foreground
voxel: first a foreground class present in the sample is picked uniformly, then one of its
voxels, so rare classes are seen too. Foreground voxel indices are computed once per sample
(at most 100 000 per class, a seeded subset). Samples smaller than the patch are zero-padded
(once, up front). Then augmentation (`augment.build_augment`) runs on the patch only.

Patch size: `cfg.patch_size` (one number = every axis), else the training images' size if they
all share one, else the per-axis minimum size over the training images (random crops).

Validation: whole images, batch size 1 (sizes may differ), no augmentation.

Batches are dicts: "image" float32 (B, C, *spatial), "mask" uint8 (B, *spatial; int64 when
the data has more than 256 classes: `Runtime.to_device` makes it int64 on the device, 8x less
to collate and copy) and, when the data has an aux modality, "aux" float32 (B, C_aux, *spatial).

Workers: `cfg.num_workers`, or when it is None, none on the CPU (the model needs the cores) and
`auto_workers()` on CUDA; each worker runs torch and OpenCV with one thread (collating with
torch's default thread count was ~30x slower on a small machine; torch sets its own, OpenCV's
is set before the workers start).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .augment import SymmetryPlan, build_augment, plan_symmetry
from .config import AugmentConfig, DataConfig
from .segdata import SegData

MAX_FG_INDICES = 100_000


def _tensor(a: np.ndarray, dtype) -> torch.Tensor:
    """A C-contiguous copy-if-needed of `a` as a tensor. numpy calls an array with a size-1
    axis contiguous even when that axis' stride is negative (a flip of a 1-pixel-wide image),
    which torch refuses: such arrays are copied."""
    a = np.ascontiguousarray(a, dtype=dtype)
    if any(st < 0 for st in a.strides):
        a = a.copy()
    return torch.from_numpy(a)


def _mask_dtype(classes: int):
    return np.uint8 if classes <= 256 else np.int64


def resolve_patch(patch_size: Sequence[int] | None, data: SegData) -> tuple[int, ...]:
    d = data.spatial_dims
    if patch_size is None:
        shapes = np.array(data.shapes)
        return tuple(int(s) for s in shapes.min(0))
    from ..models.sliding import patch_shape  # the one rule (one number: every axis)

    try:
        return tuple(patch_shape(patch_size, d))
    except ValueError as e:
        raise DataError(str(e)) from None


def _pad_to(a: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """Zero-pad the trailing spatial axes of `a` up to `spatial` (centred)."""
    lead = a.ndim - len(spatial)
    pads = [(0, 0)] * lead
    for s, t in zip(a.shape[lead:], spatial):
        extra = max(0, t - s)
        pads.append((extra // 2, extra - extra // 2))
    return np.pad(a, pads) if any(p != (0, 0) for p in pads) else a


class PatchDataset(Dataset):
    """Random training patches (see module docstring); `length` items per epoch."""

    def __init__(self, data: SegData, patch: Sequence[int], *, fg_oversample: float = 0.33,
                 augment=None, length: int | None = None, seed: int = 0):
        if len(data) == 0:
            raise DataError("no training samples")
        self.data = data
        self.patch = tuple(int(p) for p in patch)
        self.fg_oversample = float(fg_oversample)
        self.augment = augment if (augment is not None and len(augment.transforms)) else None
        self.length = int(length) if length else len(data)
        self.mask_dtype = _mask_dtype(data.classes)
        self.rng = np.random.default_rng([seed, 104729])
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.aux: list[np.ndarray] | None = [] if data.aux is not None else None
        self.fg: list[list[np.ndarray]] = []
        sub = np.random.default_rng([seed, 1299709])
        for i in range(len(data)):
            target = tuple(max(s, p) for s, p in zip(data.masks[i].shape, self.patch))
            m = _pad_to(data.masks[i], target)
            self.images.append(_pad_to(data.images[i], target))
            self.masks.append(m)
            if self.aux is not None:
                self.aux.append(_pad_to(data.aux[i], target))
            if data.fg is not None and m is data.masks[i]:  # indexed in advance, not padded
                self.fg.append([f for f in data.fg[i] if f.size])
                continue
            flat = np.asarray(m).ravel()
            per_class = []
            for c in range(1, data.classes):
                idx = np.flatnonzero(flat == c)
                if idx.size > MAX_FG_INDICES:
                    idx = np.sort(sub.choice(idx, MAX_FG_INDICES, replace=False))
                if idx.size:
                    per_class.append(idx.astype(np.int64))
            self.fg.append(per_class)

    def __len__(self) -> int:
        return self.length

    def reseed(self, seed: int) -> None:
        """Restart the patch and augmentation streams, as a fresh dataset with `seed` would."""
        self.rng = np.random.default_rng([seed, 104729])
        if self.augment is not None:
            self.augment.set_random_seed(int(seed))

    def _start(self, k: int) -> tuple[int, ...]:
        shape = self.masks[k].shape
        free = [s - p for s, p in zip(shape, self.patch)]
        rng = self.rng
        fg = self.fg[k]
        if fg and self.fg_oversample > 0 and rng.random() < self.fg_oversample:
            idx = fg[int(rng.integers(len(fg)))]
            centre = np.unravel_index(int(idx[int(rng.integers(idx.size))]), shape)
            return tuple(int(min(max(c - p // 2, 0), f)) for c, p, f in zip(centre, self.patch, free))
        return tuple(int(rng.integers(0, f + 1)) for f in free)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k = int(i) % len(self.images)
        start = self._start(k)
        sl = tuple(slice(s, s + p) for s, p in zip(start, self.patch))
        x = self.images[k][(slice(None),) + sl]
        m = self.masks[k][sl]
        c = x.shape[0]
        if self.aux is not None:
            x = np.concatenate([x, self.aux[k][(slice(None),) + sl]], axis=0)
        if self.augment is not None:
            cl = np.ascontiguousarray(np.moveaxis(x, 0, -1))
            m8 = m.astype(np.uint8)
            if m.ndim == 2:
                out = self.augment(image=cl, mask=m8)
                x, m = np.moveaxis(out["image"], -1, 0), out["mask"]
            else:
                out = self.augment(volume=cl, mask3d=m8)
                x, m = np.moveaxis(out["volume"], -1, 0), out["mask3d"]
            if x.ndim == m.ndim:  # a transform dropped a single channel axis
                x = x[None]
        item = {"image": _tensor(x[:c], np.float32),
                "mask": _tensor(m, self.mask_dtype)}
        if self.aux is not None:
            item["aux"] = _tensor(x[c:], np.float32)
        return item


class WholeImageDataset(Dataset):
    """Whole samples, unchanged (validation)."""

    def __init__(self, data: SegData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        d = self.data
        item = {"image": _tensor(d.images[i], np.float32),
                "mask": _tensor(d.masks[i], _mask_dtype(d.classes))}
        if d.aux is not None:
            item["aux"] = _tensor(d.aux[i], np.float32)
        if d.spacings is not None:  # mm per axis: HD95 in mm
            item["spacing"] = torch.tensor(d.spacings[i], dtype=torch.float64)
        return item


def auto_workers(device_is_cuda: bool) -> int:
    """Loader workers when `num_workers` is not set: 0 on the CPU, else one per usable core
    less one for the training process, at most 8."""
    if not device_is_cuda:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores - 1))


def _cv2_one_thread() -> None:
    """OpenCV with one thread, set in the loader's process before its workers fork (they inherit
    it; torch already runs each worker with one thread). Not set inside a forked worker:
    reconfiguring a thread pool the parent had started can hang the child."""
    try:
        import cv2
    except ImportError:  # albumentations brings OpenCV; nothing to limit without it
        return
    cv2.setNumThreads(1)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    ds = info.dataset
    ds.rng = np.random.default_rng([info.seed % (1 << 63), worker_id])
    if ds.augment is not None:
        ds.augment.set_random_seed(int(info.seed % (1 << 32)))


def _any_augment(a: AugmentConfig) -> bool:
    return a.flips or a.rot90 or a.affine or a.intensity or a.elastic


def symmetry_plan(train: SegData, cfg: DataConfig) -> SymmetryPlan:
    """Which flips / 90° turns keep label meanings on `train` (`augment.plan_symmetry`); its
    `note` is what `nas-attn data check` and `nas-attn train` print. Also on
    `train_loader.dataset.symmetry`."""
    if not (cfg.augment.flips or cfg.augment.rot90):
        return SymmetryPlan.unrestricted(train.spatial_dims)
    return plan_symmetry(cfg.augment, train.masks, train.spatial_dims, train.classes)


def make_loaders(train: SegData, val: SegData, cfg: DataConfig, *, batch_size: int, seed: int,
                 device_is_cuda: bool = False, samples_per_epoch: int | None = None
                 ) -> tuple[DataLoader, DataLoader]:
    """(train_loader, val_loader) over in-memory data; see module docstring.

    `samples_per_epoch` (default: the number of training samples) patches make one epoch; a
    last partial batch is dropped when at least one full batch exists, so batches keep one size.
    Flips and 90° turns are limited to label-safe ones (`symmetry_plan`).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if samples_per_epoch is not None and samples_per_epoch < 1:
        raise DataError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"need training and validation samples, got {len(train)} and {len(val)}")
    if train.spatial_dims != val.spatial_dims or train.in_channels != val.in_channels:
        raise DataError("train and val data differ in spatial_dims or channels")
    patch = resolve_patch(cfg.patch_size, train)
    plan = symmetry_plan(train, cfg)
    aug = (build_augment(cfg.augment, train.spatial_dims, patch_shape=patch, seed=seed, plan=plan)
           if _any_augment(cfg.augment) else None)
    length = samples_per_epoch or len(train)
    ds = PatchDataset(train, patch, fg_oversample=cfg.fg_oversample, augment=aug,
                      length=length, seed=seed)
    ds.symmetry = plan
    g = torch.Generator()
    g.manual_seed(int(seed))
    workers = cfg.num_workers if cfg.num_workers is not None else auto_workers(device_is_cuda)
    if workers:
        _cv2_one_thread()  # the workers do the augmenting: one OpenCV thread each
    train_loader = DataLoader(
        ds, batch_size=batch_size, shuffle=True, generator=g, num_workers=workers,
        pin_memory=device_is_cuda, drop_last=length >= batch_size,
        worker_init_fn=_worker_init if workers else None, persistent_workers=workers > 0,
    )
    # validation items are views on memory: workers would only add copying
    val_loader = DataLoader(WholeImageDataset(val), batch_size=1, shuffle=False, num_workers=0,
                            pin_memory=device_is_cuda)
    return train_loader, val_loader
