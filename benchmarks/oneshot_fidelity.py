"""Rank fidelity of the one-shot search: do inherited scores rank placements as stand-alone
training does? And what does the supernet cost against one stand-alone training?

    python benchmarks/oneshot_fidelity.py --data ../shared/data/inia19-macaque
    python benchmarks/oneshot_fidelity.py --data builtin3d
    python benchmarks/oneshot_fidelity.py --data ../shared/data/inia19-macaque --epochs 30 \
        --cost-only     # phases 1 and 2 against the heaviest placement's training only
    (any of them with --out results.json: the printed tables and the numbers, as JSON)

In one run, on one data set and one macro:
1. phase 1: the supernet of a space (every family the site allows, `--space` or the built-in
   one below) trained once (`nas_attn.searching.oneshot`), in a process of its own;
2. phase 2: `--trials` placements scored by Optuna (TPE) with inherited weights;
3. `--top` distinct placements from the top of phase 2 and `--random` placements drawn uniformly
   from the supernet's choices (also scored with inherited weights), each trained stand-alone
   from scratch with the full budget (what `finalize` retrains with) under `--seeds` seeds;
4. printed: Spearman and Kendall of inherited score vs the stand-alone mean validation Dice,
   the seed-to-seed Spearman of the stand-alone scores (the ceiling any proxy can reach; with
   4+ seeds also the mean of the even seeds against the mean of the odd ones, the ceiling of a
   mean over half the seeds: rerun with more `--seeds` on the same runs dir to add seeds),
   the Spearman of ranking by parameter count (the trivial rival), and the cost of phase 1 +
   phase 2 against one stand-alone training of the largest candidate (CPU seconds of each
   process, so that running jobs side by side does not skew it) and peak resident memory.

Validation Dice only: nothing here looks at a test split. Runs under `--runs-dir` (a fresh
temporary folder by default); with the same folder a run reuses the supernet, the study and
every stand-alone result already there.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPACE = """\
# oneshot_fidelity: one macro, every family the sites allow
macro: {{depth: [{depth}], base_width: [{width}]}}
encoder:
  choices: [none, se, eca, cbam, scse]
bottleneck:
  choices: [none, se, cbam, self, dual]
skip:
  choices: [none, gate, scse, cross]
decoder:
  choices: [none, se, eca, cbam, scse]
budget: {{epochs: {epochs}, samples_per_epoch: {spe}}}
data: {data}
search: {{strategy: oneshot, baselines: true, n_startup_trials: 20,
          oneshot: {{trials: {trials}{sn_epochs}{split}}}}}
