"""The preprocessed cache's arrays as the loaders see them: `CachedArray` (an image, mask or
index array in a cache file, read on demand and normalised as read) and `FgIndex` (one class's
foreground indices of a case). Written by `nas_attn.data.cache`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError


class CachedArray:
    """A (C, *spatial) image or (*spatial) mask in a cache file, read on demand.

    Indexing reads only what is asked for (the file is memory-mapped for the read and unmapped
    after, so the pages read do not stay in the process); `np.asarray` reads the whole array.
    With `scale` set (what `normalised` returns), what is read comes back as the model's float32
    input: per channel the settings' normalisation with this case's ranges."""

    __slots__ = ("path", "shape", "stored", "ranges", "scale", "_offset")

    def __init__(self, path: Path, shape: tuple[int, ...], stored: str,
                 ranges: dict[str, list] | None = None, scale: dict | None = None):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.stored = stored
        self.ranges = ranges or {}
        self.scale = scale
        self._offset: int | None = None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self.scale is not None else np.dtype(self.stored)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def _header(self) -> int:
        """Where the array starts in its .npy file (its header read once, and checked)."""
        if self._offset is None:
            with open(self.path, "rb") as f:
                fmt = np.lib.format
                version = fmt.read_magic(f)  # np.save writes 1.0 (2.0 for huge headers)
                shape, fortran, dtype = (fmt.read_array_header_1_0 if version == (1, 0)
                                         else fmt.read_array_header_2_0)(f)
                if tuple(shape) != self.shape or fortran or dtype != np.dtype(self.stored):
                    raise ValueError(f"holds {dtype} {shape}, the manifest says "
                                     f"{self.stored} {self.shape}")
                self._offset = f.tell()
        return self._offset

    def _read(self, key: Any) -> np.ndarray:
        try:
            mm = np.memmap(self.path, np.dtype(self.stored), "r", self._header(), self.shape)
        except (OSError, ValueError) as e:
            raise DataError(f"cache file {self.path}: unreadable ({e}); delete "
                            f"{self.path.parent} to rebuild it") from None
        try:
            return np.array(mm[key])
        finally:
            del mm

    def __getitem__(self, key: Any) -> np.ndarray:
        if self.scale is None:
            return self._read(key)
        key = key if isinstance(key, tuple) else (key,)
        if key and key[0] is not Ellipsis and not (isinstance(key[0], slice)
                                                   and key[0] == slice(None)):
            return np.asarray(self)[key]  # a channel subset: rare, read the whole case
        return _apply(self._read(key), self.scale)

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def normalised(self, settings: dict, role: str = "image") -> CachedArray:
        """This array as `readers.normalise(whole, settings, role)` would give it."""
        mode = settings.get("normalisation", "image")
        finite = self.ranges.get("finite") or [False] * self.shape[0]
        if mode in ("image", "percentile"):
            lows, highs = zip(*self.ranges["image"]) if self.ranges.get("image") else ((), ())
            scale = {"normalisation": "dataset", "low": list(lows), "high": list(highs),
                     "finite": finite}
        elif mode == "dataset":
            prefix = "aux_" if role == "aux" else ""
            scale = {"normalisation": "dataset", "low": list(settings[prefix + "low"]),
                     "high": list(settings[prefix + "high"]), "finite": finite}
        else:
            scale = {"normalisation": mode}
        return CachedArray(self.path, self.shape, self.stored, self.ranges, scale)

    def dataset_range(self, c: int) -> tuple[float, float] | None:
        r = self.ranges.get("dataset")
        return None if r is None or r[c] is None else (float(r[c][0]), float(r[c][1]))


def _apply(raw: np.ndarray, scale: dict) -> np.ndarray:
    """What `normalise_image(raw, scale)` gives, with the linear map of a channel that holds
    no NaN/inf (known from the build) skipping the search for them."""
    import torch

    from ..models.infer import normalise_image, scale_channel

    if raw.dtype == np.uint64:
        raw = raw.astype(np.float64)
    x = torch.from_numpy(np.require(raw, requirements=["C", "W"]))
    if scale["normalisation"] != "dataset":
        return normalise_image(x, scale).numpy()
    out = np.empty(raw.shape, np.float32)
    for c in range(raw.shape[0]):
        out[c] = scale_channel(x[c].to(torch.float64), float(scale["low"][c]),
                               float(scale["high"][c]), bool(scale["finite"][c])).numpy()
    return out


class FgIndex:
    """One class's foreground voxel indices of a case, read one at a time from the cache (a
    slice of the case's `CachedArray` of indices)."""

    __slots__ = ("array", "start", "size")

    def __init__(self, array: CachedArray, start: int, size: int):
        self.array, self.start, self.size = array, int(start), int(size)

    def __getitem__(self, j: int) -> int:
        return int(self.array[self.start + int(j)])
