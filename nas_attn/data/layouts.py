"""The dataset layouts a folder may come in, read as they are.

- `folder` (the package's own): `images/`, `masks/`, optional `aux/`, split and class files
  (`nas_attn.data.check`).
- `nnunet` (nnU-Net v2 raw): `dataset.json` with `channel_names`, `labels` (name -> id) and
  `file_ending`; `imagesTr/<case>_<XXXX><file_ending>` one file per channel (`_0000`, `_0001`
  ...), `labelsTr/<case><file_ending>`; `imagesTs/` with `labelsTs/` is the test split (scored
  once by `finalize`, never selected on); `imagesTs/` without labels is not used (said in a note).
- `decathlon` (Medical Segmentation Decathlon): `dataset.json` with a `training` list of
  `{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}`, `modality` (index ->
  name; a 4D NIfTI holds the channels last) and `labels` (id -> name). Its `test` list has no
  labels and is not used.

`list_layout` gives, per case, its channel files and its mask file, the class names and the
test cases; everything after (decoding, value checks, channel counts, normalisation) is shared
with the own layout.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .readers import SUPPORTED_EXT, link_loop, link_loop_text, split_name

LAYOUTS = ("folder", "nnunet", "decathlon")
TREE_DIRS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


@dataclass
class Listing:
    """One folder's cases as its layout names them."""

    layout: str
    images: dict[str, list[Path]] = field(default_factory=dict)
    """case -> its channel files, in channel order (one file holding every channel for a
    Decathlon 4D NIfTI)."""
    masks: dict[str, Path] = field(default_factory=dict)
    test: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    channel_names: list[str] | None = None
    label_ids: list[int] | None = None
    """The ids dataset.json declares (a mask value outside them is a problem)."""


def detect(root: Path) -> str:
    """Which layout `root` is in (`folder` unless a dataset.json with imagesTr/ says otherwise)."""
    if (root / "dataset.json").is_file() and (root / "imagesTr").is_dir():
        try:
            meta = json.loads((root / "dataset.json").read_text())
        except (OSError, ValueError):
            return "nnunet" if not (root / "images").is_dir() else "folder"
        if isinstance(meta, dict) and "training" in meta and "channel_names" not in meta:
            return "decathlon"
        return "nnunet"
    return "folder"


def _dataset_json(root: Path, problems: list[str]) -> dict | None:
    path = root / "dataset.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"dataset.json: unreadable ({e})")
        return None
    except ValueError as e:
        problems.append(f"dataset.json: not valid JSON ({e})")
        return None
    if not isinstance(meta, dict):
        problems.append("dataset.json: expected a JSON object")
        return None
    return meta


def _labels(raw, by_name: bool, problems: list[str]) -> tuple[list[str], list[int]] | None:
    """Class names by id from dataset.json's `labels`: nnU-Net v2 maps name -> id, the
    Decathlon id -> name. The ids must be 0..K-1, 0 the background."""
    if not isinstance(raw, dict) or not raw:
        problems.append("dataset.json: 'labels' missing or empty (expected "
                        + ('{"background": 0, "<name>": 1, ...}' if by_name
                           else '{"0": "background", "1": "<name>", ...}') + ")")
        return None
    ids: dict[int, str] = {}
    for k, v in raw.items():
        name, value = (k, v) if by_name else (v, k)
        if by_name and isinstance(value, list):
            problems.append(f"dataset.json: labels.{k} is a region (a list of ids {value}); "
                            "region-based labels are not supported, give each class one id")
            return None
        try:
            i = int(value)
        except (TypeError, ValueError):
            problems.append(f"dataset.json: labels: {k!r}: {v!r} is not a class id (accepted: "
                            "integers 0..K-1)")
            return None
        if i in ids:
            problems.append(f"dataset.json: labels: id {i} given to both {ids[i]!r} and "
                            f"{name!r}")
            return None
        ids[i] = str(name)
    if sorted(ids) != list(range(len(ids))):
        problems.append(f"dataset.json: labels: ids {sorted(ids)} are not 0..{len(ids) - 1} "
                        "(0 the background, no gaps)")
        return None
    return [ids[i] for i in range(len(ids))], sorted(ids)


