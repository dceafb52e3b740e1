"""Rich views for `nas-attn search` (live trial + leaderboard) and `nas-attn show`."""
from __future__ import annotations

import time
from pathlib import Path

import optuna
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.tree import Tree

from ..architecture.description import UNetArch
from .fmt import WIDE_LEADERBOARD, StepLog, big_count, fmt_score, escape
from ..errors import DiskFullError, StudyError
from ..searching import (SearchRequest, baseline_gains, best_trial, get_strategy, importances,
                         leaderboard, load_study, open_existing_storage, open_search,
                         pareto_front, run_search, score_kind, trial_arch)


STATE_STYLE = {"complete": "green", "pruned": "yellow", "fail": "red", "running": "cyan",
               "waiting": "dim"}


class Leaderboard:
    """The best trials as a table; rendered at the console's width: on a narrow console the
    architecture (and note) of each trial is listed below the table, one line each."""

    def __init__(self, study: optuna.Study, top: int, title: str = "Leaderboard",
                 vs_best: dict[int, str] | None = None):
        self.rows = leaderboard(study, top)
        self.title = title
        self.vs_best = vs_best

    def table(self, wide: bool) -> Table:
        t = Table(title=escape(self.title), expand=False)
        cols = [("rank", {"justify": "right"}), ("trial", {"justify": "right"}),
                ("state", {}), ("Dice", {"justify": "right"}),
                ("95 % CI", {"justify": "right"})] + ([("vs best", {})] if self.vs_best
                                                      is not None else []) + [
                ("params", {"justify": "right"}), ("FLOPs", {"justify": "right"}),
                ("latency", {"justify": "right"})]
        if wide:
            cols += [("architecture", {"overflow": "fold"}), ("note", {"overflow": "fold"})]
        for col, kw in cols:
            t.add_column(col, **kw)
        for r in self.rows:
            cells = [str(r.rank or ""), str(r.number),
                     f"[{STATE_STYLE.get(r.state, '')}]{r.state}[/]", fmt_score(r.dice),
                     "—" if r.dice_ci is None else f"±{(r.dice_ci[1] - r.dice_ci[0]) / 2:.3f}",
                     *([self.vs_best.get(r.number, "")] if self.vs_best is not None else []),
                     big_count(r.params), big_count(r.flops),
                     "—" if r.latency_ms is None else f"{r.latency_ms:.1f} ms"]
            if wide:
                cells += [escape(r.summary), escape(_note(r))]
            t.add_row(*cells)
        return t

    def __rich_console__(self, console, options):
        wide = options.max_width >= WIDE_LEADERBOARD
        yield self.table(wide)
        if not wide:
            for r in self.rows:
                note = _note(r)
                yield f"  trial {r.number}: {escape(r.summary or 'not built yet')}" + (
                    f"  [dim]({escape(note)})[/dim]" if note else "")


def _note(r) -> str:
    return ", ".join(x for x in (r.label, r.reason) if x)


def leaderboard_table(study: optuna.Study, top: int, title: str = "Leaderboard",
                      vs_best: dict[int, str] | None = None) -> Leaderboard:
    return Leaderboard(study, top, title, vs_best)


def arch_tree(arch: UNetArch, title: str) -> Tree:
    tree = Tree(f"[bold]{title}[/bold]")
    macro = tree.add("macro")
    for line in arch.describe().splitlines()[:3]:
        macro.add(line)
    for kind in ("encoder", "bottleneck", "skip", "decoder"):
        branch = tree.add(kind)
        specs = [arch.bottleneck] if kind == "bottleneck" else getattr(arch, kind)
        for i, s in enumerate(specs):
            label = "" if kind == "bottleneck" else f"level {i}: "
            branch.add(label + (f"[cyan]{s.short()}[/cyan]" if s.name else "[dim]none[/dim]"))
    return tree


