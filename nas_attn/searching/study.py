"""Storage, samplers, pruners and opening studies by name."""
from __future__ import annotations

import contextlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage

from ..atomic import disk_full_error, is_disk_full
from ..errors import DiskFullError, NasAttnError, StudyError
from ..paths import DEFAULT_RUNS

if TYPE_CHECKING:  # the space only types the sampler's arguments (torch stays unloaded)
    from .space import Space

DB_NAME = "nas_attn.db"
JOURNAL_NAME = "nas_attn.journal"


def default_storage_url(runs_dir: Path = DEFAULT_RUNS) -> str:
    return f"sqlite:///{(Path(runs_dir) / DB_NAME).resolve()}"


def default_multi_storage_url(runs_dir: Path = DEFAULT_RUNS) -> str:
    """The default for several worker processes on one machine: a journal file (SQLite
    breaks under concurrent writers: Optuna's docs say never to use it for parallel search)."""
    return f"journal:{(Path(runs_dir) / JOURNAL_NAME).resolve()}"


def storage_kind(url: str | None) -> str:
    """`sqlite`, `journal`, `postgresql`, `mysql`, ... (None: the default SQLite)."""
    if url is None or url.startswith("sqlite"):
        return "sqlite"
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        return "journal"
    return url.split(":", 1)[0].split("+", 1)[0]


def _postgres_driver(url: str) -> str:
    """`postgresql://` means psycopg2 to SQLAlchemy; use psycopg 3 (the `postgres` extra)
    when the URL names no driver, and say what to install when the driver is missing."""
    import importlib.util

    scheme, rest = url.split("://", 1)
    driver = scheme.split("+", 1)[1] if "+" in scheme else None
    if driver is None:
        if importlib.util.find_spec("psycopg") is not None:
            return "postgresql+psycopg://" + rest
        if importlib.util.find_spec("psycopg2") is not None:
            return url
        driver = "psycopg"
    module = {"psycopg": "psycopg", "psycopg2": "psycopg2", "pg8000": "pg8000",
              "asyncpg": "asyncpg"}.get(driver, driver)
    if importlib.util.find_spec(module) is None:
        raise StudyError(f"storage {redact(url)!r} needs the PostgreSQL driver {module!r}, which is not "
                         f"installed: pip install \"psycopg[binary]\" (or pip install -e "
                         f"\".[postgres]\" in a checkout of nas-attn)")
    return url


def storage_url(url: str | None, runs_dir: Path = DEFAULT_RUNS) -> str:
    """The URL `open_storage` uses: `url`, or the runs folder's SQLite database (its journal
    file when only `search --workers N` has run there)."""
    if url is not None:
        return url
    journal = Path(runs_dir) / JOURNAL_NAME
    if journal.is_file() and not (Path(runs_dir) / DB_NAME).is_file():
        return f"journal:{journal.resolve()}"
    return default_storage_url(runs_dir)


STORAGE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")
"""The database kinds Optuna's RDB storage is used with (SQLAlchemy dialects)."""


def open_storage(url: str | None, runs_dir: Path = DEFAULT_RUNS) -> optuna.storages.BaseStorage:
    """Any Optuna storage URL; `journal:PATH` (or a path ending in .log/.journal) is a journal
    file, which several processes on one machine or a shared file system can use at once.
    RDB storages get heartbeats and retries of dead workers' trials (`heartbeat`)."""
    if url is None:
        _mkdir(Path(runs_dir), "--runs-dir")
        url = storage_url(None, runs_dir)
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        return _journal(url)
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else None
    if scheme not in STORAGE_SCHEMES:
        raise StudyError(f"storage {redact(url)!r} is not a storage URL nas-attn knows; accepted: "
                         "sqlite:///PATH, postgresql://USER:PW@HOST/DB, mysql://USER:PW@HOST/DB, "
                         "journal:PATH (a journal file)")
    if url.startswith("sqlite:///"):
        _mkdir(Path(url.removeprefix("sqlite:///")).parent, "the SQLite file's folder")
    if url.startswith("postgres"):
        url = _postgres_driver(url)
    from .heartbeat import rdb_storage

    try:
        if url.startswith("sqlite:///"):
            # two searches starting together on a new file both create its tables: serialise
            with _file_lock(Path(url.removeprefix("sqlite:///") + ".lock")):
                return rdb_storage(url)
        return rdb_storage(url)
    except StudyError:
        raise
    except Exception as e:  # bad URL or unreachable database: say which
        full = storage_error(e, url)
        if isinstance(full, DiskFullError) or "is corrupt" in str(full):
            raise full from None
        raise StudyError(f"cannot open storage {redact(url)!r}: "
                         f"{redact(str(e).splitlines()[0])}") from None