"""


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one_thread():
    import torch

    torch.set_num_threads(1)


def phase_1(space: str, runs: str, data: str | None, study: str = "fidelity") -> dict:
    """Phase 1 in this (child) process: its CPU seconds and peak memory."""
    _one_thread()
    import optuna

    from nas_attn.searching.opening import SearchRequest, open_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0, c0 = time.perf_counter(), time.process_time()
    s = open_search(SearchRequest(space=space, runs_dir=Path(runs), study=study, data=data))
    s.prepare()  # phase 1: the supernets
    recs = s.study.user_attrs["oneshot"]["supernets"]
    rec = {**recs[0], "params": sum(r["params"] for r in recs), "supernets": len(recs)}
    return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "peak_mb": _peak_mb(),
            **rec}


def phase_2(space: str, runs: str, data: str | None, trials: int, extra: list[str],
            seed: int, study: str = "fidelity") -> dict:
    """Phase 2 in this (child) process, then the inherited scores of `extra` placements."""
    _one_thread()
    import optuna

    from nas_attn.architecture.description import UNetArch
    from nas_attn.searching.opening import SearchRequest, open_search
    from nas_attn.searching.run import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = open_search(SearchRequest(space=space, runs_dir=Path(runs), study=study, data=data,
                                  seed=seed))
    from nas_attn.searching.oneshot.budget import outcome

    # `trials` placements scored, as the search counts them: a placement TPE proposes again
    # does not count (it is answered from the earlier trial)
    done = len([t for t in s.study.trials if t.state.is_finished()
                and outcome(t) in ("scored", "failed")])
    # the baselines are enqueued (WAITING) when the study opens: trials of this phase 2 too
    waiting = optuna.trial.TrialState.WAITING
    before = len([t for t in s.study.trials if t.state != waiting])
    t0, c0 = time.perf_counter(), time.process_time()
    if done < trials:
        run_search(s, trials - done, None)
    spent = {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
             "trials": len(s.study.trials) - before}
    obj = s.objective
    cfg = obj.train_config(dict(obj.overrides))
    scores = {}
    for text in extra:
        arch = UNetArch.from_json(text)
        scores[text] = float(obj.score(arch, cfg)["dice"])
    rows = [{"arch": t.user_attrs["arch"], "inherited": t.values[0],
             "params": t.user_attrs.get("params")} for t in s.study.trials
            if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    return {"spent": spent, "extra": scores, "rows": rows, "peak_mb": _peak_mb(),
            "placements": s.study.user_attrs["oneshot"]["placements"]}


def standalone(space: str, runs: str, data: str | None, arch_json: str, seed: int) -> dict:
    """One stand-alone training from scratch with the full budget (finalize's recipe)."""
    _one_thread()
    from nas_attn.architecture.description import UNetArch
    from nas_attn.data import load_data
    from nas_attn.searching.space import full_budget
    from nas_attn.searching.oneshot.objective import training_defaults
    from nas_attn.searching.opening import data_config
    from nas_attn.searching.space_files import load_space
    from nas_attn.training import TrainConfig, train

    sp = load_space(space)
    cfg_data = data_config(sp, data)
    train_data, val_data = load_data(cfg_data)
    cfg = TrainConfig.make(**{**training_defaults(sp), **full_budget(sp), "seed": seed})
    arch = UNetArch.from_json(arch_json)
    t0, c0 = time.perf_counter(), time.process_time()
    res = train(arch, train_data, val_data, cfg_data, cfg, preview=False)
    return {"arch": arch_json, "seed": seed, "val": float(res.best["dice"]),
            "seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "peak_mb": _peak_mb(),
            "peak_gpu_mb": res.runtime.peak_memory_mb(),
            "params": sum(p.numel() for p in res.model.parameters())}


def _macro_and_choices(space_path: str, data: str | None):
    """The supernet's (first) macro and the choices of each of its sites."""
    from nas_attn.data import load_data
    from nas_attn.searching.oneshot.choices import (
        discrete_space,
        macro_arch,
        macro_plan,
        site_specs,
    )
    from nas_attn.searching.opening import data_config
    from nas_attn.searching.sampling import DataInfo
    from nas_attn.searching.space_files import load_space

    sp, _ = discrete_space(load_space(space_path))
    d, _ = load_data(data_config(sp, data))
    info = DataInfo(d.spatial_dims, d.in_channels, d.classes, d.aux_channels)
    plan = macro_plan(sp)
    macro = macro_arch(sp, info, plan.combos[0], plan.fixed)
    return macro, site_specs(sp, macro)


def random_placements(space_path: str, data: str | None, n: int, seed: int) -> list[str]:
    """`n` distinct placements drawn uniformly (per site, uniformly among its choices)."""
    macro, choices = _macro_and_choices(space_path, data)
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        arch = macro.with_sites(**{s.replace(".", "_"): rng.choice(choices[s])
                                   for s, _ in macro.sites()})
        if arch.to_json() not in out:
            out.append(arch.to_json())
    return out


def heaviest_placement(space_path: str, data: str | None) -> str:
    """The placement with the most parameters: at each site the choice that adds the most (what
    a module adds at a site does not depend on the other sites)."""
    from nas_attn.architecture.builder import build_unet

    macro, choices = _macro_and_choices(space_path, data)
    plain = macro.without_attention()

    def params(arch) -> int:
        return sum(p.numel() for p in build_unet(arch).parameters())

    pick = {s.replace(".", "_"): max(choices[s], key=lambda c, s=s: params(
        plain.with_sites(**{s.replace(".", "_"): c}))) for s, _ in macro.sites()}
    return macro.with_sites(**pick).to_json()


def _rank_stats(x, y):
    from nas_attn.searching.verdict import kendall, spearman

    return spearman(x, y), kendall(x, y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/inia19-macaque",
                    help="a data folder, or builtin / builtin3d")
    ap.add_argument("--space", help="a one-shot space (default: the built-in one above)")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=15,
                    help="the space's trial epochs; the full budget is max(30, 2x) of them")
    ap.add_argument("--samples-per-epoch", type=int, default=48)
    ap.add_argument("--supernet-epochs", type=int, default=None,
                    help="default: the space's oneshot.budget_factor (2) x the full budget")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--random", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs-dir", type=Path, default=None)
    ap.add_argument("--split", type=int, default=1,
                    help="few-shot variant: split the supernet into this many (2..4); with the "
                         "runs dir of a split-1 run it starts from that run's supernet (its "
                         "cost counted) and reuses its stand-alone trainings")
    ap.add_argument("--split-epochs", type=int, default=None,
                    help="fine-tuning epochs of each sub-supernet (default: a quarter of the "
                         "supernet's)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="variant: the supernet's warm-up share on the plain path (the space's "
                         "oneshot.warmup; default 0.5); with the runs dir of a default run it "
                         "reuses its stand-alone trainings")
    ap.add_argument("--loader-workers", type=int, default=None,
                    help="data-loader workers per training (the space's data.num_workers; "
                         "default: the tool's, one per core on CUDA: lower it with --jobs > 1)")
    ap.add_argument("--out", default=None, help="also write the results here (JSON with the "
                    "date, commit and machine; benchmarks/render.py builds the docs' tables)")
    ap.add_argument("--cost-only", action="store_true",
                    help="phases 1 and 2 and the stand-alone training of the space's heaviest "
                         "placement (the most parameters) only: the cost and memory ratios, no "
                         "fidelity")
    args = ap.parse_args(argv)
    tag = "" if args.split == 1 else f"_split{args.split}"
    if args.warmup is not None:
        tag += f"_warmup{args.warmup:g}"
    study = "fidelity" + tag

    runs = args.runs_dir or Path(tempfile.mkdtemp(prefix="oneshot_fidelity_"))
    runs.mkdir(parents=True, exist_ok=True)
    data = None if args.data in ("builtin", "builtin3d") else str(Path(args.data).resolve())
    space = args.space
    if space is None:
        src = {"source": args.data} if data is None else {}
        if args.data == "builtin3d":
            src.update(builtin_n=24, builtin_size=24)
        if args.loader_workers is not None:
            src["num_workers"] = args.loader_workers
        text = SPACE.format(
            depth=args.depth, width=args.width, epochs=args.epochs, spe=args.samples_per_epoch,
            data=json.dumps(src), trials=args.trials,
            sn_epochs="" if args.supernet_epochs is None else
            f", epochs: {args.supernet_epochs}", split="")
    else:
        text = Path(space).read_text()
    cache = runs / "fidelity.json"
    state = json.loads(cache.read_text()) if cache.exists() else {"standalone": []}
    # a runs dir is reused only by a run of the same space and data: its supernet, study and
    # stand-alone results belong to them (a run once took a 2-epoch test run's for its own)
    run_key = {"space": text, "data": data or args.data}
    if cache.exists() and "space" not in state and (runs / "space.yaml").exists():
        # written before runs recorded their space: the space.yaml it wrote says which
        state.setdefault("space", (runs / "space.yaml").read_text())
        state.setdefault("data", run_key["data"])
    if cache.exists() and {k: state.get(k) for k in run_key} != run_key:
        print(f"error: {runs} holds a run of another space or data set (its fidelity.json); "
              "give a fresh --runs-dir, or the same options as that run", file=sys.stderr)
        return 2
    state.update(run_key)
    if args.space is None:
        space = str(runs / "space.yaml")
        Path(space).write_text(text)
    if tag:  # the same space, split or warmed up otherwise
        text = Path(space).read_text()
        space = str(runs / f"space{tag}.yaml")
        extra = f", split: {args.split}" if args.split > 1 else ""
        extra += f", split_epochs: {args.split_epochs}" if args.split_epochs else ""
        extra += f", warmup: {args.warmup:g}" if args.warmup is not None else ""
        Path(space).write_text(text.replace(f"oneshot: {{trials: {args.trials}",
                                            f"oneshot: {{trials: {args.trials}{extra}", 1))

    lock = threading.RLock()  # results come in on the pool's thread, phases on this one

    def save(key=None, value=None):
        with lock:
            if key is not None:
                state[key] = value
            cache.write_text(json.dumps(state, indent=1))

    have = {(r["arch"], r["seed"]) for r in state["standalone"]}
    finished = [0]

    def collect(fut):
        """Each stand-alone result is saved as soon as it is in (a run cut short keeps it)."""
        def done(f):
            if f.exception() is not None:
                return  # raised again where the futures are awaited
            r = f.result()
            with lock:
                state["standalone"].append(r)
                save()
                finished[0] += 1
                print(f"  [{finished[0]}] stand-alone seed {r['seed']}: val {r['val']:.4f} "
                      f"({r['seconds']:.0f}s)", flush=True)
        fut.add_done_callback(done)
        return fut
    # --cost-only: the heaviest placement instead of the random ones, and no top placements
    heavy = heaviest_placement(space, data) if args.cost_only else None
    rand = [] if args.cost_only else random_placements(space, data, args.random, seed=1234)
    with ProcessPoolExecutor(args.jobs, max_tasks_per_child=1) as pool:
        # these train while the supernet does (they need nothing from it)
        shared_cpu = 0.0
        if args.split > 1 and args.warmup is None and "phase1" + tag not in state:
            shared_cpu = _reuse_shared_supernet(runs, study, state)
        p1 = pool.submit(phase_1, space, str(runs), data, study) \
            if "phase1" + tag not in state else None
        futs = [collect(pool.submit(standalone, space, str(runs), data, a, s))
                for a in ([heavy] if heavy else rand) for s in range(args.seeds)
                if (a, s) not in have]
        if p1 is not None:
            r1 = p1.result()
            r1["cpu_s"] += shared_cpu  # the shared supernet it started from
            save("phase1" + tag, r1)
            print(f"phase 1: {r1['seconds']:.0f}s, {r1['supernets']} supernet(s), "
                  f"{r1['params']:,} parameters", flush=True)
        old2 = state.get("phase2" + tag)
        if old2 is None or len(old2["rows"]) < args.trials:
            # a run from before the search counted new placements (300 trials scored 243-274)
            # is topped up to --trials placements in the same study, its costs added up
            p2 = pool.submit(phase_2, space, str(runs), data, args.trials, rand, 0,
                             study).result()
            if old2 is not None and p2["spent"]["trials"]:
                p2["spent"] = {k: old2["spent"][k] + p2["spent"][k]
                               for k in ("seconds", "cpu_s", "trials")}
                p2["peak_mb"] = max(old2["peak_mb"], p2["peak_mb"])
                p2["topped_up_from"] = len(old2["rows"])
            elif old2 is not None:
                p2 = old2  # nothing left to score (e.g. a failed trial)
            save("phase2" + tag, p2)
            print(f"phase 2: {len(p2['rows'])} placements scored in {p2['spent']['trials']} "
                  f"trials, {p2['spent']['seconds']:.0f}s", flush=True)
        ranked = sorted(state["phase2" + tag]["rows"], key=lambda r: -r["inherited"])
        top = [] if heavy else [r["arch"] for r in ranked if r["arch"] not in rand][:args.top]
        futs += [collect(pool.submit(standalone, space, str(runs), data, a, s))
                 for a in top for s in range(args.seeds) if (a, s) not in have]
        for f in futs:
            f.result()
    notes = [f"few-shot split into {args.split} supernets"] if args.split > 1 else []
    if args.warmup is not None:
        notes.append(f"variant: warm-up {args.warmup:g} of the supernet's steps on the plain path")
    for n in notes:
        print(f"\n{n}")
    tables, stats = report_heaviest(state, heavy, tag, notes) if heavy else \
        report(state, top, rand, args.seeds, tag)
    print(f"results: {cache}")
    if args.out:
        _write_out(args, argv, state, tag, stats, tables, notes)
    return 0


