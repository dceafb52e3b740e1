"""Validate a dataset folder and decode it in one pass, collecting every problem.

Folder layout::

    root/
      images/   a.png  b.png ...        (required)
      masks/    a.png  b.png ...        (required; same stems as images/)
      aux/      a.npy  b.npy ...        (optional second modality; same stems)
      splits.json  {"train": [...], "val": [...], "test": [...]}
                   or  train.txt / val.txt / test.txt                       (optional)
      classes.txt  one class name a line, background first              (optional)

A split list may name only one side ("val" alone: the rest is train). Stems may be written with
or without their extension; lines starting with '#' are ignored. A "test" list (splits.json or
test.txt) is kept out of both train and val: it is scored once by `nas-attn finalize`, never
used to choose anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import readers as R
from . import resample as RS
from .layouts import Listing, detect, list_files, list_layout
from .report import FolderReport
from .segdata import SegData
from .split_files import read_list, read_splits

SUBDIRS = ("images", "masks", "aux")
_UNREADABLE = object()


@dataclass
class _Sample:
    """One decoded sample; `scan_folder`'s `sink` may replace the arrays (e.g. by views on a
    cache on disk), so only `shape` is read afterwards."""

    stem: str
    image: Any
    mask: Any
    aux: Any
    spacing: tuple[float, ...] | None = None
    shape: tuple[int, ...] = ()


@dataclass
class _Scan:
    """What one pass over a folder collects (files by role, then decoded samples and counts)."""

    root: Path
    rep: FolderReport
    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    has_aux: bool = False
    stems: list[str] = field(default_factory=list)
    samples: list[_Sample] = field(default_factory=list)
    kinds: dict[str, list[str]] = field(default_factory=dict)
    pixels: Counter = field(default_factory=Counter)
    by_channels: dict[str, dict[int, list[str]]] = field(
        default_factory=lambda: {"images": {}, "aux": {}})
    listing: Listing | None = None
    """nnU-Net / Decathlon layouts: the cases as dataset.json names them."""
    target: tuple[float, ...] | None = None
    """The spacing cases are resampled to (`resample.plan_target`), or None."""
    resampled: int = 0

    def rel(self, role: str, stem: str) -> str:
        """The file of `stem` in `role` as the user knows it (relative to the folder)."""
        path = self.files[role][stem]
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    @property
    def problems(self) -> list[str]:
        return self.rep.problems


def _list_pairs(scan: _Scan) -> bool:
    """Files of images/, masks/ (and aux/), and the stems complete in all of them; False when a
    required folder is missing."""
    root, P = scan.root, scan.problems
    for n in ("images", "masks"):
        if not (root / n).is_dir():
            P.append(f"{n}/: missing folder (expected {root / n} holding the {n[:-1]} files)")
        else:
            scan.files[n] = list_files(root / n, P)
    scan.has_aux = (root / "aux").is_dir()
    if scan.has_aux:
        scan.files["aux"] = list_files(root / "aux", P)
    scan.rep.n_images = len(scan.files.get("images", {}))
    scan.rep.n_masks = len(scan.files.get("masks", {}))
    scan.rep.n_aux = len(scan.files.get("aux", {}))
    if "images" not in scan.files or "masks" not in scan.files:
        return False
    imgs, msks, auxs = scan.files["images"], scan.files["masks"], scan.files.get("aux", {})
    for s in imgs:
        if s not in msks:
            P.append(f"images/{imgs[s].name}: no mask (expected masks/{s}.<ext>)")
        if scan.has_aux and s not in auxs:
            P.append(f"images/{imgs[s].name}: no aux file (expected aux/{s}.<ext>)")
    for role, table in (("masks", msks), ("aux", auxs)):
        for s in table:
            if s not in imgs:
                P.append(f"{role}/{table[s].name}: no image with this name")
    scan.stems = [s for s in imgs if s in msks and (not scan.has_aux or s in auxs)]
    if not imgs:
        P.append("images/: no image files")
    return True


def _list_tree(scan: _Scan) -> bool:
    """nnU-Net v2 raw / Decathlon: the cases dataset.json and the tree name."""
    lst = list_layout(scan.root, scan.rep.layout, scan.problems)
    scan.listing = lst
    scan.files["images"] = {c: paths[0] for c, paths in lst.images.items()}
    scan.files["masks"] = dict(lst.masks)
    scan.rep.n_images = len(lst.images)
    scan.rep.n_masks = len(lst.masks)
    scan.stems = [c for c in lst.images if c in lst.masks]
    if not lst.images and lst.class_names is not None:
        scan.problems.append("imagesTr/: no image files")
    return bool(scan.stems)


def _read_masks(scan: _Scan, spatial_dims: int | None, keep: bool = True
                ) -> tuple[dict[str, np.ndarray | None], int]:
    """Pass 1: the masks (None each when not `keep`: pass 2 reads them again, so no more than
    one sample is in memory at a time), and the spatial dims they imply (unless given)."""
    msks, P = scan.files["masks"], scan.problems
    raw_masks: dict[str, np.ndarray] = {}
    votes: dict[int, list[str]] = {2: [], 3: []}
    for s in scan.stems:
        try:
            m = R.read_array(msks[s], "mask")
        except Exception as e:  # noqa: BLE001 - any decoder failure is a file problem
            P.append(f"{scan.rel('masks', s)}: {R.unreadable(msks[s], e)}")
            continue
        raw_masks[s] = m if keep else None
        votes[R.guess_spatial_dims(msks[s], m)].append(msks[s].name)
        del m
    if spatial_dims is None:
        if votes[2] and votes[3]:
            few, many = (2, 3) if len(votes[2]) < len(votes[3]) else (3, 2)
            P.append(f"mixed 2D and 3D masks: {len(votes[2])} look 2D, {len(votes[3])} look 3D "
                     f"(e.g. {', '.join(votes[few][:3])} look {few}D); pass spatial_dims to choose")
            spatial_dims = many
        else:
            spatial_dims = 3 if votes[3] else 2
    return raw_masks, spatial_dims


def _mask_ids(scan: _Scan, s: str, raw: np.ndarray | None, spatial_dims: int):
    """A mask's (array, kind, values, counts), or None after recording its problem."""
    mname = scan.rel("masks", s)
    if raw is None:
        return None
    m = R.mask_spatial(raw, spatial_dims)
    if isinstance(m, str):
        scan.problems.append(f"{mname}: {m}")
        return None
    vc = R.mask_values(np.asarray(m))
    if isinstance(vc, str):
        scan.problems.append(f"{mname}: {vc}")
        return None
    vals, counts = vc
    ids = scan.listing.label_ids if scan.listing is not None else None
    if ids is not None:
        outside = [int(v) for v in vals if int(v) not in ids]
        if outside:
            scan.problems.append(f"{mname}: value{'s' if len(outside) > 1 else ''} "
                                 f"{', '.join(map(str, outside[:5]))} not among dataset.json's "
                                 f"labels (ids 0..{max(ids)})")
            return None
        kind = "ids" if len(vals) and int(vals.max()) > 0 else "empty"
    else:
        kind, prob = R.classify_mask(vals)
        if prob:
            scan.problems.append(f"{mname}: {prob}")
            return None
    scan.kinds.setdefault(kind, []).append(scan.files["masks"][s].name)
    return m, kind, vals, counts


