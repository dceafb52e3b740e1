"""Claims on work items in a shared folder, so that several processes (on one machine or on
machines that share the runs folder) split a finalize race's trainings without a coordinator.

A claim is a file `<folder>/<name>.claim`, created with O_EXCL (one process wins), holding the
claimer's host and pid; its modification time is its heartbeat, renewed every `grace_s / 4`
seconds by a thread while it is held. A claim is stale when its process is gone (same host) or
its heartbeat is older than `grace_s` (any host): the next process takes it over, so a killed
worker's training is trained again by another. Taking over renames the stale file to a unique
name first (only one process's rename succeeds), then claims afresh.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

GRACE_S = 120.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claims:
    def __init__(self, folder: Path, grace_s: float = GRACE_S):
        self.folder = Path(folder)
        self.grace_s = grace_s
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.held: set[str] = set()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.claim"

    def take(self, name: str) -> bool:
        """True when this process now holds `name` (it was free, or its claim was stale)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(name)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self.stale(path):
                    return False
                with contextlib.suppress(OSError):  # only one process's rename succeeds
                    path.rename(path.with_name(f"{path.name}.stale-{self.host}-{self.pid}"))
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": self.host, "pid": self.pid, "since": time.time()}, f)
            self.held.add(name)
            self._start_beat()
            return True
        return False

    def stale(self, path: Path) -> bool:
        try:
            info = json.loads(path.read_text() or "{}")
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return False  # being written, or just taken over: look again later
        if info.get("host") == self.host and isinstance(info.get("pid"), int):
            return not _alive(info["pid"])
        return age > self.grace_s

    def release(self, name: str) -> None:
        self.held.discard(name)
        with contextlib.suppress(OSError):
            self._path(name).unlink()

    def _start_beat(self) -> None:
        if self._beat is None or not self._beat.is_alive():
            self._beat = threading.Thread(target=self._run_beat, daemon=True)
            self._beat.start()

    def _run_beat(self) -> None:
        while not self._stop.wait(self.grace_s / 4):
            for name in list(self.held):
                with contextlib.suppress(OSError):
                    os.utime(self._path(name))
