"""Is the search worth running? Its final answer against the honest baselines, on test data.

    python benchmarks/search_quality.py --data builtin
    python benchmarks/search_quality.py --data ../shared/data/inia19-macaque \
        --test-data ../shared/data/inia19-macaque-test

In one run, on one data set and one space (default: `default`):
1. the search (the space's sampler, TPE by default) with `--trials` trials, then `finalize`:
   a race of its `--top` best trials, the two baselines (plain UNet, Attention U-Net) and the
   plain UNet at each one's size (the baselines are the narrowest of the space, so the gain
   over them mixes attention and width), retrained with the full budget (`--epochs`) under at
   most `--seeds` seeds; the champion is confirmed against the plain UNet of its size on fresh
   seeds;
2. a random search with the same number of trials and the same pruner (the honest baseline
   for any search strategy), finalized the same way (its top 1);
3. a one-shot search (`--strategy oneshot`: one supernet, `--oneshot-trials` placements scored
   with inherited weights), finalized the same way (its `--top` best and the baselines);
4. test Dice (per class, pooled over the test split, with its 95 % interval over cases and
   seeds) of each arm's champion, the plain UNet, the Attention U-Net and the plain UNet of the
   champion's size, all with the same full budget; each champion against them by the one
   paired comparison (`nas_attn.stats.compare`, by seed and case) on test, reported only; and
   finalize's verdict, decided on validation and fresh seeds; and the time each arm spent.

The space's per-trial wall-time budget (`budget.max_time_s`, 60 s in `default`) is dropped
unless `--keep-time-limit` is given: with it, how far a trial trains depends on what else the
machine runs, and so would every figure below.

With the same `--runs-dir`, a run resumes what an earlier one left: a study only runs its missing
trials and a finalize result (its finalize.json) with the same top / seeds / epochs is reused. So on two cores,
`--part searched`, `--part oneshot` and `--part random` can run at once, and a run without
`--part` afterwards prints the comparison from their results. `--part searched` or `--part
oneshot` alone also prints its own arm against the baselines it finalized.

Test data is never used to choose anything. Runs under `--runs-dir` (a fresh temporary folder
by default), so nothing of the user's is touched.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from nas_attn.searching.finalize import finalize  # noqa: E402
from nas_attn.searching.opening import SearchRequest, open_search  # noqa: E402
from nas_attn.searching.run import run_search  # noqa: E402


def search_and_finalize(args, runs: Path, study: str, sampler: str | None, top: int,
                        baselines: bool, strategy: str = "trials"
                        ) -> tuple[dict, float, float | None]:
    """Search `args.trials` trials and finalize. A study already in `runs` (an earlier run with
    the same --runs-dir, or the other --part) is resumed: only its missing trials run, and a
    finalize result it holds with the same top, seeds and epochs is reused. Returns the
    result, the wall seconds and the CPU seconds of the processes that ran this arm (search +
    finalize, summed over resumed runs; a loader worker's or a joined finalize's would not
    count; None for a result from before they were recorded)."""
    t0, c0 = time.perf_counter(), time.process_time()
    req = SearchRequest(space=args.space_path, data=None if args.data == "builtin" else args.data,
                        val_pattern=args.val_pattern, test_pattern=args.test_pattern,
                        test_data=args.test_data, study=study, runs_dir=runs,
                        sampler=sampler, seed=args.search_seed, device=args.device,
                        strategy=strategy)
    log = ProgressLog(study)
    session = open_search(req, log)
    trials = args.trials if strategy == "trials" else args.oneshot_trials
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
             optuna.trial.TrialState.FAIL)
    from nas_attn.searching.oneshot.budget import outcome

    done = len([t for t in session.study.get_trials(deepcopy=False, states=ended)
                # one-shot: `trials` new placements scored, as the search counts them
                if strategy == "trials" or outcome(t) in ("scored", "failed")])
    if done < trials:
        run_search(session, trials - done, None)
    old = _finalized(runs, study)
    if old and old.get("top") == top and old.get("seeds") == args.seeds and \
            (args.epochs is None or old.get("epochs") == args.epochs) and done >= trials:
        print(f"{study}: reusing its finalize result ({top} top, {args.seeds} seeds, "
              f"{old.get('epochs')} epochs)")
        return (old, float(session.study.user_attrs.get("benchmark_seconds", 0.0)),
                session.study.user_attrs.get("benchmark_cpu_s"))
    print(f"{study}: search done ({len(session.study.trials)} trials in the study); finalizing",
          flush=True)
    res = finalize(session.study, top=top, seeds=args.seeds, epochs=args.epochs, runs_dir=runs,
                   device=args.device, baselines=baselines, progress=log.training)
    # added to what earlier runs on this study spent (a resumed search or finalize, or one
    # re-assembled from its kept trainings, costs only its own share)
    ua = session.study.user_attrs
    seconds = time.perf_counter() - t0 + (ua.get("benchmark_seconds") or 0.0)
    session.study.set_user_attr("benchmark_seconds", seconds)
    cpu = time.process_time() - c0 + (ua.get("benchmark_cpu_s") or 0.0)
    session.study.set_user_attr("benchmark_cpu_s", cpu)
    return res, seconds, cpu


class ProgressLog:
    """How far an arm is, for a run whose output goes to a file (it runs for hours): a line per
    finished trial or epoch at most every `every` seconds, and one per finalize training."""

    def __init__(self, study: str, every: float = 30.0):
        self.study, self.every, self.last = study, every, 0.0

    def _say(self, text: str, always: bool = False) -> None:
        now = time.monotonic()
        if always or now - self.last >= self.every:
            self.last = now
            print(f"{self.study}: {text}", flush=True)

    def trial_started(self, number, arch, label) -> None:
        pass

    def epoch_done(self, number, epoch, metrics) -> None:
        self._say(f"trial {number}, epoch {epoch}: val Dice {metrics.get('dice', float('nan')):.4f}")

    def trial_done(self, trial) -> None:
        value = "-" if not trial.values else f"{trial.values[0]:.4f}"
        self._say(f"trial {trial.number} {trial.state.name.lower()}: {value}")

    def training(self, p) -> None:
        """finalize's `progress`: after each of its full trainings."""
        self._say(f"finalize training {p.index} of at most {p.runs} ({p.phase}): trial "
                  f"{p.trial} seed {p.seed}, val Dice {p.val_dice:.4f}", always=True)


