"""What a study was run on, so that a resume on other data is caught (scores of two data sets
ranked side by side mean nothing).

`data_identity(train, val)` is a small JSON-able record: where the data came from, its rank,
channels and classes, how many samples each split holds, and a SHA-256 signature of the split's
sample names, their shapes and the label maps' bytes (labels, not images: the images' values
depend on the normalisation, which a resume may pin; the labels are what the score counts).
"""
from __future__ import annotations

import hashlib

import numpy as np

from .segdata import SegData

FIELDS = ("spatial_dims", "in_channels", "aux_channels", "classes", "train", "val")


def data_identity(train: SegData, val: SegData) -> dict:
    h = hashlib.sha256()
    for split, d in (("train", train), ("val", val)):
        for name, image, mask in sorted(zip(d.names, d.images, d.masks), key=lambda r: r[0]):
            h.update(f"{split}\0{name}\0{tuple(image.shape)}\0".encode())
            h.update(np.ascontiguousarray(mask, dtype=np.uint8 if d.classes <= 256
                                          else np.int64).tobytes())
    return {"source": train.source, "spatial_dims": train.spatial_dims,
            "in_channels": train.in_channels, "aux_channels": train.aux_channels,
            "classes": train.classes, "train": len(train), "val": len(val),
            "signature": h.hexdigest()}


def describe(ident: dict) -> str:
    dims = f"{ident.get('spatial_dims')}D"
    return (f"{ident.get('source') or 'data'} ({dims}, {ident.get('in_channels')} channel(s), "
            f"{ident.get('classes')} classes, {ident.get('train')} train / {ident.get('val')} "
            f"val samples, signature {str(ident.get('signature'))[:12]})")


def differences(old: dict, new: dict) -> list[str]:
    """What differs between two identities, in words (empty when they are the same data)."""
    out = [f"{k} {old.get(k)} -> {new.get(k)}" for k in FIELDS if old.get(k) != new.get(k)]
    if not out and old.get("signature") != new.get("signature"):
        out.append("the same sizes, but other samples or labels")
    return out
