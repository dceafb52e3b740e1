"""Exports that verify themselves: what meta.json records about its folder, and the check.

`provenance(arch, files)` is meta.json's "verify" record: the nas-attn and torch versions that
wrote the export, the architecture's hash (`arch_sha256`: SHA-256 of its canonical JSON, so it
does not depend on arch.json's formatting) and the SHA-256 of every other file written
(weights.pt, model.py, model.onnx, model.ts). `verify_export(folder, arch)` checks a folder
against its record before `load_model` / `predict` / `evaluate` use it: a file whose bytes differ
from the record (a weights.pt swapped in from another run of the same architecture, an edited
model.py, another model.onnx) or an arch.json describing another architecture raises
`ExportMismatchError` with one line naming the file and both hashes, unless the caller accepts
the mismatch knowingly (`accept_mismatch=True`, the command line's `--accept-mismatch`), which
turns it into a note. Another nas-attn or torch version is a note, not a refusal (an export is
meant to move to other machines). An export written before the record existed has no "verify"
key and loads with a note saying it is unverified.

This is integrity, not authentication: anyone who can edit weights.pt can edit meta.json too.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping

from ..architecture.description import UNetArch
from ..errors import NasAttnError
from ..paths import sha256_file

ACCEPT_FLAG = "--accept-mismatch"


class ExportMismatchError(NasAttnError, ValueError):
    """An export folder whose files are not the ones its meta.json records."""


def arch_sha256(arch: UNetArch) -> str:
    """SHA-256 of the architecture's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(arch.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def provenance(arch: UNetArch, files: Mapping[str, str]) -> dict:
    """meta.json's "verify" record; `files`: file name in the folder -> its SHA-256."""
    import torch

    from ..version import __version__

    return {"nas_attn": __version__, "torch": str(torch.__version__),
            "arch_sha256": arch_sha256(arch), "files": dict(sorted(files.items()))}


def _short(digest: str) -> str:
    return digest[:12] + "..."


def _mismatches(folder: Path, arch: UNetArch, record: Mapping) -> Iterable[str]:
    want = record.get("arch_sha256")
    if isinstance(want, str) and want != arch_sha256(arch):
        yield (f"{folder / 'arch.json'}: describes another architecture (hash "
               f"{_short(arch_sha256(arch))}) than meta.json records ({_short(want)})")
    files = record.get("files")
    for name, digest in (files.items() if isinstance(files, Mapping) else ()):
        p = folder / str(name)
        if "/" in str(name) or "\\" in str(name) or not isinstance(digest, str):
            yield f"{folder / 'meta.json'}: its file record {name!r} is not a file name and hash"
        elif not p.is_file():
            continue  # a format the user removed (model.onnx) is not used by anything here
        elif sha256_file(p) != digest:
            yield (f"{p}: SHA-256 {_short(sha256_file(p))} differs from the {_short(digest)} "
                   "that meta.json records (swapped or edited since the export)")


def verify_export(folder: str | Path, arch: UNetArch, meta: Mapping | None, *,
                  accept_mismatch: bool = False) -> list[str]:
    """Check an export folder against its meta.json "verify" record (module docstring).
    Returns notes (versions, an unverified older export, accepted mismatches); raises
    `ExportMismatchError` (one line) on the first mismatch unless `accept_mismatch`."""
    import torch

    from ..version import __version__

    folder = Path(folder)
    record = meta.get("verify") if isinstance(meta, Mapping) else None
    if not isinstance(record, Mapping):
        return [f"{folder}: meta.json records no hashes (an export older than nas-attn's "
                "self-check): its files are not verified"]
    notes = []
    for problem in _mismatches(folder, arch, record):
        if not accept_mismatch:
            raise ExportMismatchError(f"{problem}; re-export the model, or pass {ACCEPT_FLAG} "
                                      "to use the folder as it is")
        notes.append(f"accepted mismatch: {problem}")
    for what, here in (("nas_attn", __version__), ("torch", str(torch.__version__))):
        then = record.get(what)
        if isinstance(then, str) and then != here:
            notes.append(f"exported with {what.replace('_', '-')} {then[:40]}, running {here}")
    return notes