def _read_channels(scan: _Scan, s: str, spatial: tuple[int, ...] | None) -> dict | None:
    """The sample's image (and aux) channels first, or None when any is unusable (an image is
    read even when its mask is bad, so unreadable files and channel counts are reported too)."""
    arrays, bad = {}, spatial is None
    mname = scan.rel("masks", s)
    for role in ("images", "aux") if scan.has_aux else ("images",):
        paths = [scan.files[role][s]]
        if role == "images" and scan.listing is not None:
            paths = scan.listing.images[s]  # nnU-Net: one file per channel
        parts = []
        for path in paths:
            fname = str(path.relative_to(scan.root)) if path.is_relative_to(scan.root) \
                else str(path)
            try:
                raw = R.read_array(path, "image")
            except Exception as e:  # noqa: BLE001 - any decoder failure is a file problem
                scan.problems.append(f"{fname}: {R.unreadable(path, e)}")
                bad = True
                continue
            if spatial is None:
                continue
            part = R.to_channels_first(raw, spatial)
            if part is None:
                scan.problems.append(
                    f"{fname}: size {R.fmt_shape(raw.shape)} does not match its mask {mname} "
                    f"{R.fmt_shape(spatial)} (accepted: the mask's size, with an optional "
                    "channel axis first or last)")
                bad = True
                continue
            parts.append(part)
        if bad or spatial is None:
            continue
        fname = scan.rel(role, s)
        cf = parts[0] if len(parts) == 1 else np.concatenate(
            [np.asarray(p) for p in parts], axis=0)
        names = scan.listing.channel_names if scan.listing is not None and role == "images" \
            else None
        if names is not None and cf.shape[0] != len(names):
            scan.problems.append(f"{fname}: {cf.shape[0]} channel(s), dataset.json names "
                                 f"{len(names)} ({', '.join(names)})")
            bad = True
            continue
        scan.by_channels[role].setdefault(int(cf.shape[0]), []).append(s)
        if cf.dtype.kind not in "biuf":
            scan.problems.append(f"{fname}: unsupported dtype {cf.dtype}")
            bad = True
            continue
        n_bad, empty = R.non_finite(cf)
        if empty:
            scan.problems.append(f"{fname}: channel {', '.join(map(str, empty))} holds no finite "
                                 "value (all NaN/inf); fix or remove the file")
            bad = True
            continue
        if n_bad:
            scan.rep.notes.append(f"{fname}: {n_bad} NaN/inf values of {cf.size}; they are "
                                  "read as the channel's lowest intensity")
        arrays[role] = cf
    return None if bad else arrays