def report_heaviest(state: dict, heavy: str, tag: str, notes: list[str]) -> tuple[list, dict]:
    """--cost-only: the heaviest placement's stand-alone Dice (added to `notes`) and the cost."""
    from nas_attn.architecture.description import UNetArch

    big = [r for r in state["standalone"] if r["arch"] == heavy]
    notes.append(f"heaviest placement: {UNetArch.from_json(heavy).summary()}")
    print(f"\n{notes[-1]}")
    vals = ", ".join(f"{r['val']:.4f} (seed {r['seed']})" for r in big)
    notes.append(f"stand-alone val Dice {vals}")
    print(f"  {notes[-1]}")
    return [_report_cost(state["phase1" + tag], state["phase2" + tag], big)], {}


def _report_cost(p1: dict, p2: dict, big: list[dict]) -> dict:
    """Phase 1 + phase 2 against one stand-alone training of the largest candidate (the mean
    over its seeds), CPU seconds of each process; peak resident memory likewise. Printed; the
    same figures as a table."""
    from results_file import table

    big_cpu = statistics.fmean(r["cpu_s"] for r in big)
    cost = (p1["cpu_s"] + p2["spent"]["cpu_s"]) / big_cpu
    # TPE proposes some placements again: a repeat is recorded, not scored again (before the
    # search counted placements, not trials, a run of 300 trials scored 243-274 of them)
    distinct = len(p2["rows"])
    per = p2["spent"]["cpu_s"] / max(1, distinct)
    up = f" in two runs, topped up from {p2['topped_up_from']}" if "topped_up_from" in p2 else ""
    scored = (f"{distinct} distinct placements scored in {p2['spent']['trials']} trials{up}, "
              f"{per:.2f} s each")
    peak, wall = max(r["peak_mb"] for r in big), statistics.fmean(r["seconds"] for r in big)
    cpu = ["CPU s", f"{p1['cpu_s']:.0f}", f"{p2['spent']['cpu_s']:.0f}", f"{big_cpu:.0f}",
           f"{cost:.2f} x"]
    print(f"cost: phase 1 {cpu[1]} CPU s + phase 2 {cpu[2]} CPU s ({scored}) = {cpu[4]} one "
          f"stand-alone training of the largest candidate ({cpu[3]} CPU s, "
          f"{big[0]['params']:,} parameters)")
    mem = ["peak resident MB", f"{p1['peak_mb']:.0f}", f"{p2['peak_mb']:.0f}", f"{peak:.0f}",
           f"{max(p1['peak_mb'], p2['peak_mb']) / peak:.2f}"]
    print(f"peak resident memory: phase 1 {mem[1]} MB, phase 2 {mem[2]} MB, largest "
          f"candidate's training {mem[3]} MB (ratio {mem[4]})")
    rows = [cpu, mem]
    gpu = [r.get("peak_gpu_mb") for r in big]
    if p1.get("peak_gpu_mb") and all(gpu):  # on CUDA: the GPU's peak, phase 1 against it
        rows.append(["peak GPU MiB", f"{p1['peak_gpu_mb']:.0f}", "-", f"{max(gpu):.0f}",
                     f"{p1['peak_gpu_mb'] / max(gpu):.2f}"])
        print(f"peak GPU memory: phase 1 {rows[-1][1]} MiB, largest candidate's training "
              f"{rows[-1][3]} MiB (ratio {rows[-1][4]})")
    rows.append(["wall s", f"{p1['seconds']:.0f}", f"{p2['spent']['seconds']:.0f}",
                 f"{wall:.0f}", f"{(p1['seconds'] + p2['spent']['seconds']) / wall:.2f} x"])
    print(f"wall time: phase 1 {rows[-1][1]} s + phase 2 {rows[-1][2]} s = {rows[-1][4]} the "
          f"largest candidate's training ({rows[-1][3]} s; with --jobs > 1 the processes "
          "slowed each other)")
    return table("Cost against one stand-alone training of the largest candidate",
                 ["", "phase 1", "phase 2", "largest candidate's training", "ratio"], rows,
                 [f"phase 2: {scored}; the largest candidate: {big[0]['params']:,} parameters",
                  "wall time: with --jobs > 1 the processes slowed each other"])


