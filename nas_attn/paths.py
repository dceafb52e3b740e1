"""Names that become paths, and output folders the tool may write into.

- `check_name`: a study name is a folder under the runs folder, so it is one plain path
  component (letters, digits, '.', '_', '-'; no '..', no separators, not absolute).
- `inside`: a path built from a parent and names, refused if it resolves outside the parent.
- `claim_output_dir`: an output folder must be new, empty, or one this tool wrote before (it
  holds the marker file); anything else needs `force`, so nothing the user made is replaced.
"""
from __future__ import annotations

import errno
import re
from pathlib import Path

from .errors import DiskFullError, NasAttnError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MARKER = ".nas-attn-output"


class OutputError(NasAttnError, ValueError):
    """An output path that would escape its folder or replace something the user made."""


def check_name(name: str, what: str = "study name") -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise OutputError(f"{what} {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit (it names a folder under the runs "
                          "folder)")
    return name


def folder_name(text: str, limit: int = 48, default: str = "model") -> str:
    """A folder name made from stored text (a study name read from a shared storage, a run's
    folder): letters, digits, '.', '_' and '-' only, no leading dot, so it names one folder
    and never a path ("../../x" becomes "x")."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).replace("..", "_").strip("._-")
    return name[:limit] or default


def inside(parent: str | Path, *parts: str) -> Path:
    root = Path(parent).resolve()
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise OutputError(f"{'/'.join(parts)!r} would write outside {root}")
    return path


def claim_output_dir(path: str | Path, kind: str, *, force: bool = False) -> Path:
    """Make sure `path` may receive `kind` outputs (see module docstring); create it and mark it.
    Call before any work starts, so a refusal costs nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output {str(path)!r} is a file, not a folder; choose another --out")
    if path.is_dir() and not force:
        entries = [p.name for p in path.iterdir() if p.name != MARKER]
        if entries and not (path / MARKER).exists():
            shown = ", ".join(sorted(entries)[:4]) + (" ..." if len(entries) > 4 else "")
            raise OutputError(f"output folder {str(path)!r} already holds files that nas-attn "
                              f"did not write ({shown}); choose a new or empty --out, or pass "
                              "--force to write into it")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not (path / MARKER).is_file():  # (rewriting it could lose it on a full disk)
            (path / MARKER).write_text(f"written by nas-attn {kind}\n")
    except OSError as e:
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise DiskFullError(f"no space left on device: {path / MARKER}",
                                str(path / MARKER)) from None
        raise OutputError(f"cannot write to output folder {str(path)!r}: "
                          f"{e.strerror or e}") from None
    return path