def _decode(scan: _Scan, raw_masks: dict[str, np.ndarray | None], spatial_dims: int,
            sink: Callable[[_Sample], _Sample] | None = None) -> None:
    """Pass 2: mask values, images, aux; the usable samples with their class pixel counts.
    With `sink`, each sample goes through it as soon as it is decoded and what it returns is
    kept (nothing, while the folder has a problem)."""
    for s in scan.stems:
        raw = raw_masks.pop(s, _UNREADABLE)  # absent: unreadable, reported in pass 1
        if raw is None:  # read but not kept
            raw = R.read_array(scan.files["masks"][s], "mask")
        elif raw is _UNREADABLE:
            raw = None
        mask = _mask_ids(scan, s, raw, spatial_dims)
        del raw
        spatial = None if mask is None else tuple(int(x) for x in mask[0].shape)
        arrays = _read_channels(scan, s, spatial)
        if mask is None or arrays is None:
            continue
        m, kind, vals, counts = mask
        ids = np.asarray(m)
        if kind == "binary255":
            ids = (ids == 255).astype(np.int64)
            counts_by_id = {0: int(counts[vals == 0].sum()), 1: int(counts[vals == 255].sum())}
        else:
            ids = ids.astype(np.int64)
            counts_by_id = {int(v): int(c) for v, c in zip(vals, counts)}
        scan.pixels.update(counts_by_id)
        # raw values, in memory (not a memory map), normalised per split by `load_data`
        aux_arr = R.raw_copy(arrays["aux"]) if scan.has_aux else None
        image, spacing = R.raw_copy(arrays["images"]), R.read_spacing(scan.files["masks"][s],
                                                                      spatial_dims)
        if scan.target is not None and spacing is not None and not RS.close(spacing, scan.target):
            image = RS.resample_image(image, spacing, scan.target)
            aux_arr = None if aux_arr is None else RS.resample_image(aux_arr, spacing, scan.target)
            ids = RS.resample_labels(ids, spacing, scan.target)
            spacing = scan.target
            scan.resampled += 1
        sample = _Sample(s, image, ids, aux_arr, spacing, tuple(ids.shape))
        del arrays, ids, aux_arr, mask, image
        if sink is not None:
            sample = sink(sample) if not scan.problems else _Sample(
                s, None, None, None, sample.spacing, sample.shape)
        scan.samples.append(sample)


