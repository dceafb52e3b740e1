"""`load_data`: the train / validation pair a `DataConfig` names, cached per process;
`load_test`: the test split, which nothing is ever chosen on.

Test split, first that applies (it is taken out before train and validation are split):
1. `cfg.test_source`: a separate folder (every sample in it is test);
2. `cfg.test_pattern`: samples of the source whose name matches the glob;
3. the folder's own test list (`splits.json` "test" or `test.txt`);
4. built-in data: a set generated with another seed (`builtin_n // 2` samples);
otherwise there is no test split.

Train / validation rule, first that applies:
1. `cfg.val_pattern`: samples whose name matches the glob are validation, the rest train;
2. the folder's own `splits.json` / `train.txt` / `val.txt`;
3. a seeded random split: round(n * val_fraction) samples (at least 1, at most n - 1) held out.
Every side keeps the folder's (sorted) order.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from .builtin import make_builtin
from .config import DataConfig
from . import folder
from .intensity import fit_normalisation, normalise
from .segdata import SegData

_SPLITS: dict[tuple, tuple[SegData, SegData, SegData]] = {}
_BUILTIN: dict[tuple, SegData] = {}


def _matching(data: SegData, pattern: str, field: str) -> list[int]:
    pats = [p.strip() for p in pattern.split(",") if p.strip()]
    hits = [i for i, nm in enumerate(data.names) if any(fnmatch.fnmatchcase(nm, p) for p in pats)]
    if not hits:
        raise DataError(f"{field} {pattern!r} matches none of the {len(data)} samples "
                        f"(e.g. {', '.join(data.names[:3])})")
    if len(hits) == len(data):
        raise DataError(f"{field} {pattern!r} matches all {len(data)} samples; nothing left to train on")
    return hits


def test_indices(data: SegData, test_pattern: str | None = None) -> list[int]:
    """Indices of the source's own test samples (`test_pattern`, else the folder's test list)."""
    if test_pattern is not None:
        return _matching(data, test_pattern, "test_pattern")
    if data.splits and data.splits.get("test"):
        return data.index_of(data.splits["test"])
    return []


def split_indices(data: SegData, *, val_fraction: float, seed: int,
                  val_pattern: str | None = None, exclude: Sequence[int] = ()
                  ) -> tuple[list[int], list[int]]:
    """(train, val) indices of `data`, never using the indices in `exclude` (the test split)."""
    if exclude:
        keep = [i for i in range(len(data)) if i not in set(exclude)]
        tr, va = split_indices(data.subset(keep), val_fraction=val_fraction, seed=seed,
                               val_pattern=val_pattern)
        return [keep[i] for i in tr], [keep[i] for i in va]
    n = len(data)
    if val_pattern is not None:
        val = _matching(data, val_pattern, "val_pattern")
        vs = set(val)
        return [i for i in range(n) if i not in vs], val
    if data.splits and "train" in data.splits:
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
    from .cache import open_folder

    return open_folder(path, cfg.spatial_dims, mode=cfg.cache, cache_dir=cfg.cache_dir)


def load_data(cfg: DataConfig) -> tuple[SegData, SegData]:
    """(train, val) for `cfg`, normalised with settings fitted on the training images
    (`intensity.fit_normalisation`; on `train.normalisation`). The same data, split and
    normalisation settings give back the same two objects without decoding or normalising
    anything again (augmentation / loader settings do not matter here)."""
    data = _source_data(cfg)
    key = (id(data), cfg.val_pattern, cfg.val_fraction, cfg.seed, cfg.test_pattern,
           bool(cfg.test_source), cfg.normalisation)
    hit = _SPLITS.get(key)
    if hit is not None and hit[0] is data:
        return hit[1], hit[2]
    held = [] if cfg.test_source else test_indices(data, cfg.test_pattern)
    tr, va = split_indices(data, val_fraction=cfg.val_fraction, seed=cfg.seed,
                           val_pattern=cfg.val_pattern, exclude=held)
    raw_train = data.subset(tr)
    settings = fit_normalisation(raw_train, cfg.normalisation)
    train, val = normalise(raw_train, settings), normalise(data.subset(va), settings)
    # forget splits of an older decoding of the same source
    for k in [k for k, v in _SPLITS.items() if v[0].source == data.source and v[0] is not data]:
        del _SPLITS[k]
    _SPLITS[key] = (data, train, val)
    return train, val


def load_test(cfg: DataConfig) -> SegData | None:
    """The test split `cfg` names (module docstring), or None when there is none, normalised
    like the training split (with the training images' settings). A separate test folder is
    resampled to the training data's spacing (as validation is scored); it must
    match the training data's dimensions and channels and may not hold a class id the
    training data lacks."""
    train, _ = load_data(cfg)
    if cfg.test_source:
        path = Path(cfg.test_source).expanduser()
        if not path.exists():
            raise DataError(f"test_source {cfg.test_source!r}: no such folder")
        test = _test_folder(path, train, cfg)
        if test.in_channels != train.in_channels:
            raise DataError(f"test_source {cfg.test_source!r}: {test.in_channels} image channels, "
                            f"the training data has {train.in_channels}")
        if test.classes > train.classes:
            raise DataError(f"test_source {cfg.test_source!r}: class ids up to {test.classes - 1}, "
                            f"the training data has classes 0..{train.classes - 1}")
        if (test.aux is None) != (train.aux is None):
            raise DataError(f"test_source {cfg.test_source!r}: aux/ must be present in both the "
                            "training and the test folder, or in neither")
        out = normalise(test, train.normalisation or {})
        out.classes = train.classes
        return out
    data = _source_data(cfg)
    if cfg.is_builtin:
        n = max(4, (cfg.builtin_n or len(data)) // 2)
        test = make_builtin(data.spatial_dims, n=n, size=cfg.builtin_size, seed=cfg.seed + 7_777,
                            aux=cfg.builtin_aux)
        return normalise(test, train.normalisation or {})
    idx = test_indices(data, cfg.test_pattern)
    return normalise(data.subset(idx), train.normalisation or {}) if idx else None


def _test_folder(path: Path, train: SegData, cfg: DataConfig) -> SegData:
    """A separate test folder, through the cache where the training data would be, and at the
    training data's spacing (validation is scored so too)."""
    from .cache import open_folder
    from .resample import common_spacing

    target = common_spacing(train)
    return open_folder(path, train.spatial_dims, mode=cfg.cache, cache_dir=cfg.cache_dir,
                       resample=tuple(target) if target else False)


def clear_cache() -> None:
    """Forget every decoded folder and the train/val splits made from them."""
    from . import cache

    folder._CACHE.clear()
    folder._REPORTS.clear()
    cache.clear()
    _SPLITS.clear()
    _BUILTIN.clear()


def non_finite_note(cfg: DataConfig) -> str | None:
    """One line when images of `cfg`'s data hold NaN/inf values (read as the channel's lowest
    intensity, as `data check` says): which and how many; None otherwise. Uses the decoding
    `load_data` made (a cached case by its recorded flags, no second read)."""
    if cfg.is_builtin:
        return None
    data = _source_data(cfg)
    bad = []
    for name, img in zip(data.names, data.images):
        flags = getattr(img, "ranges", {}).get("finite") if hasattr(img, "ranges") else None
        if flags is not None:
            n = 0 if all(flags) else -1  # a cached case records whether, not how many
        else:
            arr = np.asarray(img)
            n = 0 if arr.dtype.kind != "f" else int(arr.size - np.isfinite(arr).sum())
        if n:
            bad.append(f"{name} ({n})" if n > 0 else name)
    if not bad:
        return None
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return (f"{len(bad)} of {len(data.names)} images hold NaN/inf values ({shown}); they are "
            "trained and scored as the channel's lowest intensity (`nas-attn data check` "
            "lists them)")
