"""Names that become paths, and output folders the tool may write into.

- `check_name`: a study name is a folder under the runs folder, so it is one plain path
  component (letters, digits, '.', '_', '-'; no '..', no separators, not absolute).
- `inside`: a path built from a parent and names, refused if it resolves outside the parent.
- `claim_output_dir`: an output folder must be new, empty, or one this tool wrote before (it
  holds the marker file); anything else needs `force`, so nothing the user made is replaced.
  Where the marker lists the files written with their SHA-256 (`record_outputs`, as exports
  do), the folder is reused only while it holds exactly those files, unchanged: a model.py the
  user edited or a file the user added there is refused like a folder of the user's own (git's
  rule for untracked and modified files).
"""
from __future__ import annotations

import errno
import hashlib
import re
from pathlib import Path

from .atomic import atomic_write
from .errors import DiskFullError, NasAttnError

DEFAULT_RUNS = Path("runs")
"""Where studies, checkpoints and artifacts go unless told otherwise (`--runs-dir`)."""

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
        if entries:
            _check_recorded(path, entries)
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


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _recorded(path: Path) -> dict[str, str] | None:
    """The files the marker lists (name -> SHA-256), or None for a marker without a list."""
    try:
        lines = (path / MARKER).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    files = {}
    for line in lines[1:]:
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name:
            files[name] = digest
    return files or None


def _check_recorded(path: Path, entries: list[str]) -> None:
    files = _recorded(path)
    if files is None:
        return
    for name in sorted(entries):
        p = path / name
        if name not in files or not p.is_file():
            problem = f"holds {name!r}, which nas-attn did not write"
        elif sha256_file(p) != files[name]:
            problem = f"{name!r} was changed since nas-attn wrote it"
        else:
            continue
        raise OutputError(f"output folder {str(path)!r}: {problem}; choose a new or empty "
                          "--out, or pass --force to write into it")


def record_outputs(path: str | Path, kind: str, files) -> None:
    """Write the marker of `path` listing `files` (paths inside it) with their SHA-256, so a
    later `claim_output_dir` sees any edit or addition."""
    path = Path(path)
    lines = [f"written by nas-attn {kind}"]
    lines += [f"{sha256_file(Path(f))}  {Path(f).name}" for f in sorted(files, key=str)]
    atomic_write(path / MARKER, "\n".join(lines) + "\n")