@contextmanager
def _file_lock(path: Path):
    """An exclusive advisory lock on `path` (POSIX; a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mkdir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StudyError(f"cannot create {what} {str(path)!r}: {e.strerror or e}") from None


class WholeLineJournalFileBackend(JournalFileBackend):
    """Optuna's journal file, with appends that never leave part of a line behind: an append
    that fails (a full disk) is cut off again, and a fragment left by a writer killed mid-line is
    dropped before the next append (both under the file's lock). Optuna's own backend keeps the
    fragment, and the next record glued to it makes the whole journal unreadable."""

    def __init__(self, file_path: str) -> None:
        self._append_lock = JournalFileSymlinkLock(file_path)  # optuna's default lock
        super().__init__(file_path, lock_obj=self._append_lock)

    def append_logs(self, logs: list[dict]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs)
                + "\n").encode()
        self._append_lock.acquire()
        try:
            fd = os.open(self._file_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                start = _end_of_last_line(fd)
                os.ftruncate(fd, start)
                try:
                    os.lseek(fd, start, os.SEEK_SET)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, start)
                    raise
            finally:
                os.close(fd)
        finally:
            self._append_lock.release()


def _end_of_last_line(fd: int, chunk: int = 1 << 16) -> int:
    """The offset just after the file's last newline (0 when it holds none)."""
    end = pos = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return 0
    os.lseek(fd, end - 1, os.SEEK_SET)
    if os.read(fd, 1) == b"\n":  # the usual case: one byte read
        return end
    while pos > 0:
        size = min(chunk, pos)
        os.lseek(fd, pos - size, os.SEEK_SET)
        block = os.read(fd, size)
        i = block.rfind(b"\n")
        if i >= 0:
            return pos - size + i + 1
        pos -= size
    return 0


def _journal(url: str) -> optuna.storages.BaseStorage:
    """A journal-file storage, checked: a usable path, and a file that holds a journal."""
    raw = url.removeprefix("journal:")
    if not raw.strip():
        raise StudyError(f"storage {url!r}: give the journal file's path, e.g. "
                         "journal:runs/nas_attn.journal")
    path = Path(raw)
    if path.is_dir():
        raise StudyError(f"storage {url!r}: {raw} is a folder; give a file path inside it, e.g. "
                         f"journal:{path / 'nas_attn.journal'}")
    _mkdir(path.parent, "the journal file's folder")
    try:
        if not _looks_like_journal(path):  # optuna would append to it, and fail only after
            raise ValueError(raw)
        storage = JournalStorage(WholeLineJournalFileBackend(str(path)))
        storage.get_all_studies()  # reads the file: fails here, not mid-search
        _warn_cut_off(path)
    except OSError as e:
        raise StudyError(f"storage {url!r}: cannot use {raw}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError):
        raise StudyError(f"storage {url!r}: {raw} is not an Optuna journal file (it does not "
                         "hold JSON log lines); choose a new file name") from None
    except AssertionError:  # optuna's replay of a record it does not know
        raise StudyError(f"storage {url!r}: {raw}{_unknown_record(path)} that this optuna "
                         f"({optuna.__version__}) cannot replay: written by another version or "
                         "damaged; nothing was written to it") from None
    return storage


def _warn_cut_off(path: Path) -> None:
    """A `NasAttnWarning` when the journal's last record is cut off (a writer killed while
    writing it): optuna skips it, so what it recorded (often a trial's end) is missing."""
    import warnings

    from ..errors import NasAttnWarning

    if not path.is_file() or path.stat().st_size == 0:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        cut = size - _end_of_last_line(fd)
    finally:
        os.close(fd)
    if cut:
        warnings.warn(NasAttnWarning(
            f"journal {path}: its last record is cut off ({cut} bytes after the last complete "
            "line: a process was killed while writing it); what it recorded is lost, so a "
            "trial may show as running that had ended; the next write to the journal removes "
            "the fragment"), stacklevel=2)


def _unknown_record(path: Path) -> str:
    """' line N holds op_code X' for the first record whose operation optuna does not know."""
    from .optuna_adapter import journal_op_codes

    known = journal_op_codes()
    if known is None:  # without it, the line is not named
        return ": it holds a record"
    with contextlib.suppress(OSError), open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            with contextlib.suppress(ValueError, AttributeError):
                op = json.loads(line).get("op_code")
                if op not in known:
                    return f": line {n} holds op_code {op!r}, a record"
    return ": it holds a record"


def _looks_like_journal(path: Path) -> bool:
    """A missing or empty file, or one whose first line is an Optuna journal record (a JSON
    object with an "op_code"; a lone unterminated first line, left by a writer killed
    mid-line, only has to start like one). Optuna's reader defers the error of a bad last
    line, so a file of one line of text would pass its read and be appended to."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    if not first.endswith(b"\n"):
        return first.startswith(b'{"op_code"')
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record


def redact(url: str) -> str:
    """A storage URL fit to print: its password replaced by *** (`user:***@host`)."""
    if "://" not in url or "@" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (not a URL SQLAlchemy parses: hide what sits before @)
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def describe_storage(storage) -> str:
    """The storage as the user named it (an RDB URL without its password, journal:PATH)."""
    from .optuna_adapter import innermost

    storage = innermost(storage)  # under the RDB cache, the journal's backend
    url = getattr(storage, "url", None)
    if url:
        try:
            from sqlalchemy.engine import make_url

            return make_url(url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001  (not a URL SQLAlchemy parses: show its scheme only)
            return url.split(":", 1)[0] + ":..."
    path = getattr(storage, "_file_path", None)
    return f"journal:{path}" if path else type(storage).__name__


def _chain(e: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__) \
            or getattr(e, "orig", None)  # SQLAlchemy's DB-API error
    return out


_FULL_TEXT = ("disk is full", "no space left", "disk quota exceeded")


def is_storage_error(e: BaseException | None) -> bool:
    """A storage that could not be written or read (an RDB commit, a journal file append)."""
    return isinstance(e, optuna.exceptions.StorageInternalError) or (
        isinstance(e, OSError) and not isinstance(e, NasAttnError) and is_disk_full(e)) or (
        type(e).__module__.startswith("sqlalchemy"))


def storage_error(e: BaseException, storage=None) -> NasAttnError:
    """One clear line for an error of `storage` (or its URL; None: unknown): `DiskFullError`
    when its disk is full (SQLite says "database or disk is full", PostgreSQL "No space left on
    device"), else `StudyError`."""
    chain = _chain(e)
    root = chain[-1]
    if isinstance(root, OSError) and root.filename and is_disk_full(root):
        return disk_full_error(root.filename, root)  # a file, not the storage
    first = (str(root).strip().splitlines() or [type(root).__name__])[0][:300]
    where = "the study storage" if storage is None else \
        f"the storage {redact(storage) if isinstance(storage, str) else describe_storage(storage)}"
    if is_disk_full(e) or any(t in str(x).lower() for x in chain for t in _FULL_TEXT) \
            or any(type(x).__name__ == "DiskFull" for x in chain):
        return DiskFullError(f"no space left on device: {where} cannot be written ({first})",
                             where)
    low = first.lower()
    sqlite = type(root).__module__ == "sqlite3"
    if sqlite and ("malformed" in low or "not a database" in low or "is encrypted" in low):
        return StudyError(f"{where} is corrupt ({first}): it is not a readable SQLite "
                          "database; restore it from a copy, or give another --storage / "
                          "--runs-dir (sqlite3's .recover may save its studies)")
    return StudyError(f"{where} failed: {first}")


@contextmanager
def storage_errors(storage):
    """Storage errors inside the block as one clear line (`storage_error`)."""
    try:
        yield
    except AssertionError as e:
        # optuna 5's `_run_trial`: when telling a finished trial's state to the storage fails,
        # the trial stays RUNNING and `assert False, "Should not reach."` replaces the error
        if not is_storage_error(e.__context__):
            raise
        _reraise_interrupt(e)
        raise storage_error(e.__context__, storage) from None
    except Exception as e:
        if not is_storage_error(e):
            raise
        _reraise_interrupt(e)
        raise storage_error(e, storage) from None


def _reraise_interrupt(e: BaseException) -> None:
    """A storage write cut by Ctrl-C / SIGTERM (optuna wraps the KeyboardInterrupt raised
    inside SQLAlchemy in a StorageInternalError) is an interruption, not a storage failure."""
    if any(isinstance(x, KeyboardInterrupt) for x in _chain(e)):
        raise KeyboardInterrupt from None


def study_names(storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage)]


def load_study(name: str | None, storage) -> optuna.Study:
    """Load by name; with no name, the most recent study. Clear error listing what exists."""
    names = study_names(storage)
    if not names:
        raise StudyError("no studies in this storage yet; run `nas-attn search` first")
    if name is None:
        name = names[-1]
    if name not in names:
        raise StudyError(f"study {name!r} does not exist; studies in this storage: "
                         f"{', '.join(names)}")
    return optuna.load_study(study_name=name, storage=storage)


def make_sampler(name: str | None, space: Space, seed: int) -> optuna.samplers.BaseSampler:
    name = name or ("nsga2" if space.multi_objective else "tpe")
    startup = space.search.n_startup_trials
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constant_liar=True, n_startup_trials=startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, startup))
    if name == "brute":
        return optuna.samplers.BruteForceSampler(seed=seed)
    raise StudyError(f"unknown sampler {name!r}; accepted: tpe, random, gp, nsga2, brute")


