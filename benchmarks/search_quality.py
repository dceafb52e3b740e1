"""Is the search worth running? Its final answer against the honest baselines, on test data.

    python benchmarks/search_quality.py --data builtin
    python benchmarks/search_quality.py --data ../shared/data/inia19-macaque \
        --test-data ../shared/data/inia19-macaque-test

In one run, on one data set and one space (default: `default`):
1. the search (the space's sampler, TPE by default) with `--trials` trials, then `finalize`:
   its `--top` best trials and the two baselines (plain UNet, Attention U-Net) retrained with
   the full budget (`--epochs`) under `--seeds` seeds; the winner is chosen on validation;
2. a random search with the same number of trials and the same pruner (the honest baseline
   for any search strategy), finalized the same way (its top 1, same seeds);
3. a one-shot search (`--strategy oneshot`: one supernet, `--oneshot-trials` placements scored
   with inherited weights), finalized the same way (its `--top` best and the baselines);
4. `finalize` retrains the plain UNet at each winner's size (its widths and upsampling, no
   attention) beside it: the baselines are the narrowest of the space, so the gain over them
   mixes attention and width;
5. test Dice (per class, pooled over the test split) of each arm's winner against the plain
   UNet, the Attention U-Net and the plain UNet of its size, all with the same full budget,
   and the wall time each arm spent (search + finalize). Where the plain UNet at the
   winner's size won, the arm's best candidate with attention is shown beside it, with its
   paired test gain over that plain UNet (negative: attention did not pay).
   Gains are paired by training seed: mean ± sd over seeds of (winner − other).

The space's per-trial wall-time budget (`budget.max_time_s`, 60 s in `default`) is dropped
unless `--keep-time-limit` is given: with it, how far a trial trains depends on what else the
machine runs, and so would every figure below.

With the same `--runs-dir`, a run resumes what an earlier one left: a study only runs its missing
trials and a finalize result with the same top / seeds / epochs is reused. So on two cores,
`--part searched`, `--part oneshot` and `--part random` can run at once, and a run without
`--part` afterwards prints the comparison from their results. `--part searched` or `--part
oneshot` alone also prints its own arm against the baselines it finalized.

Test data is never used to choose anything. Runs under `--runs-dir` (a fresh temporary folder
by default), so nothing of the user's is touched.
"""
from __future__ import annotations

import argparse
import json
import statistics
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
    result, the wall seconds and the CPU seconds of this process (search + finalize; a loader
    worker's would not count; None for a result from before they were recorded)."""
    t0, c0 = time.perf_counter(), time.process_time()
    req = SearchRequest(space=args.space_path, data=None if args.data == "builtin" else args.data,
                        val_pattern=args.val_pattern, test_pattern=args.test_pattern,
                        test_data=args.test_data, study=study, runs_dir=runs,
                        sampler=sampler, seed=args.search_seed, device=args.device,
                        strategy=strategy)
    session = open_search(req)
    trials = args.trials if strategy == "trials" else args.oneshot_trials
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
             optuna.trial.TrialState.FAIL)
    from nas_attn.searching.oneshot.budget import outcome

    done = len([t for t in session.study.get_trials(deepcopy=False, states=ended)
                # one-shot: `trials` new placements scored, as the search counts them
                if strategy == "trials" or outcome(t) in ("scored", "failed")])
    if done < trials:
        run_search(session, trials - done, None)
    old = session.study.user_attrs.get("finalize")
    if old and old.get("top") == top and old.get("seeds") == args.seeds and \
            (args.epochs is None or old.get("epochs") == args.epochs) and done >= trials:
        print(f"{study}: reusing its finalize result ({top} top, {args.seeds} seeds, "
              f"{old.get('epochs')} epochs)")
        return (old, float(session.study.user_attrs.get("benchmark_seconds", 0.0)),
                session.study.user_attrs.get("benchmark_cpu_s"))
    res = finalize(session.study, top=top, seeds=args.seeds, epochs=args.epochs, runs_dir=runs,
                   device=args.device, baselines=baselines)
    seconds = time.perf_counter() - t0
    session.study.set_user_attr("benchmark_seconds", seconds)
    cpu = time.process_time() - c0
    session.study.set_user_attr("benchmark_cpu_s", cpu)
    return res, seconds, cpu


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


def same_size_plain(res: dict, win: dict | None = None) -> dict | None:
    """The retrained plain UNet at the winner's macro (its widths and upsampling, every site
    empty): `finalize` adds it as a candidate (or it is the plain baseline), and the winner's
    gain over it is the attention's, not the width's. None when the winner is that plain UNet.
    With `win`, the same for that candidate."""
    from nas_attn.arch import UNetArch

    if win is None:
        win = row(res, trial=res["winner"]) if res["winner"] is not None else None
    if win is None:
        return None
    plain = UNetArch.from_dict(win["arch"]).without_attention().to_json()
    found = next((r for r in res["candidates"]
                  if UNetArch.from_dict(r["arch"]).to_json() == plain), None)
    return None if found is win else found


def best_attention(res: dict) -> dict | None:
    """The searched candidate with attention that finalize ranked first on validation (the
    baselines excluded): what the search offered when a plain UNet won."""
    from nas_attn.arch import UNetArch

    found = [r for r in res["candidates"] if not r["label"] and r["trial"] is not None
             and UNetArch.from_dict(r["arch"]).attention_names()]
    return max(found, key=lambda r: r["val_mean"]) if found else None


