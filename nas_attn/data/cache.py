"""The preprocessed cache: a dataset folder decoded once into per-case arrays on disk, read back
patch by patch, so a process holds at most the case it is working on, whatever the data's size.

What `build` writes for a folder, one sample at a time (`check.scan_folder` with a sink;
cases of differing spacings resampled to the median one first, `nas_attn.data.resample`):

- `<case>_image.npy` (C, *spatial) raw values (native byte order; booleans as uint8),
  `<case>_aux.npy` the same for an aux modality, `<case>_mask.npy` uint8 class ids;
- `<case>_fg.npy`: per foreground class present, the flat voxel indices of that class (at most
  `loaders.MAX_FG_INDICES`, a seeded subset), concatenated; the manifest says where each starts;
- `manifest.json`: per case its shape, spacing, files (size and mtime), the intensity ranges
  that normalisation needs (each channel's `image` range, as `normalise_percentile` computes it
  on the whole case, and the per-image range the `dataset` fit takes the lowest / highest of),
  and the folder's `FolderReport`.

Normalisation is not baked in: `CachedArray` applies it to what is read (a linear map per
channel with the case's range, the same torch code as on whole images), so one cache serves
every split and normalisation, and a patch read from the cache equals the patch of the
normalised whole image.

Where: `DataConfig.cache_dir`, else `$NAS_ATTN_CACHE_DIR` (the CLI's `--cache-dir`, default
`<runs dir>/cache`), else `runs/cache`; one folder per (dataset folder, spatial dims, file
signature): a folder whose files change (name, size or mtime) gets a new cache; the old one is
left for the user to delete. Built under a temporary name and renamed, with an exclusive lock
(`fcntl.flock`) per cache, so workers that start together build it once; on a file system
without working locks (some network mounts) two builders each build and the first rename
wins. Opening checks every file's size and mtime against the manifest: a truncated or edited
cache is refused with one line naming the file, never read.

When (`DataConfig.cache`): `on`; `off`; `auto` (default): 3D folders (spatial_dims 3, an
nnU-Net / Decathlon layout, or NIfTI masks), where decoding everything into memory is what
does not scale; 2D folders stay in memory (`benchmarks/data_scale.py` measures both).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..notices import notice
from ..paths import folder_name
from .cached_array import CachedArray, FgIndex
from .segdata import SegData

CACHE_VERSION = 2
"""2: arrays in C order, per-channel `finite` flags."""
MANIFEST = "manifest.json"
DEFAULT_DIR = Path("runs") / "cache"
"""Under the default runs folder (`nas_attn.searching.study.DEFAULT_RUNS`)."""
ENV_DIR = "NAS_ATTN_CACHE_DIR"
FG_SEED = 1299709
PROGRESS_EVERY_S = 30.0
"""Building a cache reports its progress (`nas_attn.notices`, printed by the command line): a
line at most every `PROGRESS_EVERY_S` seconds, and one when the cache is built."""


def cache_root(cfg_dir: str | None) -> Path:
    return Path(cfg_dir or os.environ.get(ENV_DIR) or DEFAULT_DIR).expanduser()


def wants_cache(mode: str, root: Path, spatial_dims: int | None) -> bool:
    """Whether `DataConfig.cache` = `mode` caches the folder `root` (module docstring)."""
    if mode != "auto":
        return mode == "on"
    if spatial_dims is not None:
        return spatial_dims == 3
    from .layouts import detect

    if detect(root) != "folder":
        return True
    masks = root / "masks"
    if not masks.is_dir():
        return False
    with os.scandir(masks) as it:
        names = [e.name for e in it]
    if any(n.lower().endswith((".nii", ".nii.gz")) for n in names):
        return True
    arrays = sorted(n for n in names if n.lower().endswith(".npy"))
    if arrays:  # 3D .npy volumes: decoded into memory they grew resident memory per volume
        try:
            return np.load(masks / arrays[0], mmap_mode="r").ndim >= 3
        except (OSError, ValueError):
            return False  # the scan names the unreadable file
    return False


# ----- writing ------------------------------------------------------------------------------

def _entry(path: Path) -> dict:
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _save(tmp: Path, name: str, arr: np.ndarray) -> dict:
    path = tmp / name
    np.save(path, arr, allow_pickle=False)
    return _entry(path)


def _stored(a: np.ndarray) -> np.ndarray:
    """C order (NIfTI arrays come in Fortran order; a patch of a C-ordered file is read in
    few runs), native byte order, booleans as uint8."""
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.view(np.uint8)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a)


def _ranges(a: np.ndarray) -> dict[str, list]:
    """Each channel's `image` range (as `normalise_percentile` scales it), its per-image
    `dataset` range (`intensity.image_range`) and whether all its values are finite."""
    import torch

    from ..models.infer import percentile_range
    from .intensity import image_range

    img, ds, finite = [], [], []
    for c in range(a.shape[0]):
        ch = torch.from_numpy(np.asarray(a[c], dtype=np.float64))
        img.append(list(percentile_range(ch, c=c)))
        r = image_range(a[c])
        ds.append(None if r is None else list(r))
        finite.append(bool(torch.isfinite(ch).all()))
    return {"image": img, "dataset": ds, "finite": finite}


def _fg(mask: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    from .loaders import MAX_FG_INDICES

    flat = mask.ravel()
    rng = np.random.default_rng(FG_SEED)
    parts, table, start = [], [], 0
    counts = np.bincount(flat, minlength=1)
    for c in np.flatnonzero(counts):
        if c == 0:
            continue
        idx = np.flatnonzero(flat == c)
        if idx.size > MAX_FG_INDICES:
            idx = np.sort(rng.choice(idx, MAX_FG_INDICES, replace=False))
        parts.append(idx.astype(np.int64))
        table.append([int(c), start, int(idx.size)])
        start += int(idx.size)
    return (np.concatenate(parts) if parts else np.zeros(0, np.int64)), table


class _Writer:
    """The sink `scan_folder` hands each decoded sample to: writes it, keeps its manifest
    entry, returns the sample with its arrays replaced by `CachedArray`s."""

    def __init__(self, tmp: Path, root: Path | None = None):
        import time

        self.tmp, self.root = tmp, root
        self.cases: list[dict] = []
        self.clock = time.monotonic
        self.start = self.last = self.clock()

    def progress(self, done: bool = False) -> None:
        """A notice every `PROGRESS_EVERY_S` seconds, and one when the cache is built."""
        now = self.clock()
        if not (done or now - self.last >= PROGRESS_EVERY_S):
            return
        self.last = now
        what = "built" if done else "building"
        notice(f"preprocessed cache of {self.root}: {what}, {len(self.cases)} cases written, "
                 f"{now - self.start:.0f}s elapsed")

    def __call__(self, sample):
        stem = f"{len(self.cases):06d}"
        image = _stored(sample.image)
        mask = np.asarray(sample.mask)
        if mask.size and int(mask.max()) > 255:
            raise DataError(f"{sample.stem}: class id {int(mask.max())} does not fit the cache's "
                            "uint8 masks")
        mask = np.ascontiguousarray(mask, dtype=np.uint8)
        fg, table = _fg(mask)
        case = {"name": sample.stem, "shape": list(mask.shape),
                "spacing": None if sample.spacing is None else list(sample.spacing),
                "image": {**_save(self.tmp, f"{stem}_image.npy", image),
                          "dtype": image.dtype.str, "shape": list(image.shape),
                          "ranges": _ranges(image)},
                "mask": {**_save(self.tmp, f"{stem}_mask.npy", mask), "dtype": "|u1",
                         "shape": list(mask.shape)},
                "fg": {**_save(self.tmp, f"{stem}_fg.npy", fg), "classes": table},
                "aux": None}
        if sample.aux is not None:
            aux = _stored(sample.aux)
            case["aux"] = {**_save(self.tmp, f"{stem}_aux.npy", aux), "dtype": aux.dtype.str,
                           "shape": list(aux.shape), "ranges": _ranges(aux)}
        self.cases.append(case)
        self.progress()
        del image, mask, fg
        sample.image = sample.mask = sample.aux = None
        return sample


def _key(root: Path, spatial_dims: int | None, resample) -> str:
    from .folder import folder_signature

    text = json.dumps({"v": CACHE_VERSION, "root": str(root), "dims": spatial_dims,
                       "resample": "median" if resample is True else
                       list(resample) if isinstance(resample, tuple) else resample,
                       "sig": folder_signature(root)}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build(root: Path, spatial_dims: int | None, final: Path, key: str, resample) -> None:
    from dataclasses import asdict

    from .check import scan_folder

    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        writer = _Writer(tmp, root)
        rep, _ = scan_folder(root, spatial_dims, sink=writer, resample=resample)
        writer.progress(done=True)
        if rep.problems:
            lines = "\n".join(f"  - {p}" for p in rep.problems)
            raise DataError(f"dataset folder {rep.path}: {len(rep.problems)} problem"
                            f"{'s' if len(rep.problems) != 1 else ''}:\n{lines}")
        manifest = {"version": CACHE_VERSION, "key": key, "source": str(root),
                    "spatial_dims": rep.spatial_dims, "report": asdict(rep),
                    "cases": writer.cases}
        (tmp / MANIFEST).write_text(json.dumps(manifest))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MANIFEST).exists():
                raise
    except OSError as e:
        from ..atomic import disk_full_error, is_disk_full

        if is_disk_full(e):
            raise disk_full_error(tmp, e) from None
        raise DataError(f"cache {tmp}: could not write ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_files(folder: Path, manifest: dict) -> None:
    for case in manifest["cases"]:
        for role in ("image", "mask", "fg", "aux"):
            e = case.get(role)
            if e is None:
                continue
            path = folder / e["file"]
            try:
                st = path.stat()
            except OSError:
                raise DataError(f"cache file {path}: missing; delete {folder} to rebuild the "
                                "cache") from None
            if st.st_size != e["size"] or st.st_mtime_ns != e["mtime_ns"]:
                what = "truncated" if st.st_size < e["size"] else "edited"
                raise DataError(f"cache file {path}: {what} since it was written (size "
                                f"{st.st_size}, recorded {e['size']}); delete {folder} to "
                                "rebuild the cache") from None


def _read_manifest(folder: Path, key: str) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("version") != CACHE_VERSION or manifest.get("key") != key:
            raise ValueError("another version or key")
        manifest["cases"], manifest["report"]  # noqa: B018 - present
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"cache file {path}: damaged ({e}); delete {folder} to rebuild the "
                        "cache") from None
    _check_files(folder, manifest)
    return manifest


def _segdata(folder: Path, manifest: dict) -> SegData:
    rep = manifest["report"]
    cases = manifest["cases"]

    def arr(e):
        return CachedArray(folder / e["file"], e["shape"], e["dtype"], e.get("ranges"))

    has_aux = cases[0]["aux"] is not None
    spacings = [c["spacing"] for c in cases]
    return SegData(
        images=[arr(c["image"]) for c in cases], masks=[arr(c["mask"]) for c in cases],
        names=[c["name"] for c in cases], spatial_dims=int(manifest["spatial_dims"]),
        in_channels=int(cases[0]["image"]["shape"][0]), classes=int(rep["classes"]),
        aux=[arr(c["aux"]) for c in cases] if has_aux else None,
        aux_channels=int(cases[0]["aux"]["shape"][0]) if has_aux else 0,
        class_names=rep.get("class_names"), splits=rep.get("splits"), source=str(
            manifest["source"]),
        spacings=None if any(s is None for s in spacings) else [tuple(s) for s in spacings],
        fg=[_fg_index(folder, c["fg"]) for c in cases])


def _fg_index(folder: Path, e: dict) -> list[FgIndex]:
    total = sum(n for _, _, n in e["classes"])
    array = CachedArray(folder / e["file"], (total,), np.dtype(np.int64).str)
    return [FgIndex(array, start, n) for _, start, n in e["classes"]]


_OPEN: dict[str, SegData] = {}


def open_cached(root: Path, spatial_dims: int | None, cache_dir: str | None,
                resample: bool | tuple[float, ...] = True) -> SegData:
    """The folder `root` as a `SegData` of `CachedArray`s, building its cache first where it
    has none (module docstring; `resample` as `check.scan_folder`'s: True, the median spacing).
    Raises DataError (the folder's problems, or a damaged cache)."""
    root = Path(root).expanduser().resolve()
    base = cache_root(cache_dir)
    if base.resolve() == root or root in base.resolve().parents:
        raise DataError(f"cache folder {base} is inside the dataset folder {root}: each cache "
                        "built there would change the folder and call for another; give a "
                        f"folder outside it (--cache-dir, data.cache_dir or ${ENV_DIR})")
    key = _key(root, spatial_dims, resample)
    final = base / f"{folder_name(root.name, default='data')}-{key}"
    hit = _OPEN.get(str(final))
    if hit is not None:
        return hit
    if not (final / MANIFEST).exists():
        try:
            base.mkdir(parents=True, exist_ok=True)
            lock = open(base / f".{final.name}.lock", "a")  # noqa: SIM115 - held while building
        except OSError as e:
            raise DataError(f"cache folder {base}: not writable ({e.strerror or e}); give "
                            "another one with --cache-dir, data.cache_dir or "
                            f"${ENV_DIR}") from None
        with lock:
            with contextlib.suppress(OSError):
                fcntl.flock(lock, fcntl.LOCK_EX)
            if not (final / MANIFEST).exists():  # another process may have built it meanwhile
                _build(root, spatial_dims, final, key, resample)
    data = _segdata(final, _read_manifest(final, key))
    _OPEN[str(final)] = data
    return data


def open_folder(root: Path, spatial_dims: int | None, *, mode: str = "auto",
                cache_dir: str | None = None, resample: bool | tuple[float, ...] = True
                ) -> SegData:
    """A dataset folder, through the cache where `mode` says so (`wants_cache`), else decoded
    into memory (`folder.load_folder`); `resample` as `check.scan_folder`'s."""
    from .folder import load_folder

    if wants_cache(mode, Path(root), spatial_dims):
        return open_cached(Path(root), spatial_dims, cache_dir, resample)
    return load_folder(root, spatial_dims=spatial_dims, resample=resample)


def clear() -> None:
    _OPEN.clear()
