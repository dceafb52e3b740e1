"""Rich views for `nas-attn search` (live trial + leaderboard) and `nas-attn show`."""
from __future__ import annotations

import time
from pathlib import Path

import optuna
import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.tree import Tree

from ..arch import UNetArch
from ..errors import DiskFullError, StudyError
from ..searching.report import (baseline_gains, best_trial, importances, leaderboard, pareto_front,
                            trial_arch)
from ..searching.opening import SearchRequest, open_search
from ..searching.run import run_search
from ..searching.study import load_study, open_existing_storage


def _f(v, spec=".4f"):
    return "—" if v is None else format(v, spec)


def _big(v):
    if v is None:
        return "—"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"


STATE_STYLE = {"complete": "green", "pruned": "yellow", "fail": "red", "running": "cyan",
               "waiting": "dim"}


WIDE_LEADERBOARD = 140
"""Below this console width the architecture leaves the table for a line of its own per trial
(at 80 columns the column got 6 characters, and each summary wrapped over 30 lines; at 140
it gets about 60)."""


class Leaderboard:
    """The best trials as a table; rendered at the console's width: on a narrow console the
    architecture (and note) of each trial is listed below the table, one line each."""

    def __init__(self, study: optuna.Study, top: int, title: str = "Leaderboard"):
        self.rows = leaderboard(study, top)
        self.title = title

    def table(self, wide: bool) -> Table:
        t = Table(title=self.title, expand=False)
        cols = [("rank", {"justify": "right"}), ("trial", {"justify": "right"}),
                ("state", {}), ("Dice", {"justify": "right"}),
                ("params", {"justify": "right"}), ("FLOPs", {"justify": "right"}),
                ("latency", {"justify": "right"})]
        if wide:
            cols += [("architecture", {"overflow": "fold"}), ("note", {"overflow": "fold"})]
        for col, kw in cols:
            t.add_column(col, **kw)
        for r in self.rows:
            cells = [str(r.rank or ""), str(r.number),
                     f"[{STATE_STYLE.get(r.state, '')}]{r.state}[/]", _f(r.dice),
                     _big(r.params), _big(r.flops),
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
                yield f"  trial {r.number}: {escape(r.summary)}" + (
                    f"  [dim]({escape(note)})[/dim]" if note else "")


def _note(r) -> str:
    return ", ".join(x for x in (r.label, r.reason) if x)


def leaderboard_table(study: optuna.Study, top: int, title: str = "Leaderboard") -> Leaderboard:
    return Leaderboard(study, top, title)


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


def print_supernets(study: optuna.Study, console: Console) -> None:
    """Phase 1's result, one line per supernet, and the placements phase 2 chooses among."""
    info = study.user_attrs.get("oneshot") or {}
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
    """Phase 1 of a one-shot search (the supernets) in this process, before workers start."""
    from ..searching.run import prepare_oneshot

    console.print("phase 1: training the supernet(s) in this process", highlight=False)
    prepare_oneshot(session)
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

    def trial_started(self, number, arch, label):
        self.current = {"number": number, "summary": arch.summary(), "epoch": 0, "dice": None,
                        "label": label, "t0": time.perf_counter()}
        self.refresh()

    def epoch_done(self, number, epoch, metrics):
        if self.current:
            self.current["epoch"] = epoch
            self.current["dice"] = float(metrics.get("dice", 0.0))
        self.refresh()

    def supernet_step(self, step):
        """Phase 1 of a one-shot search: the supernet being trained."""
        self.supernet = step
        self.refresh()

    def trial_done(self, trial):
        self.supernet = None
        self.current = None
        self.finished.append(trial.number)  # this process's trials (others may share the study)
        self.refresh()


def run_search_cli(req: SearchRequest, console: Console) -> None:
    holder = {}
    view = LiveView(console, lambda: holder["study"], 0)
    session = open_search(req, listener=view)
    holder["study"] = session.study
    view.epochs = 0 if session.strategy == "oneshot" else session.space.budget.epochs
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
    trials = session.trials(req.trials)
    interrupted, stopped = False, None
    with Live(view._render(), console=console, refresh_per_second=2, transient=False) as live:
        view.live = live
        try:
            if session.strategy == "oneshot":
                from ..searching.run import prepare_oneshot

                prepare_oneshot(session)
                view.supernet = None
                live.console.print()
                print_supernets(session.study, live.console)
            run_search(session, trials, req.timeout)
        except KeyboardInterrupt:
            interrupted = True
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
    from ..searching.study import redact

    ran = len(view.finished) + int(interrupted)
    where = session.objective.runs_dir if req.storage is None else redact(req.storage)
    console.print(f"ran {ran} trial(s) in this session; {len(study.trials)} in the study. "
                  f"Storage: {where}")
    print_placements(session.placements, console)
    if interrupted:
        console.print("[yellow]interrupted:[/yellow] the running trial was recorded as failed; "
                      f"resume with `{escape(req.resume_command(study.study_name))}`")
        raise typer.Exit(130)
    _summary(study, console)
    check_all_failed(study, view.finished)
    print_next(study, console)


def print_next(study: optuna.Study, console: Console, storage: str | None = None) -> None:
    """The closing `next:` line; for a one-shot study `finalize` first, since its scores are
    inherited (a proxy, and a weak one where the README measured it)."""
    name = escape(study.study_name) + (f" --storage {escape(storage)}" if storage else "")
    if study.user_attrs.get("strategy") == "oneshot":
        console.print(f"next: `nas-attn finalize {name}` (retrains the best placements and the "
                      "same-size plain UNet from scratch: inherited scores have ranked "
                      "placements no better than chance in the README's measurements), "
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


def _summary(study, console):
    gains = baseline_gains(study)
    if gains:
        how = " (inherited scores)" if study.user_attrs.get("strategy") == "oneshot" else ""
        console.print(f"gain of the best over the baselines{how}: " + ", ".join(
            f"{label} {d:.4f} ({g:+.4f})" for label, d, g in gains))


def show_study(name, storage, runs_dir: Path, top: int, console: Console) -> None:
    study = load_study(name, open_existing_storage(storage, runs_dir))
    console.print(leaderboard_table(study, top, f"Study {study.study_name} "
                                    f"({len(study.trials)} trials)"))
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
    gains = baseline_gains(study)
    if gains:
        t = Table(title="Gain over the baselines" + (
            " (inherited scores)" if study.user_attrs.get("strategy") == "oneshot" else ""))
        t.add_column("baseline")
        t.add_column("its Dice", justify="right")
        t.add_column("best − baseline", justify="right")
        for label, d, g in gains:
            t.add_row(label, f"{d:.4f}", f"{g:+.4f}")
        console.print(t)
    if study.user_attrs.get("finalize"):
        print_finalize(study.user_attrs["finalize"], console)
    else:
        what = "inherited (one-shot)" if study.user_attrs.get("strategy") == "oneshot" \
            else "short-trial"
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


def finalize_table(res: dict) -> Table:
    has_test = res["splits"]["test"] > 0
    t = Table(title=f"Final answer: full-budget retraining ({res['epochs']} epochs × "
                    f"{res['seeds']} seeds), winner by mean validation Dice, "
                    "★ recommended")
    t.add_column("trial", justify="right")
    t.add_column("baseline")
    t.add_column("inherited" if res.get("strategy") == "oneshot" else "short trial",
                 justify="right")
    t.add_column("val Dice mean ± sd", justify="right")
    t.add_column("test Dice mean ± sd" if has_test else "test", justify="right")
    t.add_column("architecture", overflow="fold")
    for r in sorted(res["candidates"], key=lambda r: -r["val_mean"]):
        rec = res.get("recommended")
        win = r["summary"] == rec["summary"] if rec else r["trial"] == res["winner"]
        t.add_row(("★ " if win else "") + ("—" if r["trial"] is None else str(r["trial"])),
                  escape(r["label"]), _f(r["short_dice"]),
                  f"{r['val_mean']:.4f} ± {r['val_std']:.4f}",
                  f"{r['test_mean']:.4f} ± {r['test_std']:.4f}" if has_test else "—",
                  escape(r["summary"]), style="bold" if win else None)
    return t


def print_finalize(res: dict, console: Console) -> None:
    console.print(finalize_table(res))
    from ..searching.verdict import gain_line, proxy_line

    console.print("metric: " + res["metric"], highlight=False)
    console.print(f"test split: {escape(res['test_source'] or 'none')} ({res['splits']['test']} samples; "
                  "scored once per retrained model, never used to choose)", highlight=False)
    console.print(escape(proxy_line(res)), highlight=False)
    if gain_line(res):
        console.print(escape(gain_line(res)), highlight=False)


def finalize_cli(name, top, seeds, epochs, test_data, data, device, storage, runs_dir: Path,
                 console: Console) -> None:
    from ..searching.finalize import candidates, finalize, with_controls

    study = load_study(name, open_existing_storage(storage, runs_dir))
    chosen = with_controls(candidates(study, top))
    names = [str(c.trial) if c.trial is not None else f"plain at trial {c.control_of}'s size"
             for c in chosen]
    console.print(f"finalizing study {study.study_name!r}: {len(chosen)} candidates "
                  f"({', '.join(names)}) × {seeds} seeds", highlight=False)

    def progress(p) -> None:
        test = "" if p.test_dice is None else f", test {p.test_dice:.4f}"
        who = f"trial {p.trial}" if p.trial is not None else "same-size plain"
        console.print(f"  [{p.index}/{p.runs}] {who} seed {p.seed}: val "
                      f"{p.val_dice:.4f}{test}", highlight=False)

    res = finalize(study, top=top, seeds=seeds, epochs=epochs, runs_dir=runs_dir, device=device,
                   test_source=test_data, data=data, progress=progress)
    print_finalize(res, console)
    console.print(f"written: {Path(runs_dir) / study.study_name / 'final' / 'finalize.json'}; "
                  f"`nas-attn export {study.study_name}` exports the winner's retrained weights",
                  highlight=False)
