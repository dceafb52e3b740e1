"""Atomic writes: nothing the user keeps (checkpoint, metrics, model.py, pictures) is ever left
half-written. Write to a temporary name in the target's folder, then rename over the target."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(path: str | os.PathLike, save: Callable[[Path], object]) -> Path:
    """Run `save(tmp_path)` (a library's own writer), fsync it, then rename it to `path`."""
    with atomic_path(path) as tmp:
        save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    return Path(path)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write text (UTF-8) or bytes atomically."""
    raw = data.encode() if isinstance(data, str) else data
    return atomic_save(path, lambda tmp: tmp.write_bytes(raw))
