"""How often does finalize's decision code call a gain that is not there, and how often does it
find one that is? It measures `nas_attn.stats` itself (compare, the race), not a copy.

    python benchmarks/decision_quality.py simulate --noise RUNS/noise/SIG.json [--noise ...] \
        [--reps 1000] [--jobs 2] [--out results.json]
    python benchmarks/decision_quality.py real --runs-dir R [--finalizes 3] [--null-reps 10] \
        [--out results.json]

`simulate` (`--case-factor K`: validation sets K times the record's, so that the seed noise
dominates): per-case count matrices drawn from a model fitted to a measured noise record (a
`nas-attn noise` run of the plain UNet under several seeds on real data): every case's
reference size and typical recall and false positives come from the record; a seed effect
shared by all cases of a run, a seed-by-case effect and a per-class residual, on the logit of
the recall, are fitted so that the simulated seed-to-seed SD of the pooled Dice and the mean
per-case SD across seeds match the record's. Each repetition draws a validation set (the
record's cases resampled) and new seeds. A true effect of 0, +0.005, +0.01 and +0.02 Dice is
injected into arm A (a logit shift solved to give that gain in expected pooled Dice). Per effect
and `--reps` repetitions:

- `compare` with 3 seeds per arm (finalize's confirmation) and with 5: the rate of "helps"
  verdicts (at effect 0 the false-gain rate, which must stay at or below 5 %; it is 2.5 % by
  design, the interval being two-sided) and the power;
- two rules it replaces, on the same draws: finalize's old rule (the seed-paired gain above 2
  standard deviations of the paired differences) and a two-level percentile bootstrap (seeds
  resampled, then cases), to show why neither is used;
- the whole finalize (`nas_attn.stats.race.Race` with its defaults on 5 entrants: the truly
  best attention candidate, two other attention candidates and the Attention U-Net with no
  gain, and the plain UNet; then the champion against the plain UNet on 3 fresh seeds): how
  often the truly best is kept to the end and chosen as champion, the full trainings used, and
  the rate of "helps" verdicts (at effect 0: the false-gain rate of finalize as a whole).
  Beside it, finalize's old procedure on the same entrants (3 seeds each, the winner by mean
  validation, the 2-SD rule on the same seeds): its false-gain rate shows the winner's curse.

`real`: real trainings on the built-in cue set, where attention truly helps (the cue sits an
image away): a study holding the plain UNet and the built-in search winner on the search-quality page (docs/benchmarks/search-quality.md) (width 16,
self-attention at the third encoder level, position attention at the bottleneck, ...), then
`--finalizes` finalizes with disjoint seeds (race and confirmation); each verdict must be
"helps". And `--null-reps` comparisons with no true difference: the plain UNet trained under 3
seeds against the same plain UNet under 3 other seeds (`compare`, the code finalize decides
with), at a small budget; none may be called "helps".

Results are printed and written (`--out`) with the date, the commit and the machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_attn.stats.compare import HELPS, compare  # noqa: E402
from nas_attn.stats.counts import CaseCounts, pooled_from_sums  # noqa: E402
from nas_attn.stats.noise import NoiseRecord  # noqa: E402
from nas_attn.stats.race import Entrant, Race  # noqa: E402

EFFECTS = (0.0, 0.005, 0.01, 0.02)


# ----- the generative model ----------------------------------------------------------------------
def _logit(p):
    p = np.clip(p, 0.02, 0.98)
    return np.log(p / (1 - p))


@dataclass
class Model:
    """Per case and class of a noise record: reference size, mean logit recall, mean false
    positives; and the fitted spreads (seed, seed x case, residual) on the logit scale."""

    ref: np.ndarray      # (cases, K)
    mu: np.ndarray       # (cases, K) mean logit recall
    fp: np.ndarray       # (cases, K) mean false positives
    sd_seed: float = 0.0
    sd_case: float = 0.0
    sd_res: float = 0.0
    name: str = ""

    @classmethod
    def from_record(cls, rec: NoiseRecord, name: str) -> "Model":
        tp = np.stack([r.tp for r in rec.runs]).astype(float)
        fn = np.stack([r.fn for r in rec.runs]).astype(float)
        fp = np.stack([r.fp for r in rec.runs]).astype(float)
        ref = (tp + fn)[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(ref > 0, tp.mean(0) / np.maximum(ref, 1), 0.5)
        return cls(ref, _logit(recall), fp.mean(0), name=name)

    def runs(self, rng, seeds: int, cases: np.ndarray, shift: float = 0.0) -> list[CaseCounts]:
        """`seeds` runs on the validation set `cases` (indices into the record's cases)."""
        ref, mu, fp0 = self.ref[cases], self.mu[cases] + shift, self.fp[cases]
        q0 = 1 / (1 + np.exp(-self.mu[cases]))
        names = tuple(str(i) for i in range(len(cases)))
        out = []
        for _ in range(seeds):
            z = (mu + rng.normal(0, self.sd_seed) + rng.normal(0, self.sd_case, (len(cases), 1))
                 + rng.normal(0, self.sd_res, mu.shape))
            q = 1 / (1 + np.exp(-z))
            tp = np.round(ref * q).astype(np.int64)
            # false positives move with the misses: a better run also has fewer of them
            fp = np.round(fp0 * (1 - q + 1e-3) / (1 - q0 + 1e-3)).astype(np.int64)
            out.append(CaseCounts(names, tp, fp, ref - tp))
        return out


def _targets(rec: NoiseRecord) -> tuple[float, float]:
    per_case = np.stack([r.per_case() for r in rec.runs])
    return rec.run_sd, float(np.nanmean(np.nanstd(per_case, 0, ddof=1)))


def _simulated(model: Model, rng, seeds: int = 200) -> tuple[float, float]:
    cases = np.arange(len(model.ref))
    runs = model.runs(rng, seeds, cases)
    per_case = np.stack([r.per_case() for r in runs])
    return (float(np.std([r.pooled() for r in runs], ddof=1)),
            float(np.nanmean(np.nanstd(per_case, 0, ddof=1))))


def fit(model: Model, rec: NoiseRecord) -> Model:
    """Grid search of the seed spread and the within-run spread (split evenly between the
    seed x case and the residual term) matching the record's two spreads."""
    want = np.array(_targets(rec))
    best = (math.inf, 0.0, 0.0)
    for sd_seed in np.linspace(0, 1.5, 16):
        for sd_within in np.linspace(0, 2.0, 21):
            model.sd_seed, model.sd_case = sd_seed, sd_within / math.sqrt(2)
            model.sd_res = model.sd_case
            got = np.array(_simulated(model, np.random.default_rng(0), 60))
            err = float((((got - want) / np.maximum(want, 1e-4)) ** 2).sum())
            if err < best[0]:
                best = (err, sd_seed, sd_within)
    model.sd_seed, model.sd_case = best[1], best[2] / math.sqrt(2)
    model.sd_res = model.sd_case
    return model


def shift_for(model: Model, effect: float) -> float:
    """The logit shift that raises the expected pooled Dice by `effect` (bisection, common
    random numbers)."""
    if effect == 0:
        return 0.0
    cases = np.arange(len(model.ref))

    def mean(shift):
        return float(np.mean([r.pooled() for r in model.runs(np.random.default_rng(1), 300,
                                                              cases, shift)]))

    base, lo, hi = mean(0.0), 0.0, 2.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean(mid) - base < effect else (lo, mid)
    return (lo + hi) / 2


# ----- the rules ----------------------------------------------------------------------------------
def old_rule(a: list[CaseCounts], b: list[CaseCounts]) -> bool:
    """finalize before the race: gain above 0 and above 2 SD of the seed-paired differences."""
    d = [x.pooled() - y.pooled() for x, y in zip(a, b)]
    return float(np.mean(d)) > 0 and float(np.mean(d)) > 2 * float(np.std(d, ddof=1))


def two_level_bootstrap(a, b, rng, resamples: int = 2000) -> bool:
    """Seeds resampled (jointly for both arms), then cases; the 95 % percentile interval of the
    difference of mean pooled Dice above zero."""
    s, n = len(a), a[0].cases
    si = rng.integers(0, s, (resamples, s))
    w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)]
                 ).astype(float)

    def mean_pooled(runs):
        tp, fp, fn = (np.stack([getattr(r, k) for r in runs]).astype(float)
                      for k in ("tp", "fp", "fn"))
        sums = [np.einsum("rn,rsnk->rsk", w, x[si]) for x in (tp, fp, fn)]
        return pooled_from_sums(*sums).mean(1)

    diff = mean_pooled(a) - mean_pooled(b)
    return float(np.percentile(diff, 2.5)) > 0