def _finalized(runs: Path, study: str) -> dict | None:
    """The study's finalize.json (with the per-case counts the comparisons need), if any."""
    try:
        return json.loads((runs / study / "final" / "finalize.json").read_text())
    except (OSError, ValueError):
        return None


def space_without_time_limit(space: str, runs: Path) -> str:
    """A copy of the space (under `runs`) without budget.max_time_s: a trial then trains its
    epochs whatever else runs on the machine, so the figures are reproducible."""
    import yaml

    from nas_attn.searching.space_files import resolve_space_path

    raw = yaml.safe_load(resolve_space_path(space).read_text())
    if not (raw.get("budget") or {}).pop("max_time_s", None):
        return space
    runs.mkdir(parents=True, exist_ok=True)
    out = runs / f"{Path(space).stem}_no_time_limit.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(out)


def same_size_plain(res: dict) -> dict | None:
    """The plain UNet of the champion's size, as finalize raced it (the champion's gain over it
    is attention's, not width's)."""
    key = (res.get("attention_gain") or {}).get("plain_key")
    return row(res, key=key) if key else None


def row(res: dict, *, key: str | None = None, label: str | None = None) -> dict:
    for r in res["candidates"]:
        if (key is not None and r["key"] == key) or (label and r["label"] == label):
            return r
    raise KeyError(key or label)


def versus(a: dict, b: dict, split: str = "test") -> str:
    """The one paired comparison (`nas_attn.stats.compare`) of two finalize rows on the seeds
    both were trained under (race seeds; rows of two finalizes of the same data pair by seed)
    and the same cases."""
    from nas_attn.stats.compare import compare
    from nas_attn.stats.counts import CaseCounts

    if a["key"] == b["key"]:
        return "the same model"
    seeds = [s for s in a["seeds"] if s in b["seeds"]]
    if not seeds or not a.get(f"{split}_cases") or not b.get(f"{split}_cases"):
        return "n/a (no common seeds or no per-case counts)"
    ca = [CaseCounts.from_dict(a[f"{split}_cases"][a["seeds"].index(s)]) for s in seeds]
    cb = [CaseCounts.from_dict(b[f"{split}_cases"][b["seeds"].index(s)]) for s in seeds]
    return compare(ca, cb).text()


def print_proxy(res: dict) -> str:
    rho, tau = res["spearman_short_vs_full"], res.get("kendall_short_vs_full")
    text = ("Spearman " + ("n/a" if rho is None else f"{rho:+.2f}") + ", Kendall "
            + ("n/a" if tau is None else f"{tau:+.2f}"))
    print(f"  proxy quality over {len(res['candidates'])} candidates: {text}")
    return f"{text} ({len(res['candidates'])} candidates)"


class Arm(NamedTuple):
    """How one arm searches and finalizes."""

    label: str
    sampler: str | None
    top: int
    baselines: bool
    strategy: str


