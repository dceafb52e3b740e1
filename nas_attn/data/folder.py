"""`load_folder` / `check_folder`, with a per-process cache.

A folder is decoded once per (resolved path, spatial_dims, file signature); the signature is the
(name, size, mtime_ns) of every file under images/, masks/, aux/ and the split / class files, so
editing a file makes the next call decode again, and an unchanged folder gives back the very
same `SegData` object. `nas_attn.data.clear_cache()` (split.py) drops everything.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .check import SUBDIRS, scan_folder
from .layouts import TREE_DIRS
from .report import FolderReport
from .segdata import SegData
from .split_files import SPLIT_FILES

_CACHE: dict[tuple, tuple[FolderReport, SegData | None]] = {}
_REPORTS: dict[tuple, FolderReport] = {}


def folder_signature(root: Path) -> tuple:
    sig = []
    for sub in SUBDIRS + TREE_DIRS:
        d = root / sub
        if d.is_dir():
            with os.scandir(d) as it:
                for e in it:
                    try:
                        st = e.stat()
                    except OSError:  # a broken link or a link loop: the scan reports it
                        sig.append((sub, e.name, -1, -1))
                        continue
                    sig.append((sub, e.name, st.st_size, st.st_mtime_ns))
    for name in SPLIT_FILES + ("classes.txt", "dataset.json"):
        p = root / name
        if p.exists():
            st = p.stat()
            sig.append(("", name, st.st_size, st.st_mtime_ns))
    return tuple(sorted(sig))


def _unchanged_by(rep: FolderReport, resample) -> bool:
    """Whether resampling as `resample` asks would leave the decoding of `rep` as it is: one
    spacing (or none) across the cases, and, for a given target, that one."""
    from .resample import close

    if rep.spacing_min is None:  # no spacing: nothing to resample
        return True
    if rep.spacing_min != rep.spacing_max:
        return False
    return not isinstance(resample, tuple) or close(rep.spacing_min, resample)


def _scan_cached(path: str | os.PathLike, spatial_dims: int | None,
                 resample: bool | tuple[float, ...] = False
                 ) -> tuple[FolderReport, SegData | None]:
    if spatial_dims not in (None, 2, 3):
        raise DataError(f"spatial_dims must be 2, 3 or None (infer), got {spatial_dims!r}")
    root = Path(path).expanduser().resolve()
    key = (str(root), spatial_dims, folder_signature(root) if root.is_dir() else None, resample)
    hit = _CACHE.get(key)
    plain = _CACHE.get(key[:3] + (False,))
    if hit is None and plain is not None and _unchanged_by(plain[0], resample):
        hit = plain
    if hit is None:
        hit = scan_folder(root, spatial_dims, resample=resample)
        # keep only the newest version of a folder
        for k in [k for k in _CACHE if k[:2] == key[:2] and k[2] != key[2]]:
            del _CACHE[k]
        _CACHE[key] = hit
        if resample and hit[0].resampled_to is None:
            _CACHE[key[:3] + (False,)] = hit  # nothing was resampled: the plain decoding
    return hit


def _drop(sample):
    sample.image = sample.mask = sample.aux = None
    return sample


def check_folder(path: str | os.PathLike, *, spatial_dims: int | None = None) -> FolderReport:
    """Validate a dataset folder without raising; every problem is in `report.problems`. One
    sample at a time is decoded and dropped (a folder larger than memory can be checked); a
    folder `load_folder` already decoded is not read again."""
    if spatial_dims not in (None, 2, 3):
        raise DataError(f"spatial_dims must be 2, 3 or None (infer), got {spatial_dims!r}")
    root = Path(path).expanduser().resolve()
    key = (str(root), spatial_dims, folder_signature(root) if root.is_dir() else None)
    hit = _CACHE.get(key + (False,))  # a resampled decoding reports the new spacings
    if hit is not None:
        return hit[0]
    if key not in _REPORTS:
        for k in [k for k in _REPORTS if k[:2] == key[:2]]:
            del _REPORTS[k]
        _REPORTS[key] = scan_folder(root, spatial_dims, sink=_drop, resample="check")[0]
    return _REPORTS[key]


def load_folder(path: str | os.PathLike, *, spatial_dims: int | None = None,
                resample: bool | tuple[float, ...] = False) -> SegData:
    """Decode a dataset folder (images/, masks/, optional aux/); raises DataError listing every
    problem. Layout and normalisation rules: `nas_attn.data.readers`; folder layout and split
    files: `nas_attn.data.check`. `resample`: cases of different voxel spacings are brought
    to the median one (`nas_attn.data.resample`; what training does; evaluation and
    prediction read each file on its own grid); a tuple: to that spacing (a test folder, to
    the training spacing)."""
    rep, data = _scan_cached(path, spatial_dims, resample)
    if data is None:
        lines = "\n".join(f"  - {p}" for p in rep.problems)
        raise DataError(f"dataset folder {rep.path}: {len(rep.problems)} problem"
                        f"{'s' if len(rep.problems) != 1 else ''}:\n{lines}")
    return data
