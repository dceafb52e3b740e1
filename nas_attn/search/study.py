"""Storage, samplers, pruners and opening studies by name."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import optuna

from ..errors import StudyError
from .space import Space

DEFAULT_RUNS = Path("runs")
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
        raise StudyError(f"storage {url!r} needs the PostgreSQL driver {module!r}, which is not "
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


def open_storage(url: str | None, runs_dir: Path = DEFAULT_RUNS) -> optuna.storages.BaseStorage:
    """Any Optuna storage URL; `journal:PATH` (or a path ending in .log/.journal) is a journal
    file, which several processes on one machine or a shared file system can use at once.
    RDB storages get heartbeats and retries of dead workers' trials (`heartbeat`)."""
    if url is None:
        _mkdir(Path(runs_dir), "--runs-dir")
        url = storage_url(None, runs_dir)
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        return _journal(url)
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
        raise StudyError(f"cannot open storage {url!r}: {str(e).splitlines()[0]}") from None


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


def _journal(url: str) -> optuna.storages.BaseStorage:
    """A journal-file storage, checked: a usable path, and a file that holds a journal."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

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
        storage = JournalStorage(JournalFileBackend(str(path)))
        storage.get_all_studies()  # reads the file: fails here, not mid-search
    except OSError as e:
        raise StudyError(f"storage {url!r}: cannot use {raw}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError):
        raise StudyError(f"storage {url!r}: {raw} is not an Optuna journal file (it does not "
                         "hold JSON log lines); choose a new file name") from None
    return storage


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
