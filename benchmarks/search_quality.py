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
3. the plain UNet at the winner's size (its widths and upsampling, no attention), retrained
   the same way (`width_control`): the baselines are the narrowest of the space;
4. test Dice (per class, pooled over the test split) of the search's winner against the plain
   UNet, the Attention U-Net, the plain UNet of its size and the random search's winner, all
   with the same full budget.
   Gains are paired by training seed: mean ± sd over seeds of (winner − other).

The space's per-trial wall-time budget (`budget.max_time_s`, 60 s in `default`) is dropped
unless `--keep-time-limit` is given: with it, how far a trial trains depends on what else the
machine runs, and so would every figure below.

With the same `--runs-dir`, a run resumes what an earlier one left: a study only runs its missing
trials and a finalize result with the same top / seeds / epochs is reused. So on two cores,
`--part searched` and `--part random` can run at once (then `--part control`), and a run
without `--part` afterwards prints the comparison from their results.

Test data is never used to choose anything. Runs under `--runs-dir` (a fresh temporary folder
by default), so nothing of the user's is touched.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from nas_attn.search.finalize import finalize  # noqa: E402
from nas_attn.search.run import SearchRequest, open_search, run_search  # noqa: E402


def search_and_finalize(args, runs: Path, study: str, sampler: str | None, top: int,
                        baselines: bool) -> tuple[dict, float]:
    """Search `args.trials` trials and finalize. A study already in `runs` (an earlier run with
    the same --runs-dir, or the other --part) is resumed: only its missing trials run, and a
    finalize result it holds with the same top, seeds and epochs is reused."""
    t0 = time.perf_counter()
    req = SearchRequest(space=args.space_path, data=None if args.data == "builtin" else args.data,
                        val_pattern=args.val_pattern, test_pattern=args.test_pattern,
                        test_data=args.test_data, study=study, runs_dir=runs,
                        sampler=sampler, seed=args.search_seed, device=args.device)
    session = open_search(req)
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
             optuna.trial.TrialState.FAIL)
    done = len(session.study.get_trials(deepcopy=False, states=ended))
    if done < args.trials:
        run_search(session, args.trials - done, None)
    old = session.study.user_attrs.get("finalize")
    if old and old.get("top") == top and old.get("seeds") == args.seeds and \
            (args.epochs is None or old.get("epochs") == args.epochs) and done >= args.trials:
        print(f"{study}: reusing its finalize result ({top} top, {args.seeds} seeds, "
              f"{old.get('epochs')} epochs)")
        return old, float(session.study.user_attrs.get("benchmark_seconds", 0.0))
    res = finalize(session.study, top=top, seeds=args.seeds, epochs=args.epochs, runs_dir=runs,
                   device=args.device, baselines=baselines)
    seconds = time.perf_counter() - t0
    session.study.set_user_attr("benchmark_seconds", seconds)
    return res, seconds


def space_without_time_limit(space: str, runs: Path) -> str:
    """A copy of the space (under `runs`) without budget.max_time_s: a trial then trains its
    epochs whatever else runs on the machine, so the figures are reproducible."""
    import yaml

    from nas_attn.search.space import resolve_space_path

    raw = yaml.safe_load(resolve_space_path(space).read_text())
    if not (raw.get("budget") or {}).pop("max_time_s", None):
        return space
    runs.mkdir(parents=True, exist_ok=True)
    out = runs / f"{Path(space).stem}_no_time_limit.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(out)


