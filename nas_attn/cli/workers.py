"""`nas-attn search --workers N / --gpus LIST`: the parent's live view over its workers."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import optuna
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ..errors import DiskFullError, StudyError
from ..paths import inside
from ..search.run import SearchRequest, open_search
from ..search.study import (
    default_multi_storage_url,
    open_storage,
    storage_kind,
    storage_url,
)
from ..search.workers import Slot, Supervisor, study_space_file


def stored_space(req: SearchRequest) -> str | None:
    """The space stored with `req.study` (a worker joining from another machine), if any."""
    if req.study is None:
        return None
    path = study_space_file(req.study, open_storage(req.storage, Path(req.runs_dir)),
                            Path(req.runs_dir))
    return None if path is None else str(path)


def _storage_for_workers(req: SearchRequest, n: int, notes: list[str]) -> str:
    if req.storage is None:
        url = storage_url(None, Path(req.runs_dir))
        if storage_kind(url) == "journal":  # only workers have run in this folder
            return url
        url = default_multi_storage_url(Path(req.runs_dir))
        notes.append(f"{n} workers share the journal file {url.removeprefix('journal:')} "
                     f"(SQLite is not safe for several processes); give `--storage {url}` to "
                     f"show, export and dashboard")
        return url
    if storage_kind(req.storage) == "sqlite":
        raise StudyError(
            f"--storage {req.storage!r}: SQLite cannot take {n} concurrent workers (Optuna "
            f"says never to use it for parallel search); use a journal file "
            f"(--storage journal:{Path(req.runs_dir) / 'nas_attn.journal'}, one machine) or "
            f"PostgreSQL (--storage postgresql://USER@HOST/DB, any number of machines)")
    return req.storage


def worker_table(sup: Supervisor, epochs: int) -> Table:
    t = Table(title="Workers", expand=False)
    for col, kw in [("worker", {"justify": "right"}), ("pid", {"justify": "right"}),
                    ("device", {}), ("state", {}), ("trial", {"justify": "right"}),
                    ("epoch", {"justify": "right"}), ("Dice", {"justify": "right"}),
                    ("time", {"justify": "right"}), ("architecture", {"overflow": "fold"})]:
        t.add_column(col, **kw)
    for w in sup.snapshot():
        trial = "" if w["trial"] is None else str(w["trial"])
        if w["label"]:
            trial += f" ({w['label']})"
        t.add_row(str(w["worker"]), str(w["pid"] or ""), escape(w["where"]), w["state"],
                  escape(trial), f"{w['epoch']}/{epochs}" if w["trial"] is not None else "",
                  "—" if w["dice"] is None else f"{w['dice']:.4f}",
                  "" if w["elapsed_s"] is None else f"{w['elapsed_s']:.0f}s",
                  escape(w["summary"]))
    return t


def _worker_args(session, slots: list[Slot]) -> list[str]:
    """The `nas-attn worker` options every worker of this search gets (its index apart)."""
    req = session.request  # as open_search resolved it (a resumed study's data settings)
    seed = req.seed if req.seed is not None else session.space.search.seed
    args = ["--study", session.study.study_name, "--storage", req.storage,
            "--runs-dir", str(Path(req.runs_dir).resolve()),
            "--space", str(Path(session.space_path).resolve()), "--seed", str(seed)]
    for flag, value in (("--data", req.data), ("--val-pattern", req.val_pattern),
                        ("--sampler", req.sampler), ("--pruner", req.pruner),
                        ("--num-workers", req.num_workers)):
        if value is not None:
            args += [flag, str(value)]
    if req.device is not None and not any(s.device for s in slots):
        args += ["--device", req.device]
    return args


def run_workers_cli(req: SearchRequest, slots: list[Slot], space_from_study: bool,
                    console: Console) -> None:
    from .search import _summary, leaderboard_table

    notes: list[str] = []
    req = dataclasses.replace(req, storage=_storage_for_workers(req, len(slots), notes))
    if space_from_study:
        req = dataclasses.replace(req, space=stored_space(req) or "default")
    session = open_search(req)  # creates the study and enqueues the baselines, once
    study = session.study
    if session.strategy == "oneshot":  # phase 1 on this process's device, before any worker
        from .search import run_phase1

        run_phase1(session, console)
    trials = session.trials(req.trials)
    args = _worker_args(session, slots)
    epochs = session.space.budget.epochs
    log_dir = inside(req.runs_dir, study.study_name, "workers")
    sup = Supervisor(study, slots, args, trials, req.timeout, log_dir, epochs)
    waiting = optuna.trial.TrialState.WAITING
    n_before = sum(t.state != waiting for t in study.get_trials(deepcopy=False))
    console.print(f"[bold]study[/bold] {escape(study.study_name)!r} "
                  f"({'new' if session.created else f'resumed with {n_before} trials'}), "
                  f"space {escape(str(session.space_path))}, {len(slots)} workers, "
                  f"{trials} trials, storage {escape(req.storage)}")
    for note in session.notes + notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    board = {"version": -1, "t": 0.0, "table": None}

    def render():
        now = time.monotonic()
        if board["version"] != sup.version and now - board["t"] > 2.0 or board["table"] is None:
            board.update(version=sup.version, t=now,
                         table=leaderboard_table(study, 8, "Best so far"))
        parts = [worker_table(sup, epochs)]
        parts += [f"[yellow]{escape(e)}[/yellow]" for e in sup.events[-5:]]
        parts.append(board["table"])
        return Group(*parts)

    last = {"version": -1}

    def tick():
        live.update(render())
        if last["version"] != sup.version:  # workers.json: what scripts and tests watch
            last["version"] = sup.version
            sup.write_status()

    interrupted = False
    with Live(render(), console=console, refresh_per_second=2, transient=False) as live:
        try:
            sup.run(on_tick=tick)
        except KeyboardInterrupt:
            interrupted = True
        live.update(Group(worker_table(sup, epochs),
                          leaderboard_table(study, 10, f"Study {study.study_name}")))
    sup.write_status()
    if sup.fatal is not None:
        console.print()
        raise DiskFullError(f"{sup.fatal}; the search stopped: free some space, then resume "
                            "with the same command")
    if not sup.started_any() and not interrupted:
        raise StudyError("no worker could start: " + "; ".join(sup.start_errors))
    for e in sup.events:
        console.print(f"[yellow]{escape(e)}[/yellow]")
    ran = sum(t.state != waiting for t in study.get_trials(deepcopy=False)) - n_before
    console.print(f"ran {ran} trial(s) in this session; {len(study.trials)} in the study. "
                  f"Storage: {escape(req.storage)}; worker logs in {escape(str(log_dir))}")
    _summary(study, console)
    if interrupted:
        console.print("[yellow]interrupted:[/yellow] every worker stopped and its running trial "
                      f"was recorded as failed; resume with "
                      f"`{escape(req.resume_command(study.study_name))} --workers {len(slots)}`")
        raise typer.Exit(130)
    from .search import check_all_failed

    waiting = optuna.trial.TrialState.WAITING
    check_all_failed(study, [t.number for t in study.get_trials(deepcopy=False)
                             if t.state != waiting][n_before:])
    console.print(f"next: `nas-attn show {escape(study.study_name)} --storage "
                  f"{escape(req.storage)}`")