# ----- one repetition ----------------------------------------------------------------------------
ENTRANTS = [Entrant("best", "", True, "plain"), Entrant("att2", "", True, "plain"),
            Entrant("att3", "", True, "plain"), Entrant("gate", "attention_unet", True, "plain"),
            Entrant("plain", "plain_unet", False, None)]


def one_rep(model: Model, shift: float, rep: int, case_factor: int = 1) -> dict:
    rng = np.random.default_rng([rep, int(shift * 1e6)])
    n = len(model.ref)
    cases = rng.integers(0, n, n * case_factor)  # this repetition's validation set
    out = {}
    for seeds in (3, 5):
        a = model.runs(rng, seeds, cases, shift)
        b = model.runs(rng, seeds, cases)
        c = compare(a, b)
        out[f"compare{seeds}"] = c.verdict == HELPS
        out[f"mde{seeds}"] = c.mde
        out[f"old{seeds}"] = old_rule(a, b)
        out[f"boot{seeds}"] = two_level_bootstrap(a, b, rng)
    out.update(race_rep(model, shift, rng, cases))
    return out


def race_rep(model: Model, shift: float, rng, cases) -> dict:
    gains = {"best": shift, "att2": 0.0, "att3": 0.0, "gate": 0.0, "plain": 0.0}
    race = Race(ENTRANTS)
    plan = race.replay()
    while plan.pending:
        for key, seed in plan.pending:
            race.add(key, seed, model.runs(rng, 1, cases, gains[key])[0])
        plan = race.replay()
    champ = race.champion(plan)
    a = model.runs(rng, 3, cases, gains[champ])
    b = model.runs(rng, 3, cases)
    verdict = compare(a, b).verdict
    # the old procedure: every entrant under 3 seeds, the winner by mean, 2 SD on those seeds
    old = {k: [race.runs[k][s] if s in race.runs[k] else model.runs(rng, 1, cases, gains[k])[0]
               for s in range(3)] for k in gains}
    winner = max(old, key=lambda k: np.mean([r.pooled() for r in old[k]]))
    old_gain = winner != "plain" and old_rule(old[winner], old["plain"])
    return {"race_kept_best": "best" in plan.survivors, "race_champion_best": champ == "best",
            "race_helps": verdict == HELPS, "race_trainings": race.trainings() + 6,
            "old_finalize_gain": bool(old_gain), "old_winner_best": winner == "best"}