def supernet_panel(step) -> Panel:
    """Phase 1 of a one-shot search: which supernet, epoch, step, loss, throughput."""
    i = step.info
    return Panel(f"{escape(step.macro)}\nepoch {i.epoch}/{i.epochs}   step {i.global_step}/"
                 f"{i.total_steps}   loss {i.loss:.4f}   lr {i.lr:.2e}   "
                 f"{i.images_per_s:.1f} img/s   elapsed {i.elapsed_s:.0f}s",
                 title=f"phase 1: supernet {step.index}/{step.count} (the plain path first, "
                 "then one path per step, fair per site)", border_style="magenta")


def print_supernets(study: optuna.Study, console: Console, gap: bool = False) -> None:
    """Phase 1's result, one line per supernet, and the placements phase 2 chooses among
    (nothing for a study without one; `gap`: a blank line first)."""
    info = study.user_attrs.get("oneshot") or {}
    if info and gap:
        console.print()
    shared_seen = set()
    for r in info.get("supernets", []):
        shared = r.get("shared")
        if shared and shared["file"] not in shared_seen:
            shared_seen.add(shared["file"])
            console.print(f"shared supernet: {shared['params']:,} parameters, "
                          f"{shared['steps']} steps in {shared['seconds']:.0f}s; few-shot split "
                          f"on {r['split']['site']} into the sub-supernets below",
                          highlight=False)
        warm = (f", the first {r['warmup_steps']} on the plain path" if r.get("warmup_steps")
                else "")
        how = (f"fine-tuned from the shared one for {r['steps']} steps" if shared else
               f"{r['steps']} steps{warm}")
        if r.get("resumed_from_epoch"):
            how += f" (resumed after epoch {r['resumed_from_epoch']})"
        console.print(f"supernet {escape(r['macro'])}: {r['params']:,} parameters (the sum of "
                      f"every choice), {how} in {r['seconds']:.0f}s; "
                      f"choices per site {r['choices_per_site']}", highlight=False)
    for p in info.get("plain_paths", []):
        console.print(f"plain path (every site empty) of {escape(p['summary'].split(' | ')[0])}"
                      f": inherited Dice {p['dice']:.4f}", highlight=False)
    if info:
        console.print(f"phase 2: placements scored with inherited weights and recalibrated "
                      f"BatchNorm, out of {info['placements']:.3g}", highlight=False)


def run_phase1(session, console: Console) -> None:
    """What the strategy runs before its trials (one-shot: phase 1, the supernets), in this
    process, before workers start; nothing for a per-trial search."""
    if session.plan.trial_epochs(session.space):  # trials train: nothing runs before them
        return session.prepare()
    console.print("phase 1: training the supernet(s) in this process", highlight=False)
    session.prepare()
    print_supernets(session.study, console)