def _reuse_shared_supernet(runs: Path, study: str, state: dict) -> float:
    """A split run starts from the split-1 run's supernet when there is one (the same macro,
    choices and budget): copied into the split study's folder; its CPU seconds are returned, to
    be counted in the split's phase 1."""
    import shutil

    if "phase1" not in state:
        return 0.0
    src = Path(state["phase1"]["file"])
    if not src.exists():
        return 0.0
    dst = runs / study / "supernet" / src.parent.name / src.name
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return float(state["phase1"]["cpu_s"])


def report(state: dict, top: list[str], rand: list[str], seeds: int, tag: str = ""
           ) -> tuple[list[dict], dict]:
    """Print the rank statistics and the cost; the same as tables, and the numbers."""
    inherited = {r["arch"]: r["inherited"] for r in state["phase2" + tag]["rows"]}
    inherited.update(state["phase2" + tag]["extra"])
    by_arch: dict[str, dict] = {}
    for r in state["standalone"]:
        by_arch.setdefault(r["arch"], {})[r["seed"]] = r
    archs = [a for a in top + rand if len(by_arch.get(a, {})) == seeds]
    mean = {a: statistics.fmean(by_arch[a][s]["val"] for s in range(seeds)) for a in archs}
    inh = [inherited[a] for a in archs]
    alone = [mean[a] for a in archs]
    params = [by_arch[a][0]["params"] for a in archs]
    rho, tau = _rank_stats(inh, alone)
    ceiling = _rank_stats([by_arch[a][0]["val"] for a in archs],
                          [by_arch[a][1]["val"] for a in archs])[0] if seeds > 1 else None
    half = None  # with 4+ seeds: the mean of the even seeds against the mean of the odd ones
    if seeds >= 4:
        half = _rank_stats(
            [statistics.fmean(by_arch[a][s]["val"] for s in range(0, seeds, 2)) for a in archs],
            [statistics.fmean(by_arch[a][s]["val"] for s in range(1, seeds, 2)) for a in archs])[0]
    prho, ptau = _rank_stats(params, alone)
    p1, p2 = state["phase1" + tag], state["phase2" + tag]
    largest = max(archs, key=lambda a: by_arch[a][0]["params"])
    big = [by_arch[largest][s] for s in range(seeds)]
    stats = {"spearman": rho, "kendall": tau, "seed_ceiling": ceiling, "half_ceiling": half,
             "params_spearman": prho, "params_kendall": ptau,
             "placements": [{"arch": a, "from": "top" if a in top else "random",
                             "inherited": inherited[a], "standalone": by_arch[a]}
                            for a in archs]}
    ranks = _print_ranks(stats, archs, top, rand, mean, seeds, p2)
    return [ranks, _report_cost(p1, p2, big)], stats