def _job(args):
    model, shift, reps, case_factor = args
    return [one_rep(model, shift, r, case_factor) for r in reps]


def simulate(args) -> dict:
    results = {}
    for path in args.noise:
        rec = NoiseRecord.from_dict(json.loads(Path(path).read_text()))
        name = rec.data or Path(path).stem
        model = fit(Model.from_record(rec, name), rec)
        got = _simulated(model, np.random.default_rng(5))
        print(f"{name}: {len(rec.runs)} seeds of {rec.arch}, {rec.runs[0].cases} cases; "
              f"measured seed SD {rec.run_sd:.4f}, per-case SD {_targets(rec)[1]:.4f}; fitted "
              f"logit spreads seed {model.sd_seed:.2f}, seed x case {model.sd_case:.2f}, "
              f"residual {model.sd_res:.2f} -> simulated {got[0]:.4f}, {got[1]:.4f}",
              flush=True)
        if args.case_factor > 1:
            name += f", {args.case_factor} x the cases (seed noise dominates)"
        per_effect = {}
        for effect in args.effects:
            shift = shift_for(model, effect)
            t0 = time.time()
            chunks = [(model, shift, list(range(i, args.reps, args.jobs)), args.case_factor)
                      for i in range(args.jobs)]
            with ProcessPoolExecutor(args.jobs) as pool:
                rows = [r for part in pool.map(_job, chunks) for r in part]
            summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            per_effect[f"{effect:+.3f}"] = summary
            print_effect(effect, summary, len(rows), time.time() - t0)
        results[name] = {"record": str(path), "fit": {"sd_seed": model.sd_seed,
                                                      "sd_case": model.sd_case,
                                                      "sd_res": model.sd_res},
                         "measured": list(_targets(rec)), "simulated": list(got),
                         "effects": per_effect}
    return results