def row(res: dict, *, trial: int | None = None, label: str | None = None) -> dict:
    for r in res["candidates"]:
        if (trial is not None and r["trial"] == trial) or (label and r["label"] == label):
            return r
    raise KeyError(trial or label)


def paired(a: list[float], b: list[float]) -> str:
    d = [x - y for x, y in zip(a, b)]
    sd = statistics.stdev(d) if len(d) > 1 else 0.0
    return f"{statistics.fmean(d):+.4f} ± {sd:.4f}"


def ms(v: list[float]) -> str:
    return f"{statistics.fmean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.4f}"


def print_proxy(res: dict) -> None:
    rho, tau = res["spearman_short_vs_full"], res.get("kendall_short_vs_full")
    print(f"  proxy quality over {len(res['candidates'])} candidates: Spearman "
          + ("n/a" if rho is None else f"{rho:+.2f}") + ", Kendall "
          + ("n/a" if tau is None else f"{tau:+.2f}"))


class Arm(NamedTuple):
    """How one arm searches and finalizes."""

    label: str
    sampler: str | None
    top: int
    baselines: bool
    strategy: str


def print_table(args, base: dict, arms: list[tuple[str, dict]], compute: str = "") -> None:
    """The comparison on test: the baselines `base` finalized, each arm's winner and the plain
    UNet at its size, and each winner's gains paired by seed (`compute`: a line after the
    first)."""
    plain = row(base, label="plain_unet")
    att = row(base, label="attention_unet")
    names = [name for name, _ in arms]
    searched = ", ".join(([f"{args.trials} trials per search"]
                          if {"search", "random search"} & set(names) else [])
                         + ([f"{args.oneshot_trials} one-shot placements"]
                            if "one-shot" in names else []))
    print(f"data {base['data']}: {base['splits']} samples; space {args.space}"
          f"{'' if args.space_path == args.space else ' without its per-trial time limit'}; "
          f"{searched}; full budget {base['epochs']} epochs × {args.seeds} seeds; metric: "
          f"{base['metric']}")
    if compute:
        print(compute)
    print(f"{'model':<46} {'search score':>12} {'val Dice':>17} {'test Dice':>17}  architecture")
    rows = [("plain UNet", plain), ("Attention U-Net", att)]
    for name, res in arms:
        if res["winner"] is None:  # the same-size plain UNet itself won
            rows.append((f"{name} winner (its plain UNet)", max(
                res["candidates"], key=lambda r: r["val_mean"])))
            if (best := best_attention(res)) is not None:
                rows.append((f"  {name}'s best with attention (trial {best['trial']})", best))
            continue
        rows.append((f"{name} winner (trial {res['winner']})", row(res, trial=res["winner"])))
        ctrl = same_size_plain(res)
        if ctrl is not None:
            rows.append((f"  plain UNet, {name} winner's size", ctrl))
    for name, r in rows:
        short = "—" if r["short_dice"] is None else f"{r['short_dice']:.4f}"
        print(f"{name:<46} {short:>12} {ms(r['val']):>17} {ms(r['test']):>17}  {r['summary']}")
    for name, res in arms:
        if res["winner"] is None:
            print(f"{name}: the plain UNet at the winner's size won: no gain from attention")
            best = best_attention(res)
            ctrl = same_size_plain(res, best) if best is not None else None
            if ctrl is not None:
                print(f"  its best with attention (trial {best['trial']}) on test (paired by "
                      f"seed): vs the plain UNet of its size {paired(best['test'], ctrl['test'])}"
                      f", vs plain UNet {paired(best['test'], plain['test'])}")
            print_proxy(res)
            continue
        win, ctrl = row(res, trial=res["winner"]), same_size_plain(res)
        print(f"{name} winner on test (paired by seed): vs plain UNet "
              f"{paired(win['test'], plain['test'])}, vs Attention U-Net "
              f"{paired(win['test'], att['test'])}"
              + (f", vs the plain UNet of its size {paired(win['test'], ctrl['test'])}" if ctrl
                 else "") + f"; finalize's verdict: {res['attention_gain']['verdict']}")
        print_proxy(res)


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
        cpu = out[args.part][2]
        cpu = "" if cpu is None else f" ({cpu:.0f} CPU s of this process, search + finalize)"
        print(f"{args.part}: done in {time.perf_counter() - t_start:.0f} s{cpu}; runs in {runs}")
        res, arm = out[args.part][0], arms[args.part]
        if arm.baselines and res["splits"]["test"]:
            # this arm finalized its own baselines: its result alone, against them
            print_table(args, res, [(arm.label, res)])
        if args.json:
            args.json.write_text(json.dumps({args.part: res}, indent=1))
        return
    (tpe, t_tpe, c_tpe), (one, t_one, c_one), (rnd, t_rnd, c_rnd) = \
        out["searched"], out["oneshot"], out["random"]
    if tpe["splits"]["test"] == 0:
        sys.exit("no test split: give --test-data, --test-pattern, or a folder with test.txt")
    print_table(args, tpe, [("search", tpe), ("one-shot", one), ("random search", rnd)],
                f"compute (search + finalize, wall): per-trial search {t_tpe:.0f} s, one-shot "
                f"{t_one:.0f} s, random search {t_rnd:.0f} s; CPU s of each arm's process: "
                + ", ".join("n/a" if c is None else f"{c:.0f}" for c in (c_tpe, c_one, c_rnd))
                + f"; runs in {runs}")
    if args.json:
        args.json.write_text(json.dumps({"search": tpe, "oneshot": one, "random": rnd},
                                        indent=1))


if __name__ == "__main__":
    main()
