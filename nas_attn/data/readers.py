"""Reading image / mask files and bringing them to the package's layout.

Layout rules (documented here, applied everywhere):

- Formats. 2D: PNG, JPEG, BMP (Pillow), TIFF (tifffile), NPY. 3D: NIfTI `.nii`/`.nii.gz`
  (nibabel, array axes kept as stored, no reorientation), multi-page TIFF, NPY.
  `.npy` files are opened memory-mapped and copied once into memory in their own dtype.
- Channels. The mask fixes the spatial shape. An image whose shape equals the mask's has one
  channel; otherwise exactly one extra axis must be the channel axis, and it is the one whose
  removal leaves the mask's shape: tried first (C, *spatial), then (*spatial, C), then, in 3D,
  (D, C, H, W) (ImageJ hyperstacks). So NPY may be (H,W), (C,H,W) or (H,W,C); a multi-page TIFF
  in 2D mode is (pages = channels, H, W); a 4D NIfTI is (X, Y, Z, C). Leading axes of size 1
  beyond that are dropped.
- Pillow modes: palette images become RGB (images) or stay palette indices (masks); an alpha
  channel that is fully opaque is dropped; 16-bit and float grey images keep their values.
- Values: decoding keeps the raw intensities (native dtype, channels first); `load_data`
  normalises each split with settings fitted on the training images (`nas_attn.data.intensity`:
  by default one per-channel percentile range for the whole training set in 2D, each image's
  own percentiles in 3D) into [0, 1], the range that intensity augmentation (gamma) expects
  (`normalisation: none` keeps the raw values and so refuses intensity augmentation).
- Masks: one channel (a colour mask whose channels are equal counts as one). Values must be
  non-negative integers. {0, 255} or {0, 1} are binary (255 -> 1); otherwise values are class
  ids 0..K-1 with K <= MAX_CLASSES. 255 next to other values (anti-aliased or "ignore" labels) and
  large ids (intensities, instance labels) are reported, not guessed at.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_2D_EXT = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_EXT = (".tif", ".tiff")
NIFTI_EXT = (".nii", ".nii.gz")
NPY_EXT = (".npy",)
SUPPORTED_EXT = IMAGE_2D_EXT + TIFF_EXT + NIFTI_EXT + NPY_EXT
MAX_CLASSES = 64
"""Largest accepted number of classes (ids 0..63): larger ids look like intensities or instances."""

LOW_PCT, HIGH_PCT = 0.5, 99.5


def split_name(name: str) -> tuple[str, str] | None:
    """'a.nii.gz' -> ('a', '.nii.gz'); None when the extension is not supported."""
    low = name.lower()
    for ext in sorted(SUPPORTED_EXT, key=len, reverse=True):
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], ext
    return None


def file_kind(path: Path) -> str:
    """'2d' (Pillow formats), 'nifti', 'tiff' or 'npy'."""
    ext = split_name(path.name)[1]  # type: ignore[index]
    if ext in IMAGE_2D_EXT:
        return "2d"
    if ext in NIFTI_EXT:
        return "nifti"
    if ext in TIFF_EXT:
        return "tiff"
    return "npy"


def _read_pillow(path: Path, role: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode == "P":
            if role == "mask":
                return np.asarray(im)
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode == "1":
            im = im.convert("L")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # LA / RGBA: drop an alpha that is all opaque
        alpha = arr[..., -1]
        opaque = arr.dtype.kind == "u" and int(alpha.min()) == np.iinfo(arr.dtype).max
        if opaque:
            arr = arr[..., :-1]
            if arr.shape[-1] == 1:
                arr = arr[..., 0]
    return arr


def read_array(path: Path, role: str = "image") -> np.ndarray:
    """The raw array stored in `path`, in its own layout (role 'image' or 'mask')."""
    kind = file_kind(path)
    if kind == "2d":
        return _read_pillow(path, role)
    if kind == "tiff":
        import tifffile

        return np.asarray(tifffile.imread(path))
    if kind == "nifti":
        import nibabel as nib

        return np.asanyarray(nib.load(str(path)).dataobj)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def read_spacing(path: Path, spatial_dims: int) -> tuple[float, ...] | None:
    """The voxel spacing (mm, in the array's axis order) a file's header gives: NIfTI's
    pixdim for its first `spatial_dims` axes; None for other formats or a header without it."""
    if file_kind(path) != "nifti":
        return None
    try:
        import nibabel as nib

        zooms = nib.load(str(path)).header.get_zooms()[:spatial_dims]
    except Exception:  # noqa: BLE001 - the array was read; a header without zooms has none
        return None
    if len(zooms) != spatial_dims or not all(float(z) > 0 for z in zooms):
        return None
    return tuple(float(z) for z in zooms)


def guess_spatial_dims(path: Path, mask: np.ndarray) -> int:
    """3 for NIfTI, 2 for Pillow formats, else the mask array's rank (a trailing or leading
    singleton axis aside; (H, W, 3|4) counts as a 2D colour mask). `spatial_dims=` overrides."""
    kind = file_kind(path)
    if kind == "nifti":
        return 3
    if kind == "2d":
        return 2
    shape = [s for s in mask.shape]
    while len(shape) > 2 and shape[0] == 1:
        shape = shape[1:]
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) > 4:
        return 2  # an (H, W, 3|4) colour mask, not a volume of 3 or 4 slices
    return 3 if len(shape) >= 3 else 2


def fmt_shape(shape) -> str:
    return "×".join(str(int(s)) for s in shape)


def mask_spatial(arr: np.ndarray, spatial_dims: int) -> np.ndarray | str:
    """Drop a channel axis from a mask: returns the (*spatial) array or a problem text."""
    a = arr
    while a.ndim > spatial_dims and a.shape[0] == 1:
        a = a[0]
    while a.ndim > spatial_dims and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == spatial_dims + 1 and spatial_dims == 2 and a.shape[-1] in (3, 4):
        first = a[..., 0]
        if all(np.array_equal(first, a[..., k]) for k in range(1, min(3, a.shape[-1]))):
            return first
        return (f"colour mask of shape {fmt_shape(arr.shape)} with differing channels; "
                "expected one channel of class ids")
    if a.ndim != spatial_dims:
        return (f"mask of shape {fmt_shape(arr.shape)} is not {spatial_dims}D "
                f"(expected {'H×W' if spatial_dims == 2 else 'D×H×W'})")
    return a


def to_channels_first(arr: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray | None:
    """(C, *spatial) view of `arr` following the channel rule in the module docstring, or None."""
    sd = len(spatial)
    a = arr
    while a.ndim > sd + 1 and a.shape[0] == 1:
        a = a[0]
    if tuple(a.shape) == spatial:
        return a[None]
    if a.ndim != sd + 1:
        return None
    axes = [0, a.ndim - 1] + ([1] if sd == 3 else [])
    for ax in axes:
        rest = tuple(s for i, s in enumerate(a.shape) if i != ax)
        if rest == spatial:
            return np.moveaxis(a, ax, 0)
    return None


def non_finite(img: np.ndarray) -> tuple[int, list[int]]:
    """(count of NaN/inf values, channels that hold no finite value at all)."""
    if np.asarray(img).dtype.kind != "f":
        return 0, []
    finite = np.isfinite(img)
    empty = [c for c in range(img.shape[0]) if not finite[c].any()]
    return int(finite.size - finite.sum()), empty


def raw_copy(img: np.ndarray) -> np.ndarray:
    """A decoded (C, *spatial) image as an in-memory array of its own values: numeric dtypes
    kept (uint8 stays 1 byte a pixel), booleans as uint8, anything else float64."""
    arr = np.asarray(img)
    if arr.dtype == bool:
        arr = arr.view(np.uint8)
    elif arr.dtype.kind not in "iuf":
        arr = arr.astype(np.float64)
    return np.array(arr, order="C")  # a copy: never a view on a memory map or a file buffer


def normalise(img: np.ndarray, settings: dict | None = None, role: str = "image") -> np.ndarray:
    """A raw (C, *spatial) array to the model's float32 input under `settings` (see
    `nas_attn.data.intensity`; default: per-image percentile scaling), computed in float64:
    NaN/inf pixels read as the lowest value (`non_finite` lets the caller report them),
    ValueError for a channel without any finite value (per-image mode). The exported
    model.py's `preprocess` runs this very code (`nas_attn.models.infer.normalise_image`)."""
    import torch

    from ..models.infer import normalise_image

    arr = np.asarray(img)
    if not arr.dtype.isnative or arr.dtype.kind not in "iuf" or arr.dtype == np.uint64:
        arr = arr.astype(np.float64)  # big-endian NIfTI, bool, uint64: what torch can hold
    arr = np.require(arr, requirements=["C", "W"])  # torch wants writable memory
    return normalise_image(torch.from_numpy(arr), settings or {
        "normalisation": "image", "low_percentile": LOW_PCT, "high_percentile": HIGH_PCT},
        role).numpy()