MODEL_COLUMNS = ["model", "search", "seeds", "val Dice [95 % CI]", "test Dice [95 % CI]",
                 "architecture"]
VERDICT_COLUMNS = ["arm", "champion vs plain UNet (test)", "vs Attention U-Net (test)",
                   "vs the plain UNet of its size (test)", "finalize's verdict (decided on)",
                   "finalize's verdict on test", "proxy quality"]


def print_table(args, base: dict, arms: list[tuple[str, dict]], compute: str = "") -> list:
    """The comparison on test: the baselines `base` raced, each arm's champion and the plain
    UNet at its size (mean with its 95 % interval over cases and seeds), each champion against
    them by the paired comparison on test, and finalize's verdict (decided on validation,
    confirmation seeds). Returns the same as tables (MODEL_COLUMNS, VERDICT_COLUMNS)."""
    from results_file import table

    from nas_attn.searching.verdict import ci_text

    plain = row(base, label="plain_unet")
    att = row(base, label="attention_unet")
    names = [name for name, _ in arms]
    searched = ", ".join(([f"{args.trials} trials per search"]
                          if {"search", "random search"} & set(names) else [])
                         + ([f"{args.oneshot_trials} one-shot placements"]
                            if "one-shot" in names else []))
    head = (f"data {base['data']}: {base['splits']} samples; space {args.space}"
            f"{'' if args.space_path == args.space else ' without its per-trial time limit'}; "
            f"{searched}; full budget {base['epochs']} epochs, a race of at most {args.seeds} "
            f"seeds; metric: {base['metric']}; 95 % intervals over cases and seeds")
    print(head)
    if compute:
        print(compute)
    print(f"{'model':<46} {'search':>7} {'seeds':>5} {'val Dice [95 % CI]':>26} "
          f"{'test Dice [95 % CI]':>26}  architecture")
    rows = [("plain UNet", plain), ("Attention U-Net", att)]
    for name, res in arms:
        if res.get("winner_key"):
            rows.append((f"{name} champion", row(res, key=res["winner_key"])))
        ctrl = same_size_plain(res)
        if ctrl is not None and ctrl["summary"] != plain["summary"]:
            rows.append((f"  plain UNet, {name} champion's size", ctrl))
        rec = (res.get("recommended") or {}).get("key")
        if rec and rec != res.get("winner_key") and rec != (ctrl or {}).get("key") \
                and rec != plain.get("key"):
            rows.append((f"  {name}: finalize's recommended model", row(res, key=rec)))
    cells = []
    for name, r in rows:
        short = "—" if r["short_dice"] is None else f"{r['short_dice']:.4f}"
        c = [name, short, str(len(r["val"])), ci_text(r["val_ci"]), ci_text(r.get("test_ci")),
             r["summary"]]
        cells.append(c)
        print(f"{c[0]:<46} {c[1]:>7} {c[2]:>5} {c[3]:>26} {c[4]:>26}  {c[5]}")
    return [table("Test Dice of each champion and the baselines", MODEL_COLUMNS, cells,
                  [head] + ([compute] if compute else [])),
            table("Each champion against the baselines, and finalize's verdict",
                  VERDICT_COLUMNS, print_verdicts(arms, plain, att))]


def print_verdicts(arms: list[tuple[str, dict]], plain: dict, att: dict) -> list[list[str]]:
    """Each champion on test against the baselines, finalize's verdict and the proxy quality,
    printed; the same as cells (VERDICT_COLUMNS)."""
    cells = []
    for name, res in arms:
        if not res.get("winner_key"):
            print(f"{name}: no attention among the candidates")
            cells.append([name, "no attention among the candidates"] + [""] * 5)
            continue
        win, ctrl = row(res, key=res["winner_key"]), same_size_plain(res)
        c = [name, versus(win, plain), versus(win, att), versus(win, ctrl) if ctrl else "-"]
        print(f"{name} champion on test (paired by seed and case, reported only): vs plain "
              f"UNet {c[1]}; vs Attention U-Net {c[2]}"
              + (f"; vs the plain UNet of its size {c[3]}" if ctrl else ""))
        g = res["attention_gain"]
        c += [f"{g.get('val_text') or g['verdict']} ({g.get('on')})", g.get("test_text") or "-"]
        print(f"  finalize's verdict ({g.get('on')}): {g.get('val_text') or g['verdict']}"
              + (f"; on test: {g['test_text']}" if g.get("test_text") else ""))
        cells.append(c + [print_proxy(res)])
    return cells


def _lean(x):
    """A finalize result without its per-case counts (they stay in the study's
    finalize.json)."""
    if isinstance(x, dict):
        return {k: _lean(v) for k, v in x.items() if not (k == "cases" or k.endswith("_cases"))}
    return [_lean(v) for v in x] if isinstance(x, list) else x