def print_effect(effect: float, s: dict, reps: int, seconds: float) -> None:
    what = "false-gain rate" if effect == 0 else "power"
    print(f"  effect {effect:+.3f} ({reps} reps, {seconds:.0f} s): 'helps' ({what}) compare "
          f"3 seeds {s['compare3']:.3f}, 5 seeds {s['compare5']:.3f} (mean smallest detectable "
          f"{s['mde3']:.4f} / {s['mde5']:.4f}); old 2-SD rule {s['old3']:.3f} / {s['old5']:.3f}; "
          f"two-level bootstrap {s['boot3']:.3f} / {s['boot5']:.3f}", flush=True)
    print(f"    finalize (race + 3 confirmation seeds): 'helps' {s['race_helps']:.3f}, truly best "
          f"kept {s['race_kept_best']:.3f}, chosen {s['race_champion_best']:.3f}, "
          f"{s['race_trainings']:.1f} full trainings; old finalize (3 seeds, 2-SD on the "
          f"choosing seeds): 'gain' {s['old_finalize_gain']:.3f}, truly best chosen "
          f"{s['old_winner_best']:.3f}", flush=True)


# ----- real trainings ----------------------------------------------------------------------------
CUE_SPACE = """
macro: {depth: [3], base_width: [16], upsample: [interp]}
encoder: {choices: [none], levels: {0: [none, cbam], 1: [none, se], 2: [none, self]}}
bottleneck: {choices: [none, position]}
skip: {choices: [none], levels: {0: [none, scse], 1: [none, cross]}}
decoder: {choices: [none], levels: {0: [none, eca], 2: [none, eca]}}
options: {cbam: {reduction: [4], kernel_size: [3]}, se: {reduction: [8]}, self: {heads: [2]}}
training: {lr: [0.006]}
budget: {epochs: %d, samples_per_epoch: 128}
data: {source: builtin, builtin_n: 64, builtin_size: 64, augment: {flips: true, rot90: true}}
search: {trials: 2, n_startup_trials: 2, sampler: random, pruner: none, baselines: true}
"""
WINNER = {"encoder.0.attn": "cbam", "encoder.1.attn": "se", "encoder.2.attn": "self",
          "bottleneck.attn": "position", "skip.0.attn": "scse", "skip.1.attn": "cross",
          "decoder.0.attn": "eca", "decoder.2.attn": "eca"}
"""The built-in search winner of docs/benchmarks/search-quality.md (it solved the cue task on 3 of 3 seeds at full budget):
enqueued as the study's one searched trial beside the plain UNet of its size."""


def _recorded(args) -> dict:
    """What an earlier run of `real` with the same --out already measured (a killed run resumes;
    the finalizes and the null comparisons can run as two processes; a finalize resumes from
    its own folder instead)."""
    if args.out and Path(args.out).exists():
        return json.loads(Path(args.out).read_text()).get("results", {})
    return {}


def _record(args, key: str, items: list[dict]) -> None:
    """Write one part's items to --out at once (under a lock: the other part may write too)."""
    if not args.out:
        return
    import fcntl

    out = Path(args.out)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        d = json.loads(out.read_text()) if out.exists() else {
            "benchmark": "decision_quality", "part": "real", "args": {}, "results": {}}
        if "commit" not in d:  # the code the run started with (a resumed run keeps it)
            d.update(provenance())
        d["updated"] = time.strftime("%Y-%m-%d %H:%M")
        d.setdefault("notes", []).extend(n for n in args.note if n not in d["notes"])
        r = d["results"]
        r[key] = items
        r["cue_helps"] = sum(v["verdict"] == HELPS for v in r.get("cue_finalizes", []))
        r["null_helps"] = sum(v["verdict"] == HELPS for v in r.get("null", []))
        d["args"].update({"finalizes": len(r.get("cue_finalizes", [])),
                          "null_reps": len(r.get("null", [])), "epochs": args.epochs,
                          "null_epochs": args.null_epochs})
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(d, indent=1))
        tmp.replace(out)


