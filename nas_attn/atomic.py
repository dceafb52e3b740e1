"""Atomic writes: nothing the user keeps (checkpoint, metrics, model.py, pictures) is ever left
half-written. Write to a temporary name in the target's folder, then rename over the target.

- The temporary file gets the mode `open(path, "w")` would give the target: 0666 less the
  umask (0644 under umask 022), or the mode of the file it replaces.
- torch's writers get an open file (`atomic_file`): their errors are then Python's own
  `OSError`s (`torch.save` given a *path* raises an unclear RuntimeError on a full disk and
  keeps the partial file open, and `torch.jit.save` to a path aborts the process).
- A write that fails for lack of space (ENOSPC, a disk quota) raises `DiskFullError` naming the
  target, after the partial temporary file is closed and removed (so its space is free again);
  the file it would have replaced is kept.

DESIGN (keep): every file nas-attn writes for the user goes through this module (or
`AtomicGroup` for a folder of files that must change together, as an export does), so an
interruption, a kill or a full disk never leaves a truncated checkpoint, model.py or JSON
that a later run would trust.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import DiskFullError

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(e: BaseException | None) -> bool:
    """`e`, or an error it was raised from (not `from None`), is an `OSError` for lack of
    space."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL:
            return True
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return False


def disk_full_error(path: str | os.PathLike, e: BaseException | None = None) -> DiskFullError:
    """The error for a failed write of `path` (an existing `DiskFullError` is kept as it is)."""
    if isinstance(e, DiskFullError):
        return e
    quota = isinstance(e, OSError) and e.errno == getattr(errno, "EDQUOT", None)
    what = "no space left on device (disk quota exceeded)" if quota else "no space left on device"
    return DiskFullError(f"{what}: {path}", str(path))


def _temporary(path: Path) -> Path:
    """Create an empty, new temporary file beside `path` (mode as described above)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)  # a replaced file keeps its mode
    except OSError:
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))  # the umask applies, as for open(path, "w")
        except FileExistsError:
            continue
        if mode is not None:
            try:
                os.chmod(tmp, mode)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it goes."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary(path)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path, e) from None
        raise
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            raise disk_full_error(path, e) from None
        raise


@contextmanager
def _synced(tmp: Path) -> Iterator[BinaryIO]:
    with open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """An open binary file that replaces `path` (flushed and fsynced) when the block succeeds."""
    with atomic_path(path) as tmp, _synced(tmp) as f:
        yield f


def atomic_save(path: str | os.PathLike, save: Callable[[Path], object]) -> Path:
    """Run `save(tmp_path)` (a library writer that only takes a path), fsync it, then rename it
    to `path`. Prefer `atomic_file` for writers that take an open file."""
    with atomic_path(path) as tmp:
        save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    return Path(path)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write text (UTF-8) or bytes atomically."""
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


class AtomicGroup(ExitStack):
    """Several files replaced together (an export: model.py with its weights): `stage(path)`
    gives a temporary path for each (`file(path)`: an open file); they are renamed into place
    only when the group's `with` block succeeds, so a failure (a full disk) replaces none."""

    def __init__(self) -> None:
        super().__init__()
        self.folder: Path | None = None
        self._targets: dict[str, str] = {}  # temporary path -> the file it becomes

    def stage(self, path: str | os.PathLike) -> Path:
        self.folder = self.folder or Path(path).parent
        tmp = self.enter_context(atomic_path(path))
        self._targets[str(tmp)] = str(path)
        return tmp

    def __exit__(self, *exc) -> bool:
        try:
            suppressed = super().__exit__(*exc)
        except DiskFullError as e:
            raise self._said(e) from None
        if isinstance(exc[1], DiskFullError) and not suppressed:
            raise self._said(exc[1]) from None
        return suppressed

    def _said(self, e: DiskFullError) -> DiskFullError:
        """`e` naming the target, not its temporary (a writer that wrote a staged file through
        its own atomic write), and saying that nothing was replaced."""
        target = self._targets.get(e.path or "", e.path) or ""
        return DiskFullError(f"{str(e).replace(e.path or '', target)}; no file in "
                             f"{self.folder} was replaced", target)

    @contextmanager
    def file(self, path: str | os.PathLike) -> Iterator[BinaryIO]:
        with _synced(self.stage(path)) as f:
            yield f

    def write(self, path: str | os.PathLike, data: bytes | str) -> Path:
        """Returns the temporary path (readable until the renames)."""
        tmp = self.stage(path)
        with _synced(tmp) as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return tmp