def _summarise(scan: _Scan) -> None:
    """What holds across samples: one mask convention, one channel count, sizes, classes."""
    rep, P, kinds, pixels = scan.rep, scan.problems, scan.kinds, scan.pixels
    if "binary255" in kinds and "ids" in kinds:
        P.append(f"masks mix {{0, 255}} binary files ({', '.join(kinds['binary255'][:3])}) with "
                 f"multi-class ids ({', '.join(kinds['ids'][:3])}); use one convention")
    for role in ("images", "aux") if scan.has_aux else ("images",):
        counts_c = scan.by_channels[role]
        if len(counts_c) > 1:
            parts = [f"{c} channel{'s' if c > 1 else ''} in {len(v)} (e.g. {', '.join(v[:3])})"
                     for c, v in sorted(counts_c.items(), key=lambda kv: -len(kv[1]))]
            P.append(f"{role}/: mixed channel counts: {'; '.join(parts)}")
        setattr(rep, "channels" if role == "images" else "aux_channels", sorted(counts_c))
    if scan.samples:
        shapes = np.array([sm.shape for sm in scan.samples])
        rep.size_min = tuple(int(x) for x in shapes.min(0))
        rep.size_max = tuple(int(x) for x in shapes.max(0))
        spacings = [sm.spacing for sm in scan.samples if sm.spacing is not None]
        if spacings and len({len(sp) for sp in spacings}) == 1:
            arr = np.array(spacings)
            rep.spacing_min = tuple(round(float(x), 6) for x in arr.min(0))
            rep.spacing_max = tuple(round(float(x), 6) for x in arr.max(0))
    rep.class_pixels = dict(sorted(pixels.items()))
    max_id = max(pixels) if pixels else 0
    rep.classes = max(2, max_id + 1)
    present = [k for k in ("binary255", "binary01", "ids", "empty") if k in kinds]
    rep.mask_kind = {"binary255": "binary {0,255}", "binary01": "binary {0,1}",
                     "ids": f"class ids 0..{max_id}", "empty": "empty"}.get(
        next((k for k in present if k != "empty"), "empty"), "")
    if scan.samples and max_id == 0:
        P.append("masks/: no foreground pixel in any mask")
    if "ids" in kinds:
        absent = [k for k in range(1, max_id + 1) if pixels.get(k, 0) == 0]
        if absent:
            rep.notes.append(f"class ids never seen: {absent}")
    if "empty" in kinds:
        rep.notes.append(f"{len(kinds['empty'])} masks are all background")


def _names_and_splits(scan: _Scan) -> None:
    """classes.txt and the split lists."""
    rep, root, P = scan.rep, scan.root, scan.problems
    if scan.listing is not None:  # dataset.json names the classes; imagesTs/labelsTs: test
        lst = scan.listing
        rep.class_names = lst.class_names
        rep.channel_names = lst.channel_names
        if lst.class_names:
            rep.classes = max(rep.classes, len(lst.class_names))
        test = [s for s in lst.test if s in set(scan.stems)]
        rep.splits, rep.split_source = ({"test": test}, "imagesTs/ + labelsTs/") if test \
            else (None, None)
        return
    cn = root / "classes.txt"
    if cn.exists():
        names = read_list(cn)
        if len(names) < rep.classes:
            P.append(f"classes.txt: {len(names)} names for {rep.classes} classes "
                     "(one name a line, background first)")
        else:
            rep.class_names = names
            rep.classes = max(rep.classes, len(names))
    rep.splits, rep.split_source = read_splits(root, scan.stems, P)
    if rep.splits and "train" in rep.splits:
        taken = set().union(*rep.splits.values())
        unused = [s for s in scan.stems if s not in taken]
        if unused:
            rep.notes.append(f"{rep.split_source}: {len(unused)} samples in no split")