def write_results(args, out: dict, tables: list[dict], notes: list[str]) -> None:
    """--out: each arm's finalize result (without per-case counts), its seconds, the tables."""
    import results_file

    tables = tables + [results_file.table(
        "Compute of each arm (search + finalize)", ["arm", "wall s", "CPU s of its processes"],
        [[part, f"{t:.0f}", "n/a" if c is None else f"{c:.0f}"] for part, (_, t, c) in
         out.items()], notes)]
    results = {part: {"finalize": _lean(res), "wall_s": t, "cpu_s": c}
               for part, (res, t, c) in out.items()}
    path = results_file.write(args.out, "search_quality", vars(args), results, tables,
                              device=args.device)
    print(f"written: {path}")


def finish_part(args, out: dict, arm: Arm, runs: Path, t_start: float) -> None:
    """`--part X` alone: its time, and its result against the baselines it finalized."""
    cpu = out[args.part][2]
    cpu = "" if cpu is None else f" ({cpu:.0f} CPU s spent on this arm, search + finalize, over its runs)"
    done = f"{args.part}: done in {time.perf_counter() - t_start:.0f} s{cpu}; runs in {runs}"
    print(done)
    res = out[args.part][0]
    tables = []
    if arm.baselines and res["splits"]["test"]:
        # this arm finalized its own baselines: its result alone, against them
        tables = print_table(args, res, [(arm.label, res)])
    if args.json:
        args.json.write_text(json.dumps({args.part: res}, indent=1))
    if args.out:
        write_results(args, out, tables, [done])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="builtin", help="builtin or a dataset folder")
    ap.add_argument("--space", default="default")
    ap.add_argument("--val-pattern", default=None)
    ap.add_argument("--test-pattern", default=None)
    ap.add_argument("--test-data", default=None, help="a separate test folder")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="full budget (default: 30)")
    ap.add_argument("--search-seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--keep-time-limit", action="store_true",
                    help="keep the space's per-trial wall-time budget (budget.max_time_s); by default "
                         "it is dropped so that the figures do not depend on the machine's load")
    ap.add_argument("--runs-dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--out", default=None, help="also write the printed tables and each arm's "
                    "results without per-case counts here (JSON with the date, commit and "
                    "machine; benchmarks/render.py builds the docs' tables)")
    ap.add_argument("--oneshot-trials", type=int, default=300,
                    help="placements the one-shot arm scores with inherited weights")
    ap.add_argument("--part", choices=("both", "searched", "random", "oneshot"), default="both",
                    help="run only the search, the random search or the one-shot search (one "
                         "process each, with the same --runs-dir); a later run of both with "
                         "that --runs-dir reuses their results and prints the comparison")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.perf_counter()
    runs = args.runs_dir or Path(tempfile.mkdtemp(prefix="nas_attn_sq_"))
    args.space_path = space_without_time_limit(args.space, runs) if not args.keep_time_limit \
        else args.space


    arms = {  # each part is a study of its own name
        "searched": Arm("search", None, args.top, True, "trials"),
        "oneshot": Arm("one-shot", None, args.top, True, "oneshot"),
        "random": Arm("random search", "random", 1, False, "trials"),
    }
    out: dict[str, tuple[dict, float, float | None]] = {}
    for part, arm in arms.items():
        if args.part in ("both", part):
            out[part] = search_and_finalize(args, runs, part, arm.sampler, arm.top,
                                            arm.baselines, arm.strategy)
    if args.part != "both":
        finish_part(args, out, arms[args.part], runs, t_start)
        return
    (tpe, t_tpe, c_tpe), (one, t_one, c_one), (rnd, t_rnd, c_rnd) = \
        out["searched"], out["oneshot"], out["random"]
    if tpe["splits"]["test"] == 0:
        sys.exit("no test split: give --test-data, --test-pattern, or a folder with test.txt")
    tables = print_table(args, tpe, [("search", tpe), ("one-shot", one), ("random search", rnd)],
                         f"compute (search + finalize, wall): per-trial search {t_tpe:.0f} s, "
                         f"one-shot {t_one:.0f} s, random search {t_rnd:.0f} s; CPU s of each "
                         "arm's processes: " + ", ".join("n/a" if c is None else f"{c:.0f}"
                                                       for c in (c_tpe, c_one, c_rnd))
                         + f"; runs in {runs}")
    if args.json:
        args.json.write_text(json.dumps({"search": tpe, "oneshot": one, "random": rnd},
                                        indent=1))
    if args.out:
        write_results(args, out, tables, [])


if __name__ == "__main__":
    main()
