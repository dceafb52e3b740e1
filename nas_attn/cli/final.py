"""`nas-attn finalize` and `nas-attn noise`: their options, their progress lines and the views
of their results (also what `show` prints of a finalize)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import NasAttnError
from .fmt import StepLog, WIDE_LEADERBOARD, fmt_score, escape
from .options import CACHE, RUNS, STORAGE, cache_env

console = Console()


def finalize_command(
    study: Optional[str] = typer.Argument(None, help="Study name (default: the latest)."),
    top: int = typer.Option(3, "--top", min=1, help="Race this many best trials (and the "
                            "baselines, and the plain UNet at each one's size)."),
    seeds: int = typer.Option(5, "--seeds", min=2, help="The most training seeds an entrant "
                              "gets in the race."),
    min_seeds: int = typer.Option(2, "--min-seeds", min=2, help="Seeds of the first round, "
                                  "before anything is dropped."),
    budget: Optional[int] = typer.Option(None, "--budget", min=1, help="The most full trainings "
                                         "the race may run (default: 3 per entrant)."),
    confirm_seeds: int = typer.Option(3, "--confirm-seeds", min=0, help="Fresh seeds of the "
                                      "champion, its plain UNet and the Attention U-Net that "
                                      "decide the verdict (0: decide on the race's seeds, "
                                      "which chose the champion)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Full budget in epochs "
                                         "(default: the training default, 30)."),
    test_data: Optional[str] = typer.Option(None, "--test-data", help="A separate test folder "
                                            "the search never saw."),
    data: Optional[str] = typer.Option(None, "--data", help="The study's data folder at another path."),
    device: Optional[str] = typer.Option(None, "--device"),
    seed_offset: int = typer.Option(0, "--seed-offset", min=0, help="Added to every training "
                                    "seed: the same finalize again on other seeds."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Race the "
                                   "study's baselines too."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Train in N worker "
                                          "processes that split each round."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="One worker per GPU: 0,1,3 or all."),
    per_gpu: int = typer.Option(1, "--per-gpu", min=1, help="Workers per GPU with --gpus."),
    join: bool = typer.Option(False, "--join", help="Only train: join a finalize of this study "
                              "started elsewhere with the same options and runs folder."),
    storage: Optional[str] = STORAGE,
    runs_dir: Path = RUNS,
    cache_dir: Optional[Path] = CACHE,
):
    """Race the best trials, the baselines and the plain UNet at each one's size with the full
    budget: one more seed per round for every survivor, the significantly worse dropped; then
    decide attention against the plain UNet on fresh seeds, and report once on test."""
    cache_env(cache_dir, runs_dir)
    finalize_cli(study, {"top": top, "seeds": seeds, "min_seeds": min_seeds, "budget": budget,
                         "confirm_seeds": confirm_seeds, "epochs": epochs,
                         "test_source": test_data, "data": data, "device": device,
                         "seed_offset": seed_offset, "baselines": baselines,
                         "workers": workers, "gpus": gpus, "per_gpu": per_gpu, "join": join,
                         "storage": storage}, storage, runs_dir, console)


def noise_command(
    space: str = typer.Option("default", "--space", help="Whose plain UNet and recipe (a ready "
                              "space or a YAML file)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset folder, builtin or "
                                       "builtin3d (default: the space's)."),
    val_pattern: Optional[str] = typer.Option(None, "--val-pattern", help="Glob on sample "
                                              "names that selects validation samples."),
    seeds: int = typer.Option(3, "--seeds", min=2, help="Training seeds of the plain UNet."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Full budget in epochs "
                                         "(default: finalize's)."),
    from_finalize: Optional[str] = typer.Option(None, "--from-finalize", help="Read the plain "
                                                "UNet's runs from this study's finished "
                                                "finalize instead of training."),
    confirm_seeds: int = typer.Option(3, "--confirm-seeds", min=2, help="The seeds per arm "
                                      "finalize confirms with: the smallest detectable gain "
                                      "is given for this many."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the summary "
                                             "here."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
    device: Optional[str] = typer.Option(None, "--device"),
    storage: Optional[str] = STORAGE,
    runs_dir: Path = RUNS,
    cache_dir: Optional[Path] = CACHE,
):
    """Measure the noise floor of a data set before a search: the plain UNet under a few seeds
    at the full budget; its seed-to-seed spread, its interval, the smallest gain finalize can
    detect and the seeds needed for +0.5 and +1.0 Dice points."""

    cache_env(cache_dir, runs_dir)
    noise_cli({"space": space, "data": data, "val_pattern": val_pattern, "seeds": seeds,
               "epochs": epochs, "device": device}, from_finalize, confirm_seeds, json_path,
              force, storage, runs_dir, console)


class FinalTable:
    """finalize's candidates as a table; on a console narrower than `WIDE_LEADERBOARD` each
    architecture goes on a line of its own under the table (as the leaderboard does)."""

    def __init__(self, res: dict):
        self.res = res
        rec = res.get("recommended") or {}
        self.rows = sorted(res["candidates"], key=lambda r: -r["val_mean"])
        self.win = {r.get("key"): r.get("key") == rec.get("key") for r in self.rows}

    def table(self, wide: bool) -> Table:
        from ..searching import ci_text, score_kind

        res = self.res
        has_test = res["splits"]["test"] > 0
        t = Table(title=f"Final answer: a race of full-budget retrainings ({res['epochs']} "
                        f"epochs, at most {res['seeds']} seeds each), ★ recommended; 95 % "
                        "intervals over cases and seeds")
        for col, kw in (("trial", {"justify": "right"}), ("baseline", {}),
                        (score_kind(res.get("strategy")), {"justify": "right"}),
                        ("seeds", {"justify": "right"}),
                        ("val Dice [95 % CI]", {"justify": "right"}),
                        ("test Dice [95 % CI]" if has_test else "test", {"justify": "right"}),
                        ("race", {})) + ((("architecture", {"overflow": "fold"}),) if wide
                                         else ()):
            t.add_column(col, **kw)
        for r in self.rows:
            cells = [("★ " if self.win[r.get("key")] else "") + _trial_name(r),
                     escape(r["label"]), fmt_score(r["short_dice"]), str(len(r["val"])),
                     ci_text(r.get("val_ci")), ci_text(r.get("test_ci")) if has_test else "—",
                     r.get("status", "")]
            t.add_row(*cells, *([escape(r["summary"])] if wide else []),
                      style="bold" if self.win[r.get("key")] else None)
        return t

    def __rich_console__(self, console, options):
        wide = options.max_width >= WIDE_LEADERBOARD
        yield self.table(wide)
        if not wide:
            for r in self.rows:
                yield f"  {_trial_name(r)}: {escape(r['summary'])}"


def _trial_name(r: dict) -> str:
    return "—" if r["trial"] is None else str(r["trial"])


def finalize_table(res: dict) -> FinalTable:
    return FinalTable(res)


def print_finalize(res: dict, console: Console) -> None:
    from ..searching import ci_text, gain_line, proxy_line, race_lines

    console.print(finalize_table(res))
    console.print("metric: " + res["metric"], highlight=False)
    console.print(f"test split: {escape(res['test_source'] or 'none')} ({res['splits']['test']} "
                  "samples; scored once per retrained model, never used to choose)",
                  highlight=False)
    for line in race_lines(res):
        console.print(escape(line), highlight=False)
    conf = res.get("confirmation")
    if conf:
        console.print(f"confirmation on fresh seeds {conf['seeds']}: " + "; ".join(
            f"{escape(r['label'] or 'trial ' + str(r['trial']))} val {ci_text(r['val_ci'])}"
            for r in conf["rows"]), highlight=False)
    console.print(escape(proxy_line(res)), highlight=False)
    if gain_line(res):
        console.print(escape(gain_line(res)), highlight=False)
    pic = (res.get("attention_gain") or {}).get("picture")
    if pic:
        console.print(f"per-case differences: {escape(pic)} (and the study's artifacts in the "
                      "dashboard)", highlight=False)


def finalize_cli(name, options: dict, storage, runs_dir: Path, console: Console) -> None:
    """`nas-attn finalize`: the plan, a line per training and per round, the result."""
    from ..searching import candidates, entrants_of, with_controls
    from ..searching import finalize_study as finalize
    from ..stats.race import default_budget

    from ..searching import load_study, open_existing_storage

    study = load_study(name, open_existing_storage(storage, runs_dir))
    chosen = with_controls(candidates(study, options["top"], options["baselines"]))
    names = [str(c.trial) if c.trial is not None else f"plain at trial {c.control_of}'s size"
             for c in chosen]
    budget = options.get("budget") or default_budget(len(entrants_of(chosen)))
    console.print(f"finalizing study {escape(repr(study.study_name))}: a race of {len(chosen)} entrants "
                  f"({', '.join(names)}), {options['min_seeds']} to {options['seeds']} seeds "
                  f"each, at most {budget} full trainings (--budget), then "
                  f"{options['confirm_seeds']} fresh confirmation seeds for the champion, its "
                  "plain UNet and the Attention U-Net", highlight=False)

    def progress(p) -> None:
        test = "" if p.test_dice is None else f", test {p.test_dice:.4f}"
        who = p.name
        ci = "" if p.val_ci is None else f" [{p.val_ci[0]:.4f}, {p.val_ci[1]:.4f}]"
        console.print(f"  [{p.index}/≤{p.runs}] {p.phase}: {escape(who)} seed {p.seed}: val "
                      f"{p.val_dice:.4f}{ci}{test}", highlight=False)

    def on_round(rnd) -> None:
        console.print(f"  round with {rnd.seeds} seeds: {len(rnd.survivors)} in, best "
                      f"{rnd.best}; dropped: {', '.join(rnd.dropped) or 'none'}",
                      highlight=False)

    try:
        res = finalize(study, runs_dir=runs_dir, progress=progress, on_round=on_round,
                       on_step=StepLog(console), **options)
    except KeyboardInterrupt:
        from ..interrupts import acknowledge

        code = acknowledge(said=True)
        kept = Path(runs_dir) / study.study_name / "final" / "runs"
        n = len(list(kept.glob("*.json"))) if kept.is_dir() else 0
        console.print(f"[yellow]interrupted:[/yellow] the training under way was stopped; the "
                      f"{n} finished training(s) are kept in {escape(str(kept))} and the same "
                      "command resumes from them", highlight=False)
        raise typer.Exit(code) from None
    if options.get("join"):
        console.print(f"joined the finalize of {escape(repr(study.study_name))}: trained {res['trained']} "
                      "of its trainings here", highlight=False)
        return
    print_finalize(res, console)
    console.print(f"written: {escape(str(Path(runs_dir) / study.study_name / 'final'))}"
                  f"/finalize.json; `nas-attn export {escape(study.study_name)}` exports the "
                  "recommended model's weights",
                  highlight=False)


def noise_cli(options: dict, from_finalize: str | None, confirm_seeds: int,
              json_path: Path | None, force: bool, storage, runs_dir: Path,
              console: Console) -> None:
    from ..api import noise

    if json_path is not None and json_path.exists() and not force:
        raise NasAttnError(f"--json {json_path} exists; give --force to replace it")

    def on_start(plan: dict) -> None:
        console.print(f"noise check on {escape(str(plan['data']))} ({plan['train']} train / "
                      f"{plan['val']} val samples): {escape(plan['arch'])}, {plan['epochs']} "
                      f"epochs, {plan['seeds']} seeds; runs kept in "
                      f"{escape(plan['folder'])}", highlight=False)

    def progress(p) -> None:
        how = "read back" if p.cached else f"{p.seconds:.0f} s"
        console.print(f"  seed {p.seed} ({p.seed + 1}/{p.seeds}): val Dice {p.dice:.4f} "
                      f"({how})", highlight=False)

    try:
        summary = noise(runs_dir=runs_dir, storage=storage, from_finalize=from_finalize,
                        confirm_seeds=confirm_seeds, progress=progress, on_start=on_start,
                        on_step=StepLog(console), **({} if from_finalize else options))
    except KeyboardInterrupt:
        from ..interrupts import acknowledge

        code = acknowledge(said=True)
        console.print("[yellow]interrupted:[/yellow] the seed under way was stopped; finished "
                      "seeds are kept and the same command resumes from them", highlight=False)
        raise typer.Exit(code) from None
    for line in summary_lines(summary):
        console.print(escape(line), highlight=False)
    if json_path is not None:
        from ..atomic import atomic_write

        atomic_write(json_path, json.dumps(summary, indent=1))
        console.print(f"written: {escape(str(json_path))}", highlight=False)


def summary_lines(s: dict) -> list[str]:
    """The noise check in words."""
    sc, pair = s["score"], s["pair"]
    need = s["seeds_needed"]

    def seeds(v):
        return "more than 200" if v is None else str(v)

    return [
        f"seed-to-seed spread of the pooled Dice: SD {s['run_sd']:.4f} (scores "
        + ", ".join(f"{v:.4f}" for v in s["scores"]) + ")",
        f"mean score with its 95 % interval over cases and seeds: {sc['value']:.4f} "
        f"[{max(0.0, sc['low']):.4f}, {min(1.0, sc['high']):.4f}]",
        f"two halves of the seeds of the same architecture (no true difference): "
        f"{pair['diff']['value']:+.4f} [{pair['diff']['low']:+.4f}, {pair['diff']['high']:+.4f}]"
        f", p = {pair['p']:.3f}: {pair['verdict']}",
        f"the smallest gain finalize detects with {s['finalize_seeds']} confirmation seeds "
        f"per arm (80 % power, 5 % two-sided): {s['detectable_at_finalize']:+.4f}",
        f"seeds per arm needed to detect +0.5 Dice points: {seeds(need['+0.005'])}; "
        f"+1.0: {seeds(need['+0.010'])}",
        f"stored: {s['path']} (search, show and finalize on this data quote it)"]