class LiveView:
    """Listener for the search loop: current trial panel + leaderboard, redrawn live."""

    def __init__(self, console: Console, study_getter, epochs: int):
        self.console = console
        self.study_getter = study_getter
        self.epochs = epochs
        self.current = None
        self.live: Live | None = None
        self.started = time.perf_counter()
        self.finished: list[int] = []
        self.supernet = None
        self.log = not console.is_terminal
        """Output to a file (a batch job's log): the live view draws nothing until the end, so
        each trial, and long phases every 30 s, get a line of their own."""
        self.steps = StepLog(console)
        self.estimated: dict[int, tuple | None] = {}
        self.last_line = 0.0

    def _render(self):
        parts = []
        if self.supernet is not None:
            parts.append(supernet_panel(self.supernet))
            return Group(*parts)
        if self.current:
            c = self.current
            dice = "—" if c["dice"] is None else f"{c['dice']:.4f}"
            label = f" ({c['label']})" if c["label"] else ""
            when = f"epoch {c['epoch']}/{self.epochs}" if self.epochs else "inherited weights"
            parts.append(Panel(
                f"{escape(c['summary'])}\n{when}   Dice {dice}   "
                f"elapsed {time.perf_counter() - c['t0']:.0f}s",
                title=f"trial {c['number']}{label}", border_style="cyan"))
        parts.append(leaderboard_table(self.study_getter(), 8, "Best so far"))
        return Group(*parts)

    def refresh(self):
        if self.live:
            self.live.update(self._render())

    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def trial_started(self, number, arch, label):
        self.current = {"number": number, "summary": arch.summary(), "epoch": 0, "dice": None,
                        "label": label, "t0": time.perf_counter()}
        if self.log:
            self._line(f"trial {number} started: {escape(arch.summary())}"
                       + (f" ({escape(label)})" if label else ""))
            self.last_line = time.perf_counter()
        self.refresh()

    def epoch_done(self, number, epoch, metrics):
        if self.current:
            self.current["epoch"] = epoch
            self.current["dice"] = float(metrics.get("dice", 0.0))
            if self.log and time.perf_counter() - self.last_line >= self.steps.every:
                self.last_line = time.perf_counter()
                self._line(f"  trial {number}: epoch {epoch}/{self.epochs}, Dice "
                           f"{self.current['dice']:.4f}, "
                           f"{self.last_line - self.current['t0']:.0f} s")
        self.refresh()

    def supernet_step(self, step):
        """Phase 1 of a one-shot search: the supernet being trained; once per supernet, how
        long it will take from its first timed steps; in a log, a line every 30 s."""
        self.supernet = step
        i = step.info
        first = self.estimated.setdefault(step.index, (i.elapsed_s, i.global_step))
        if first and (i.global_step - first[1] >= 10 or i.elapsed_s - first[0] >= 20):
            self.estimated[step.index] = None  # said once; the first step (set-up) left out
            rate = (i.elapsed_s - first[0]) / max(1, i.global_step - first[1])
            total = i.elapsed_s + rate * (i.total_steps - i.global_step)
            self._line(f"phase 1, supernet {step.index} of {step.count}: about "
                       f"{total / 60:.1f} min for its {i.epochs} epochs ({i.total_steps} "
                       f"steps, timed on {i.global_step - first[1]})")
        if self.log:
            self.steps(f"supernet {step.index}/{step.count}", i)
        self.refresh()

    def trial_done(self, trial):
        self.supernet = None
        self.current = None
        self.finished.append(trial.number)  # this process's trials (others may share the study)
        if self.log:
            ua = trial.user_attrs
            what = (f"Dice {trial.values[0]:.4f}" if trial.values else
                    ua.get("prune_reason") or ua.get("fail_reason") or "")
            self._line(f"trial {trial.number} {trial.state.name.lower()}: {escape(what)}")
        self.refresh()


def run_search_cli(req: SearchRequest, console: Console) -> None:
    holder = {}
    view = LiveView(console, lambda: holder["study"], 0)
    session = open_search(req, listener=view)
    holder["study"] = session.study
    view.epochs = session.plan.trial_epochs(session.space)
    study = session.study
    print_opening(session, console)
    trials = session.trials(req.trials)
    interrupted, stopped = False, None
    with Live(view._render(), console=console, refresh_per_second=2, transient=False) as live:
        view.live = live
        from ..interrupts import surfaced

        try:
            with surfaced():  # a library error that hides the signal is the signal
                session.prepare()  # one-shot: phase 1, shown by the view's supernet panel
                view.supernet = None
                print_supernets(session.study, live.console, gap=True)  # what it produced
                run_search(session, trials, req.timeout)
        except KeyboardInterrupt:
            from ..interrupts import acknowledge

            acknowledge(said=True)
            interrupted = _what_stopped(view)
        except DiskFullError as e:  # the leaderboard first (if the storage can still be read)
            stopped = e
        view.live = None
        try:
            live.update(leaderboard_table(study, 10, f"Study {study.study_name}"))
        except Exception:  # noqa: BLE001
            if stopped is None:
                raise
    console.print()
    if stopped is not None:
        raise stopped
    from ..searching import redact

    ran = len(view.finished) + int(bool(interrupted) and view.current is not None)
    where = session.objective.runs_dir if req.storage is None else redact(req.storage)
    console.print(f"ran {ran} trial(s) in this session; {len(study.trials)} in the study. "
                  f"Storage: {where}")
    print_placements(session.placements, console)
    if interrupted:
        from ..interrupts import exit_code

        console.print(f"[yellow]interrupted:[/yellow] {escape(interrupted)}; resume with "
                      f"`{escape(req.resume_command(study.study_name))}`")
        raise typer.Exit(exit_code())
    print_summary(study, console, session.objective.runs_dir)
    check_all_failed(study, view.finished)
    print_next(study, console)