def width_control(args, runs: Path, tpe: dict) -> dict | None:
    """The plain UNet at the search winner's macro settings (its widths, upsampling: every
    attention site empty), retrained like finalize retrains the candidates, with the plain
    baseline's training options. The baselines use the first value of each macro choice (the
    narrowest width), so the winner's gain over them mixes attention and size; the gain over
    this control is the attention's. None when the winner's macro is the baseline's. Stored in
    the study (user attribute `width_control`) and reused by later runs."""
    from nas_attn.search.finalize import _retrain, _splits, study_space
    from nas_attn.search.report import trial_arch
    from nas_attn.search.study import open_storage

    study = optuna.load_study(study_name="searched", storage=open_storage(None, runs))
    win = study.trials[tpe["winner"]]
    plain = next(t for t in study.trials if t.user_attrs.get("baseline") == "plain_unet")
    arch = trial_arch(win)
    ctrl = dataclasses.replace(arch, encoder=(None,) * len(arch.encoder), bottleneck=None,
                               skip=(None,) * len(arch.skip), decoder=(None,) * len(arch.decoder))
    if ctrl == trial_arch(plain):
        return None
    old = study.user_attrs.get("width_control")
    if old and old.get("summary") == ctrl.summary() and len(old["test"]) == args.seeds:
        print(f"reusing the width control ({old['summary']})")
        return old
    base = row(tpe, label="plain_unet")["train_config"]
    t = optuna.trial.create_trial(value=0.0, user_attrs={"arch": ctrl.to_json()})
    t.number = 9999  # its folder: width_control/trial_9999_seed<S>
    d = _splits(study, study_space(study), None, None)
    res = _retrain(t, dict(base), args.seeds, d, runs / "searched" / "width_control",
                   lambda *a: None, None)
    res.update(label="plain UNet at the winner's macro", short_dice=None)
    study.set_user_attr("width_control", res)
    return res


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
    ap.add_argument("--part", choices=("both", "searched", "random", "control"), default="both",
                    help="run only the search or only the random search (two processes on two "
                         "cores with the same --runs-dir); a later run of both with that "
                         "--runs-dir reuses their results and prints the comparison")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.perf_counter()
    runs = args.runs_dir or Path(tempfile.mkdtemp(prefix="nas_attn_sq_"))
    args.space_path = space_without_time_limit(args.space, runs) if not args.keep_time_limit \
        else args.space


    if args.part != "random":
        tpe, t_tpe = search_and_finalize(args, runs, "searched", None, args.top, True)
    if args.part in ("both", "control"):
        ctrl = width_control(args, runs, tpe)
    if args.part in ("both", "random"):
        rnd, t_rnd = search_and_finalize(args, runs, "random", "random", 1, False)
    if args.part != "both":
        print(f"{args.part}: done in {time.perf_counter() - t_start:.0f} s; runs in {runs}")
        return
    if tpe["splits"]["test"] == 0:
        sys.exit("no test split: give --test-data, --test-pattern, or a folder with test.txt")
    win = row(tpe, trial=tpe["winner"])
    plain = row(tpe, label="plain_unet")
    att = row(tpe, label="attention_unet")
    rwin = row(rnd, trial=rnd["winner"])

    print(f"data {tpe['data']}: {tpe['splits']} samples; space {args.space}"
          f"{'' if args.space_path == args.space else ' without its per-trial time limit'}; "
          f"{args.trials} trials per search; full budget {tpe['epochs']} epochs × {args.seeds} "
          f"seeds; metric: {tpe['metric']}")
    print(f"search + finalize {t_tpe:.0f} s, random search + finalize {t_rnd:.0f} s; runs in {runs}")
    print(f"{'model':<34} {'short trial':>11} {'val Dice':>17} {'test Dice':>17}  architecture")
    rows = [("search winner (trial %d)" % win["trial"], win), ("plain UNet", plain),
            ("Attention U-Net", att)] + ([("plain UNet, winner's size", ctrl)] if ctrl else []) \
        + [("random-search winner (trial %d)" % rwin["trial"], rwin)]
    for name, r in rows:
        short = "—" if r["short_dice"] is None else f"{r['short_dice']:.4f}"
        print(f"{name:<34} {short:>11} {ms(r['val']):>17} {ms(r['test']):>17}  {r['summary']}")
    print(f"gain of the search winner on test (paired by seed): vs plain UNet "
          f"{paired(win['test'], plain['test'])}, vs Attention U-Net "
          f"{paired(win['test'], att['test'])}, "
          + (f"vs the plain UNet of its size {paired(win['test'], ctrl['test'])}, " if ctrl
             else "")
          + f"vs random search {paired(win['test'], rwin['test'])}")
    rho = tpe["spearman_short_vs_full"]
    print("proxy quality: Spearman(short-trial Dice, full-budget val Dice) over "
          f"{len(tpe['candidates'])} candidates = " + ("n/a" if rho is None else f"{rho:+.2f}"))
    if args.json:
        args.json.write_text(json.dumps({"search": tpe, "random": rnd, "width_control": ctrl},
                                        indent=1))


if __name__ == "__main__":
    main()