def _channel_names(raw, key: str, problems: list[str]) -> list[str] | None:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"dataset.json: '{key}' missing or empty (expected "
                        '{"0": "<name>", ...}, one entry per channel)')
        return None
    try:
        idx = sorted(int(k) for k in raw)
    except ValueError:
        problems.append(f"dataset.json: {key}: keys {list(raw)} are not channel indices")
        return None
    if idx != list(range(len(idx))):
        problems.append(f"dataset.json: {key}: indices {idx} are not 0..{len(idx) - 1}")
        return None
    return [str(raw[str(i)]) for i in idx]  # JSON keys are strings


def _nnunet_cases(root: Path, images: str, labels: str | None, ending: str, channels: int,
                  problems: list[str]) -> tuple[dict[str, list[Path]], dict[str, Path]]:
    pat = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    found: dict[str, dict[int, Path]] = {}
    for p in sorted((root / images).iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue
        m = pat.match(p.name)
        if m is None:
            problems.append(f"{images}/{p.name}: not <case>_<XXXX>{ending} (nnU-Net v2 names "
                            "each channel file with a 4-digit channel index and dataset.json's "
                            "file_ending)")
            continue
        found.setdefault(m["case"], {})[int(m["ch"])] = p
    out: dict[str, list[Path]] = {}
    for case, chans in found.items():
        missing = [i for i in range(channels) if i not in chans]
        extra = sorted(i for i in chans if i >= channels)
        if missing:
            problems.append(f"{images}/{case}_{missing[0]:04d}{ending}: missing (dataset.json "
                            f"names {channels} channel{'s' if channels != 1 else ''})")
        if extra:
            problems.append(f"{images}/{chans[extra[0]].name}: channel {extra[0]} beyond the "
                            f"{channels} of dataset.json's channel_names")
        if not missing and not extra:
            out[case] = [chans[i] for i in range(channels)]
    masks: dict[str, Path] = {}
    if labels is not None:
        for p in sorted((root / labels).iterdir()):
            if p.name.startswith(".") or p.is_dir():
                continue
            if not p.name.endswith(ending):
                problems.append(f"{labels}/{p.name}: not <case>{ending}")
                continue
            masks[p.name[: -len(ending)]] = p
        for case in out:
            if case not in masks:
                problems.append(f"{images}/{out[case][0].name}: no label (expected "
                                f"{labels}/{case}{ending})")
        for case, p in masks.items():
            if case not in found:
                problems.append(f"{labels}/{p.name}: no image of this case in {images}/")
    return out, masks


def _list_nnunet(root: Path, meta: dict, problems: list[str]) -> Listing:
    lst = Listing("nnunet")
    names = _channel_names(meta.get("channel_names", meta.get("modality")), "channel_names",
                           problems)
    labels = _labels(meta.get("labels"), True, problems)
    ending = meta.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        problems.append(f"dataset.json: file_ending {ending!r} is not accepted (expected e.g. "
                        '".nii.gz" or ".png")')
        return lst
    if names is None or labels is None:
        return lst
    lst.channel_names = names
    lst.class_names, lst.label_ids = labels
    if not (root / "labelsTr").is_dir():
        problems.append(f"labelsTr/: missing folder (expected {root / 'labelsTr'} holding "
                        f"<case>{ending})")
        return lst
    imgs, masks = _nnunet_cases(root, "imagesTr", "labelsTr", ending, len(names), problems)
    n = meta.get("numTraining")
    if isinstance(n, int) and n != len(imgs):
        problems.append(f"dataset.json: numTraining is {n} but imagesTr/ holds {len(imgs)} "
                        "complete cases")
    lst.images.update(imgs)
    lst.masks.update(masks)
    if (root / "imagesTs").is_dir():
        if (root / "labelsTs").is_dir():
            t_imgs, t_masks = _nnunet_cases(root, "imagesTs", "labelsTs", ending, len(names),
                                            problems)
            for case in t_imgs:
                if case in lst.images:
                    problems.append(f"imagesTs/{t_imgs[case][0].name}: case {case!r} is also "
                                    "a training case in imagesTr/")
                    continue
                lst.images[case] = t_imgs[case]
                if case in t_masks:
                    lst.masks[case] = t_masks[case]
                    lst.test.append(case)
    return lst


def _inside(path: Path, root: Path) -> bool:
    """`path` (as written, before links are followed) is in `root`."""
    import os

    full = Path(os.path.normpath(path.absolute()))
    top = Path(os.path.normpath(root.absolute()))
    return full == top or top in full.parents


def _list_decathlon(root: Path, meta: dict, problems: list[str]) -> Listing:
    lst = Listing("decathlon")
    names = _channel_names(meta.get("modality"), "modality", problems)
    labels = _labels(meta.get("labels"), False, problems)
    training = meta.get("training")
    if not isinstance(training, list):
        problems.append('dataset.json: training must be a list of {"image": ..., "label": ...}')
        return lst
    if names is None or labels is None:
        return lst
    lst.channel_names = names
    lst.class_names, lst.label_ids = labels
    for i, entry in enumerate(training):
        if not (isinstance(entry, dict) and isinstance(entry.get("image"), str)
                and isinstance(entry.get("label"), str)):
            problems.append(f"dataset.json: training[{i}] is not "
                            '{"image": "./imagesTr/<case>.nii.gz", "label": "./labelsTr/..."}')
            continue
        img, lab = root / entry["image"], root / entry["label"]
        sn = split_name(img.name)
        case = sn[0] if sn else img.name
        bad = False
        for p, what in ((img, "image"), (lab, "label")):
            if not _inside(p, root):
                problems.append(f"dataset.json: training[{i}].{what} {entry[what]!r} lies "
                                "outside the dataset folder, where the preprocessed cache "
                                "cannot see it change; copy or link it into the folder")
                bad = True
        if bad:
            continue
        for p, what in ((img, "image"), (lab, "label")):
            if not p.is_file():
                problems.append(f"dataset.json: training[{i}].{what} {entry[what]!r}: no such "
                                "file")
                bad = True
        if case in lst.images:
            problems.append(f"dataset.json: training[{i}]: case {case!r} listed twice")
            bad = True
        if not bad:
            lst.images[case] = [img]
            lst.masks[case] = lab
    n = meta.get("numTraining")
    if isinstance(n, int) and n != len(training):
        problems.append(f"dataset.json: numTraining is {n} but training lists "
                        f"{len(training)} cases")
    return lst


def list_layout(root: Path, layout: str, problems: list[str]) -> Listing:
    meta = _dataset_json(root, problems)
    if meta is None:
        return Listing(layout)
    if layout == "decathlon":
        return _list_decathlon(root, meta, problems)
    return _list_nnunet(root, meta, problems)


def list_files(d: Path, problems: list[str]) -> dict[str, Path]:
    """stem -> file for the supported files in `d` (hidden files skipped)."""
    out: dict[str, Path] = {}
    for p in sorted(d.iterdir()):
        if p.name.startswith("."):
            continue
        if link_loop(p):  # is_dir() and exists() read a loop as "no such file"
            problems.append(f"{d.name}/{p.name}: {link_loop_text(p)}")
            continue
        if p.is_dir():
            continue
        sn = split_name(p.name)
        if sn is None:
            problems.append(f"{d.name}/{p.name}: unsupported file type "
                            f"(accepted: {', '.join(SUPPORTED_EXT)})")
            continue
        stem = sn[0]
        if stem in out:
            problems.append(f"{d.name}/{p.name}: same name as {d.name}/{out[stem].name} "
                            "(one file per stem)")
            continue
        out[stem] = p
    return out