def real(args) -> dict:
    from nas_attn.searching.finalize import finalize
    from nas_attn.searching.opening import SearchRequest, open_search
    from nas_attn.searching.run import run_search

    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    space = runs / "cue_space.yaml"
    space.write_text(CUE_SPACE % args.epochs)
    session = open_search(SearchRequest(space=str(space), study="cue", runs_dir=runs,
                                        trials=1))
    if len(session.study.trials) < 2:
        session.study.enqueue_trial(WINNER)
        run_search(session, 2, None)
    verdicts = []
    for i in range(args.finalizes):  # a finished finalize resumes at once from its folder
        res = finalize(session.study, top=1, seeds=3, confirm_seeds=3,
                       epochs=2 * args.epochs, runs_dir=runs / f"finalize{i}",
                       seed_offset=1000 * i)
        g = res["attention_gain"]
        rows = res["candidates"] + (res.get("confirmation") or {}).get("rows", [])
        verdicts.append({"verdict": g["verdict"], "text": g.get("val_text"),
                         "test": g.get("test_text"),
                         "seconds": round(sum(sum(r.get("seconds") or []) for r in rows)),
                         "trainings": sum(len(r.get("seconds") or []) for r in rows)})
        _record(args, "cue_finalizes", verdicts)
        print(f"cue set, finalize {i + 1}/{args.finalizes} (seeds from {1000 * i}): "
              f"{g.get('val_text')}; test {g.get('test_text')}", flush=True)
    null = null_reps(args, session, list(_recorded(args).get("null", []))[:args.null_reps])
    return {"cue_finalizes": verdicts, "null": null,
            "cue_helps": sum(v["verdict"] == HELPS for v in verdicts),
            "null_helps": sum(v["verdict"] == HELPS for v in null)}


def null_reps(args, session, out: list[dict]) -> list[dict]:
    """The plain UNet under 3 seeds against itself under 3 other seeds."""
    from nas_attn.searching.finalize import retrain_recipe
    from nas_attn.training import TrainConfig, train

    base = next(t for t in session.study.trials if t.user_attrs.get("baseline") == "plain_unet")
    recipe = retrain_recipe(session.study, base)
    obj = session.objective
    for rep in range(len(out), args.null_reps):
        t0 = time.time()
        arms = []
        for arm in range(2):
            runs = []
            for s in range(3):
                cfg = TrainConfig.make(**{**recipe.train_options, "epochs": args.null_epochs,
                                          "seed": 10_000 + 100 * rep + 10 * arm + s})
                res = train(recipe.arch, obj.train_data, obj.val_data, obj.data_cfg, cfg,
                            preview=False)
                runs.append(CaseCounts.from_dict(res.best["cases"]))
            arms.append(runs)
        c = compare(arms[0], arms[1])
        out.append({"verdict": c.verdict, "text": c.text(), "seconds": round(time.time() - t0)})
        _record(args, "null", out)
        print(f"no true difference, repetition {rep + 1}/{args.null_reps}: {c.text()}",
              flush=True)
    return out


def provenance() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
            "python": platform.python_version()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    sim = sub.add_parser("simulate")
    sim.add_argument("--noise", nargs="+", required=True, help="noise records (runs/noise/*.json)")
    sim.add_argument("--reps", type=int, default=1000)
    sim.add_argument("--jobs", type=int, default=2)
    sim.add_argument("--effects", type=float, nargs="+", default=list(EFFECTS))
    sim.add_argument("--case-factor", type=int, default=1, help="validation sets this many "
                     "times larger than the record's (the case noise shrinks, the seed noise "
                     "stays: the regime where seed-level degrees of freedom matter)")
    sim.add_argument("--out", default=None)
    rl = sub.add_parser("real")
    rl.add_argument("--runs-dir", required=True)
    rl.add_argument("--finalizes", type=int, default=3)
    rl.add_argument("--null-reps", type=int, default=10)
    rl.add_argument("--epochs", type=int, default=15, help="the search trials' epochs; "
                    "finalize trains twice as long")
    rl.add_argument("--null-epochs", type=int, default=8, help="the epochs of each training "
                    "of the comparisons with no true difference (a small budget)")
    rl.add_argument("--note", action="append", default=[], help="a line for the results' "
                    "notes (how the run was made)")
    rl.add_argument("--out", default=None, help="written after every finalize and every "
                    "repetition; a run with the same --out resumes from what it holds (so "
                    "`--finalizes 0` and `--null-reps 0` may run as two processes)")
    args = ap.parse_args()
    if args.part == "real":
        results = real(args)
        print(f"written: {args.out}" if args.out else "")
        return
    results = simulate(args)
    results = {"benchmark": "decision_quality", "part": args.part, **provenance(),
               "args": {k: v for k, v in vars(args).items() if k != "part"}, "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
