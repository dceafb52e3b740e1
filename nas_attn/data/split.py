"""`load_data`: the train / validation pair a `DataConfig` names, cached per process.

Split rule, first that applies:
1. `cfg.val_pattern`: samples whose name matches the glob are validation, the rest train;
2. the folder's own `splits.json` / `train.txt` / `val.txt`;
3. a seeded random split: round(n * val_fraction) samples (at least 1, at most n - 1) held out.
Both sides keep the folder's (sorted) order.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

from ..errors import DataError
from .builtin import make_builtin
from .config import DataConfig
from .folder import load_folder
from .segdata import SegData

_SPLITS: dict[tuple, tuple[SegData, SegData, SegData]] = {}
_BUILTIN: dict[tuple, SegData] = {}


def split_indices(data: SegData, *, val_fraction: float, seed: int,
                  val_pattern: str | None = None) -> tuple[list[int], list[int]]:
    n = len(data)
    if val_pattern is not None:
        pats = [p.strip() for p in val_pattern.split(",") if p.strip()]
        val = [i for i, nm in enumerate(data.names) if any(fnmatch.fnmatchcase(nm, p) for p in pats)]
        if not val:
            raise DataError(f"val_pattern {val_pattern!r} matches none of the {n} samples "
                            f"(e.g. {', '.join(data.names[:3])})")
        if len(val) == n:
            raise DataError(f"val_pattern {val_pattern!r} matches all {n} samples; nothing left to train on")
        vs = set(val)
        return [i for i in range(n) if i not in vs], val
    if data.splits:
        return data.index_of(data.splits["train"]), data.index_of(data.splits["val"])
    if n < 2:
        raise DataError(f"{data.source or 'data'}: {n} sample; need at least 2 for a train/val split")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    val = sorted(int(i) for i in perm[:n_val])
    vs = set(val)
    return [i for i in range(n) if i not in vs], val


def _source_data(cfg: DataConfig) -> SegData:
    if cfg.is_builtin:
        dims = cfg.resolved_builtin_dims or 2
        key = (dims, cfg.builtin_n, cfg.builtin_size, cfg.seed, cfg.builtin_aux)
        if key not in _BUILTIN:
            _BUILTIN[key] = make_builtin(dims, n=cfg.builtin_n, size=cfg.builtin_size,
                                         seed=cfg.seed, aux=cfg.builtin_aux)
        return _BUILTIN[key]
    path = Path(cfg.source).expanduser()
    if not path.exists():
        raise DataError(f"data source {cfg.source!r}: no such folder "
                        "(accepted: 'builtin', 'builtin3d' or a folder with images/ and masks/)")
    return load_folder(path, spatial_dims=cfg.spatial_dims)


def load_data(cfg: DataConfig) -> tuple[SegData, SegData]:
    """(train, val) for `cfg`. The same data and split settings give back the same two objects
    without decoding anything again (augmentation / loader settings do not matter here)."""
    data = _source_data(cfg)
    key = (id(data), cfg.val_pattern, cfg.val_fraction, cfg.seed)
    hit = _SPLITS.get(key)
    if hit is not None and hit[0] is data:
        return hit[1], hit[2]
    tr, va = split_indices(data, val_fraction=cfg.val_fraction, seed=cfg.seed,
                           val_pattern=cfg.val_pattern)
    train, val = data.subset(tr), data.subset(va)
    # forget splits of an older decoding of the same source
    for k in [k for k, v in _SPLITS.items() if v[0].source == data.source and v[0] is not data]:
        del _SPLITS[k]
    _SPLITS[key] = (data, train, val)
    return train, val