def print_opening(session, console: Console) -> None:
    """The search's first lines: the study, its space and data, the device, the notes."""
    study = session.study
    waiting = optuna.trial.TrialState.WAITING
    n_before = sum(t.state != waiting for t in study.get_trials(deepcopy=False))
    console.print(f"[bold]study[/bold] {escape(repr(study.study_name))} "
                  f"({'new' if session.created else f'resumed with {n_before} trials'}), space "
                  f"{escape(str(session.space_path))}, data "
                  f"{escape(repr(session.objective.data_cfg.source))} "
                  f"({len(session.objective.train_data)} train / "
                  f"{len(session.objective.val_data)} val, {session.objective.info.spatial_dims}D), "
                  f"device {session.objective.device}")
    for note in session.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


def _what_stopped(view: LiveView) -> str:
    """What the interrupt stopped, in words: a supernet of phase 1 (its resume.pt kept), a
    trial (recorded as failed), or the search between two trials."""
    if view.supernet is not None:
        i = view.supernet.info
        return (f"phase 1 stopped in supernet {view.supernet.index} of {view.supernet.count} "
                f"at epoch {i.epoch} of {i.epochs}; its resume.pt (the last finished epoch) is "
                "kept and the next launch continues from it")
    if view.current is not None:
        c = view.current
        at = f" at epoch {c['epoch']} of {view.epochs}" if view.epochs else ""
        return f"trial {c['number']}{at} was recorded as failed (reason: interrupted)"
    return "the search stopped between two trials"


def print_next(study: optuna.Study, console: Console, storage: str | None = None) -> None:
    """The closing `next:` line; for a one-shot study `finalize` first, since its scores are
    inherited (a proxy, and a weak one where it was measured:
    docs/benchmarks/oneshot-fidelity.md)."""
    name = escape(study.study_name) + (f" --storage {escape(storage)}" if storage else "")
    if get_strategy(study.user_attrs.get("strategy")).finalize_first:
        console.print(f"next: `nas-attn finalize {name}` (retrains the best placements and the "
                      "same-size plain UNet from scratch: inherited scores have ranked "
                      "placements no better than chance in the measurements of "
                      "docs/benchmarks/oneshot-fidelity.md), "
                      f"`nas-attn show {name}`, `nas-attn dashboard`")
    elif storage:
        console.print(f"next: `nas-attn show {name}`")
    else:
        console.print(f"next: `nas-attn show {name}`, `nas-attn export {name}`, "
                      "`nas-attn dashboard`")


def print_placements(budget, console: Console) -> None:
    """A one-shot search's phase 2: new placements scored, repeats, why it stopped short."""
    if budget is None:
        return
    console.print(f"one-shot: {budget.summary()}")
    why = budget.why_stopped()
    if why:
        console.print(f"[yellow]note:[/yellow] stopped early: {escape(why)}")


def check_all_failed(study: optuna.Study, numbers) -> None:
    """A search whose every trial (`numbers`: those this session ran) failed is an error
    (exit 2) with the first reason, instead of a success with nothing to show."""
    numbers = set(numbers)
    mine = [t for t in study.get_trials(deepcopy=False) if t.number in numbers]
    if mine and all(t.state == optuna.trial.TrialState.FAIL for t in mine):
        reason = next((t.user_attrs["fail_reason"] for t in mine
                       if t.user_attrs.get("fail_reason")), "no reason recorded")
        raise StudyError(f"all {len(mine)} trial(s) of this search failed; the first reason: "
                         f"{reason}")