def _plan_spacing(scan: _Scan, spatial_dims: int, target: tuple[float, ...] | None = None
                  ) -> bool:
    """The spacing to resample to, from the masks' headers (`resample.plan_target`); False
    after recording why the spacings cannot be brought together."""
    from ..errors import DataError

    stems = [s for s in scan.stems if s in scan.files["masks"]]
    try:
        scan.target = RS.plan_target(
            [R.read_spacing(scan.files["masks"][s], spatial_dims) for s in stems],
            [scan.rel("masks", s) for s in stems], target)
    except DataError as e:
        scan.problems.append(str(e))
        return False
    return True


def scan_folder(root: Path, spatial_dims: int | None = None,
                sink: Callable[[_Sample], _Sample] | None = None,
                resample: bool | str | tuple[float, ...] = False
                ) -> tuple[FolderReport, SegData | None]:
    """Check and decode `root`; the SegData is None when there is any problem. With `sink`
    (see `_decode`), one sample at a time is in memory and no SegData is made: the sink keeps
    what it needs (`nas_attn.data.cache` writes each sample to disk; `check_folder` keeps
    nothing). With `resample`, cases of differing voxel spacings are resampled to the median
    one (`nas_attn.data.resample`); the report's notes say so; `resample="check"` only checks
    that they can be and notes that they would be; a tuple resamples to that spacing."""
    scan = _Scan(root, FolderReport(path=str(root)))
    rep, P = scan.rep, scan.problems
    if not root.is_dir():
        P.append(f"{root}: not a folder" if root.exists() else f"{root}: folder not found")
        return rep, None
    rep.layout = detect(root)
    if not (_list_pairs(scan) if rep.layout == "folder" else _list_tree(scan)):
        return rep, None
    raw_masks, spatial_dims = _read_masks(scan, spatial_dims, keep=sink is None)
    rep.spatial_dims = spatial_dims
    given = tuple(resample) if isinstance(resample, (tuple, list)) else None
    if resample and not _plan_spacing(scan, spatial_dims, given):
        return rep, None
    if resample == "check" and scan.target is not None:  # say it, do not do it
        rep.notes.append(f"cases have different voxel spacings; training resamples them to the "
                         f"median {'×'.join(f'{v:g}' for v in scan.target)} mm")
        scan.target = None
    _decode(scan, raw_masks, spatial_dims, sink)
    if scan.resampled:
        rep.resampled_to = scan.target
        rep.notes.append(f"{scan.resampled} of {len(scan.samples)} cases resampled to the "
                         f"{'training' if given else 'median'} spacing {'×'.join(f'{v:g}' for v in scan.target)} mm (images: "
                         "third-order splines, labels: nearest)")
    _summarise(scan)
    _names_and_splits(scan)
    samples = scan.samples
    rep.n_samples = len(samples)
    if P or not samples or sink is not None:
        if not samples and not P:
            P.append("no complete image/mask pair")
        return rep, None
    data = SegData(
        images=[sm.image for sm in samples],
        masks=[sm.mask for sm in samples],
        names=[sm.stem for sm in samples],
        spatial_dims=spatial_dims,
        in_channels=int(samples[0].image.shape[0]),
        classes=rep.classes,
        aux=[sm.aux for sm in samples] if scan.has_aux else None,  # type: ignore[misc]
        aux_channels=int(samples[0].aux.shape[0]) if scan.has_aux else 0,
        class_names=rep.class_names,
        splits=rep.splits,
        source=str(root),
        spacings=[sm.spacing for sm in samples]
        if all(sm.spacing is not None for sm in samples) else None,
    )
    return rep, data
