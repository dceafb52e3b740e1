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
from .check import SPLIT_FILES, SUBDIRS, FolderReport, scan_folder
from .layouts import TREE_DIRS
from .segdata import SegData

_CACHE: dict[tuple, tuple[FolderReport, SegData | None]] = {}


def _signature(root: Path) -> tuple:
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


def _scan_cached(path: str | os.PathLike, spatial_dims: int | None) -> tuple[FolderReport, SegData | None]:
    if spatial_dims not in (None, 2, 3):
        raise DataError(f"spatial_dims must be 2, 3 or None (infer), got {spatial_dims!r}")
    root = Path(path).expanduser().resolve()
    key = (str(root), spatial_dims, _signature(root) if root.is_dir() else None)
    hit = _CACHE.get(key)
    if hit is None:
        hit = scan_folder(root, spatial_dims)
        # keep only the newest version of a folder
        for k in [k for k in _CACHE if k[0] == key[0] and k[1] == key[1]]:
            del _CACHE[k]
        _CACHE[key] = hit
    return hit


def check_folder(path: str | os.PathLike, *, spatial_dims: int | None = None) -> FolderReport:
    """Validate a dataset folder without raising; every problem is in `report.problems`."""
    return _scan_cached(path, spatial_dims)[0]


def load_folder(path: str | os.PathLike, *, spatial_dims: int | None = None) -> SegData:
    """Decode a dataset folder (images/, masks/, optional aux/); raises DataError listing every
    problem. Layout and normalisation rules: `nas_attn.data.readers`; folder layout and split
    files: `nas_attn.data.check`."""
    rep, data = _scan_cached(path, spatial_dims)
    if data is None:
        lines = "\n".join(f"  - {p}" for p in rep.problems)
        raise DataError(f"dataset folder {rep.path}: {len(rep.problems)} problem"
                        f"{'s' if len(rep.problems) != 1 else ''}:\n{lines}")
    return data