def print_summary(study, console, runs_dir: Path | None) -> None:
    """The closing lines: the best against each baseline by the paired comparison on the
    validation cases, and the data's noise check (or how to run one)."""
    from ..searching import noise_for
    from ..stats.noise import sd_text

    noise = noise_for(study, runs_dir)
    gains = baseline_gains(study, noise)
    try:
        best = best_trial(study)
    except StudyError:
        best = None
    label = best.user_attrs.get("baseline") if best is not None else None
    if label:
        console.print(f"the best (trial {best.number}) is the baseline {escape(label)}: no "
                      "searched placement scored higher on validation", highlight=False)
    if gains:
        how = f"{score_kind(study.user_attrs.get('strategy'))} scores, one run each"
        console.print(f"the best (trial {best.number}) against the "
                      f"{'other ' if label else ''}baselines "
                      f"({how}, paired on the validation cases; best − baseline):",
                      highlight=False)
        for g in gains:
            console.print(f"  {escape(g.text())}", highlight=False)
    if noise is not None:
        console.print(escape(sd_text(noise, 3)), highlight=False)
    elif gains:
        console.print("[dim]no noise check for this data: the intervals above count case "
                      "sampling only, not the seed-to-seed spread (`nas-attn noise` measures "
                      "it)[/dim]")


def show_study(name, storage, runs_dir: Path, top: int, console: Console) -> None:
    from ..searching import noise_for, versus_best

    study = load_study(name, open_existing_storage(storage, runs_dir))
    shown = [r.number for r in leaderboard(study, top)]
    console.print(leaderboard_table(study, top, f"Study {study.study_name} "
                                    f"({len(study.trials)} trials)",
                                    versus_best(study, shown, noise_for(study, runs_dir))))
    console.print("[dim]95 % CI: over the validation cases (and the seed-to-seed spread of "
                  "the data's noise check, when one was run); ≈ best: no detectable "
                  "difference from the best trial by the paired comparison[/dim]")
    print_supernets(study, console)  # a one-shot study: what its scores were inherited from
    front = pareto_front(study)
    if front:
        objs = study.user_attrs.get("objectives", [])
        t = Table(title="Pareto front")
        t.add_column("trial", justify="right")
        for o in objs:
            t.add_column(o, justify="right")
        t.add_column("architecture", overflow="fold")
        for tr in front:
            t.add_row(str(tr.number), *[f"{v:.4g}" for v in tr.values],
                      escape(tr.user_attrs.get("arch_summary", "")))
        console.print(t)
    try:
        best = best_trial(study)
    except Exception as e:  # no completed trial yet
        console.print(f"[yellow]{escape(str(e))}[/yellow]")
        return
    console.print(arch_tree(trial_arch(best), f"best: trial {best.number}, Dice "
                                              f"{best.values[0]:.4f}"))
    print_summary(study, console, runs_dir)
    if study.user_attrs.get("finalize"):
        from .final import print_finalize

        print_finalize(study.user_attrs["finalize"], console)
    else:
        what = score_kind(study.user_attrs.get("strategy"))
        console.print(f"[dim]{what} scores only; `nas-attn finalize {escape(study.study_name)}` "
                      "retrains the best with the full budget and several seeds[/dim]")
    imp = importances(study)
    if imp:
        t = Table(title="Parameter importances (fANOVA, on Dice)")
        t.add_column("parameter")
        t.add_column("importance", justify="right")
        for k, v in list(imp.items())[:12]:
            t.add_row(k, f"{v:.3f}")
        console.print(t)
    else:
        console.print("[dim]parameter importances need at least 3 completed trials[/dim]")
