"""`nas-attn search --workers N / --gpus LIST`: the parent's live view over its workers."""
from __future__ import annotations

import time

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ..searching import ParallelSearch, SearchRequest, Slot, Supervisor, open_parallel
from .fmt import escape


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


def run_workers_cli(req: SearchRequest, slots: list[Slot], space_from_study: bool,
                    console: Console) -> None:
    """`search --workers/--gpus`: the library's parallel search (`searching.parallel`) under a
    live view of the workers and the leaderboard."""
    from .search import run_phase1

    run = open_parallel(req, slots, space_from_study,
                        on_phase1=lambda session: run_phase1(session, console))
    study, req = run.study, run.request
    console.print(f"[bold]study[/bold] {escape(study.study_name)!r} "
                  f"({'new' if run.session.created else f'resumed with {run.n_before} trials'}), "
                  f"space {escape(str(run.session.space_path))}, {len(slots)} workers, "
                  f"{run.trials} {'new placements' if run.session.placements else 'trials'}, "
                  f"storage {escape(req.storage)}")
    for note in run.session.notes + run.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    interrupted = _watch(run, console)
    console.print()  # rich's Live leaves the cursor at the end of its last line
    run.check_outcome(interrupted)
    _report(run, console, interrupted)


def _watch(run: ParallelSearch, console: Console) -> bool:
    """Run the workers under the live view; True when Ctrl-C stopped them."""
    from .search import leaderboard_table

    sup, study, epochs = run.supervisor, run.study, run.session.space.budget.epochs
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
            from ..interrupts import acknowledge

            acknowledge(said=True)
            interrupted = True
        live.update(Group(worker_table(sup, epochs),
                          leaderboard_table(study, 10, f"Study {study.study_name}")))
    sup.write_status()
    return interrupted


def _report(run: ParallelSearch, console: Console, interrupted: bool) -> None:
    from .search import check_all_failed, print_next, print_placements, print_summary

    study, sup, req = run.study, run.supervisor, run.request
    for e in sup.events:
        console.print(f"[yellow]{escape(e)}[/yellow]")
    ran = run.ran()
    console.print(f"ran {len(ran)} trial(s) in this session; {len(study.trials)} in the study. "
                  f"Storage: {escape(req.storage)}; worker logs in {escape(str(run.log_dir))}")
    print_placements(run.session.placements, console)
    print_summary(study, console, req.runs_dir)
    if interrupted:
        console.print("[yellow]interrupted:[/yellow] every worker stopped and its running trial "
                      f"was recorded as failed; resume with "
                      f"`{escape(req.resume_command(study.study_name))} --workers "
                      f"{len(run.slots)}`")
        from ..interrupts import exit_code

        raise typer.Exit(exit_code())
    check_all_failed(study, ran)
    print_next(study, console, req.storage)