def mask_values(a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | str:
    """(values, counts) of a mask, or a problem text (non-integer / negative values)."""
    if a.dtype == bool:
        a = a.view(np.uint8)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            return "mask has NaN or infinite values"
        if not np.array_equal(a, np.round(a)):
            frac = np.unique(a[a != np.round(a)])[:5]
            return f"mask has non-integer values (e.g. {', '.join(f'{v:g}' for v in frac)})"
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iu":
        return f"mask has unsupported dtype {a.dtype}"
    mn = int(a.min()) if a.size else 0
    if mn < 0:
        return f"mask has negative values (min {mn})"
    mx = int(a.max()) if a.size else 0
    if mx < 1 << 16:
        counts = np.bincount(np.asarray(a).ravel(), minlength=1)
        vals = np.flatnonzero(counts)
        return vals, counts[vals]
    vals, counts = np.unique(np.asarray(a), return_counts=True)
    return vals, counts


def classify_mask(vals: np.ndarray) -> tuple[str, str | None]:
    """('binary255' | 'binary01' | 'empty' | 'ids', problem or None) for a mask's value set."""
    s = {int(v) for v in vals}
    if s <= {0}:
        return "empty", None
    if s <= {0, 255}:
        return "binary255", None
    if s <= {0, 1}:
        return "binary01", None
    shown = "{" + ", ".join(str(v) for v in sorted(s)[:8]) + (", ..." if len(s) > 8 else "") + "}"
    if 255 in s and max(s) == 255:
        return "ids", (f"unexpected mask values {shown}: 255 next to other values "
                       "(expected {0, 255} for binary or class ids 0..K-1)")
    if max(s) >= MAX_CLASSES:
        return "ids", (f"unexpected mask values {shown}: ids up to {max(s)} ({len(s)} distinct "
                       f"values); class ids must be < {MAX_CLASSES} (at most {MAX_CLASSES} "
                       "classes; large ids are often intensities or instance labels), or "
                       "{0, 255} / {0, 1} for binary")
    return "ids", None


def link_loop(path: Path) -> bool:
    """Whether `path` is a symbolic link that never reaches a file (a loop of links)."""
    import errno

    if not os.path.islink(path):
        return False
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def link_loop_text(path: Path) -> str:
    return (f"a symbolic link loop ({path.name} -> {os.readlink(path)} -> ... never reaches a "
            "file); point the link at the file or remove it")


def unreadable(path: Path, e: BaseException) -> str:
    """Why a listed file cannot be read, in words (a broken link is not a missing file)."""
    path = Path(path)
    if link_loop(path):
        return link_loop_text(path)
    if path.is_symlink() and not path.exists():
        return (f"a broken symbolic link (to {os.readlink(path)}, which does not exist); "
                "fix or remove the link")
    return f"unreadable ({type(e).__name__}: {e})"