def make_pruner(name: str, space: Space) -> tuple[optuna.pruners.BasePruner, str | None]:
    """The pruner, and a note when the request cannot be honoured."""
    if space.multi_objective and name != "none":
        return optuna.pruners.NopPruner(), (
            f"pruner {name!r} ignored: Optuna cannot prune multi-objective studies "
            f"(objectives {', '.join(space.objectives)}); every trial trains its full budget")
    epochs = space.budget.epochs
    # the first epochs of every candidate score alike (noise): judge after a fifth of the budget
    first = max(1, epochs // 5)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=epochs,
                                              reduction_factor=3), None
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first,
                                                      reduction_factor=3), None
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=first), None
    if name == "none":
        return optuna.pruners.NopPruner(), None
    raise StudyError(f"unknown pruner {name!r}; accepted: hyperband, sha, median, none")


def open_existing_storage(url: str | None, runs_dir: Path = DEFAULT_RUNS):
    """`open_storage` for commands that only read (show, dashboard, export, finalize, train
    --from-study): a missing runs folder or study file is an error, and nothing is created."""
    resolved = storage_url(url, runs_dir)
    path = None
    if resolved.startswith("sqlite:///"):
        path = Path(resolved.removeprefix("sqlite:///"))
    elif resolved.startswith("journal:") or resolved.endswith((".log", ".journal")):
        path = Path(resolved.removeprefix("journal:"))
    if path is not None and not path.is_file():
        raise StudyError(f"no studies to show: {path} does not exist"
                         + (" (is --runs-dir right?)" if url is None else "")
                         + "; run `nas-attn search` first")
    return open_storage(url, runs_dir)