def _print_ranks(st: dict, archs, top, rand, mean: dict, seeds: int, p2: dict) -> dict:
    from results_file import table

    from nas_attn.architecture.description import UNetArch

    head = (f"{len(archs)} placements ({len([a for a in archs if a in top])} from the top of "
            f"{len(p2['rows'])} placements scored in phase 2, "
            f"{len([a for a in archs if a in rand])} random) of "
            f"{p2['placements']:.3g}, {seeds} seeds each")
    print(f"\n{head}")
    f = lambda v: "n/a" if v is None else f"{v:+.2f}"  # noqa: E731
    rows = [["inherited vs stand-alone", f(st["spearman"]), f(st["kendall"])],
            ["seed 0 vs seed 1 (ceiling)", f(st["seed_ceiling"]), "-"]]
    print(f"inherited vs stand-alone:   Spearman {rows[0][1]}  Kendall {rows[0][2]}")
    print(f"seed 0 vs seed 1 (ceiling): Spearman {rows[1][1]}")
    if st["half_ceiling"] is not None:
        rows.append([f"mean of seeds {', '.join(map(str, range(0, seeds, 2)))} vs mean of "
                     f"seeds {', '.join(map(str, range(1, seeds, 2)))}", f(st["half_ceiling"]),
                     "-"])
        print(f"{rows[-1][0]}: Spearman {rows[-1][1]}")
    rows.append(["parameters vs stand-alone", f(st["params_spearman"]), f(st["params_kendall"])])
    print(f"parameters vs stand-alone:  Spearman {rows[-1][1]}  Kendall {rows[-1][2]}")
    alone = [mean[a] for a in archs]
    tm = statistics.fmean(mean[a] for a in archs if a in top) if any(a in top for a in archs) \
        else float("nan")
    rm = statistics.fmean(mean[a] for a in archs if a in rand)
    notes = [head, f"stand-alone val Dice: top-{len(top)} by inherited {tm:.4f}, random "
             f"{rm:.4f}, best {max(alone):.4f}, worst {min(alone):.4f}"]
    print(notes[-1])
    plain = [a for a in archs if not UNetArch.from_json(a).attention_names()]
    if plain:
        notes.append(f"plain UNet among them: {mean[plain[0]]:.4f}")
        print(notes[-1])
    return table("Rank fidelity: inherited scores against stand-alone training",
                 ["ranking", "Spearman", "Kendall"], rows, notes)


def _write_out(args, argv, state: dict, tag: str, stats: dict, tables: list, notes: list
               ) -> None:
    """--out: phase 1, phase 2 (its placements counted, not listed), the stand-alone results
    the tables were built from, the statistics, and the tables as printed."""
    import results_file

    tables[0]["notes"] = notes + tables[0]["notes"]
    p2 = state["phase2" + tag]
    results = {"phase1": state["phase1" + tag], "phase2": {
        **{k: v for k, v in p2.items() if k not in ("rows", "extra")}, "scored": len(p2["rows"])},
        **(stats or {"standalone": state["standalone"]})}  # --cost-only: the heaviest's runs
    path = results_file.write(args.out, "oneshot_fidelity", vars(args), results, tables,
                              argv=argv)
    print(f"written: {path}")


if __name__ == "__main__":
    sys.exit(main())
