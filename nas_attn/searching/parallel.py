"""Searching with worker processes: the policy `nas-attn search --workers/--gpus` and
`na.search(workers=..., gpus=...)` share (the command only adds its live view).

- When: `--workers N` (N > 1), `--gpus LIST`, or a journal storage (even one worker runs under
  a parent there, which notices its death: a journal has no heartbeat).
- Storage: several workers never share SQLite (refused, with what to use instead); without a
  storage they share a journal file in the runs folder (noted).
- Space: a study joined without a space uses the one stored with it.
- Phase 1 of a one-shot search runs in this process, before any worker starts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from ..errors import DiskFullError, StudyError
from ..paths import inside
from .opening import SearchRequest, SearchSession, open_search
from .request import worker_options
from .study import default_multi_storage_url, open_storage, storage_kind, storage_url
from .slots import Slot, plan_slots
from .worker_loop import study_space_file
from .workers import Supervisor


def worker_slots(req: SearchRequest, workers: int | None, gpus: str | None,
                 per_gpu: int = 1) -> list[Slot] | None:
    """The worker slots the search runs on, or None when it runs in this process."""
    journal = storage_kind(storage_url(req.storage, Path(req.runs_dir))) == "journal"
    if workers is None and gpus is None and not journal:
        return None
    slots = plan_slots(workers, gpus, per_gpu, req.device)
    return slots if len(slots) > 1 or gpus is not None or journal else None


def stored_space(req: SearchRequest) -> str | None:
    """The space stored with `req.study` (a worker joining from another machine), if any."""
    if req.study is None:
        return None
    path = study_space_file(req.study, open_storage(req.storage, Path(req.runs_dir)),
                            Path(req.runs_dir))
    return None if path is None else str(path)


def storage_for_workers(req: SearchRequest, n: int, notes: list[str]) -> str:
    """The storage `n` workers share (module docstring); StudyError for SQLite."""
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


def worker_args(session: SearchSession, slots: list[Slot]) -> list[str]:
    """The `nas-attn worker` options every worker of this search gets (its index apart)."""
    req = session.request  # as open_search resolved it (a resumed study's data settings)
    seed = req.seed if req.seed is not None else session.space.search.seed
    return worker_options(req, {
        "study": session.study.study_name, "storage": req.storage,
        "runs_dir": Path(req.runs_dir).resolve(), "space": Path(session.space_path).resolve(),
        "seed": seed,
        "device": None if any(s.device for s in slots) else req.device})  # a slot's own wins


@dataclass
class ParallelSearch:
    """A study opened for worker processes, with their supervisor (not started yet)."""

    request: SearchRequest
    session: SearchSession
    supervisor: Supervisor
    trials: int
    slots: list[Slot]
    log_dir: Path
    n_before: int
    """Trials the study held (not waiting) before this run."""
    notes: list[str] = field(default_factory=list)

    @property
    def study(self) -> optuna.Study:
        return self.session.study

    def ran(self) -> list[int]:
        """Numbers of the trials this run started."""
        waiting = optuna.trial.TrialState.WAITING
        return [t.number for t in self.study.get_trials(deepcopy=False)
                if t.state != waiting][self.n_before:]

    def check_outcome(self, interrupted: bool = False) -> None:
        """DiskFullError when a worker stopped the search for a full disk, StudyError when no
        worker could start."""
        sup = self.supervisor
        if sup.fatal is not None:
            raise DiskFullError(f"{sup.fatal}; the search stopped: free some space, then "
                                "resume with the same command")
        if not sup.started_any() and not interrupted:
            raise StudyError("no worker could start: " + "; ".join(sup.start_errors))


def open_parallel(req: SearchRequest, slots: list[Slot], space_from_study: bool = False,
                  on_phase1=None) -> ParallelSearch:
    """Open (or resume) the study for `slots` worker processes (module docstring): the
    storage they share, the stored space, the baselines enqueued once, phase 1 of a one-shot
    search (`on_phase1(session)` instead, to show it), and their supervisor."""
    notes: list[str] = []
    req = dataclasses.replace(req, storage=storage_for_workers(req, len(slots), notes))
    if space_from_study:
        req = dataclasses.replace(req, space=stored_space(req) or "default")
    session = open_search(req)  # creates the study and enqueues the baselines, once
    # what runs before the trials (one-shot: phase 1) on this process's device, before any
    # worker; `on_phase1` shows it and calls session.prepare()
    (on_phase1 or SearchSession.prepare)(session)
    trials = session.trials(req.trials)
    study = session.study
    log_dir = inside(req.runs_dir, study.study_name, "workers")
    sup = Supervisor(study, slots, worker_args(session, slots), trials, req.timeout, log_dir,
                     session.space.budget.epochs,
                     placements=session.plan.budget(session, trials))  # one-shot: placements
    waiting = optuna.trial.TrialState.WAITING
    n_before = sum(t.state != waiting for t in study.get_trials(deepcopy=False))
    return ParallelSearch(req, session, sup, trials, slots, log_dir, n_before, notes)


def run_parallel(req: SearchRequest, slots: list[Slot], space_from_study: bool = False
                 ) -> optuna.Study:
    """`open_parallel`, run the workers to the end, and check the outcome (what
    `na.search(workers=...)` does; a KeyboardInterrupt stops the workers and propagates)."""
    run = open_parallel(req, slots, space_from_study)
    try:
        run.supervisor.run()
    finally:
        run.supervisor.write_status()
    run.check_outcome()
    return run.study
