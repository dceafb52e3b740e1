"""Where does weight sharing break the one-shot supernet? The plain path's inherited score when
only some sites hold their choices.

    python benchmarks/oneshot_sharing.py --data ../shared/data/inia19-macaque
    python benchmarks/oneshot_sharing.py --data builtin --arms plain all encoder decoder

    python benchmarks/oneshot_sharing.py --arms plain all --budget-factor 1 --warmup 0 \
        [--out results.json]

Each arm trains one supernet of the space's first macro (phase 1's recipe, budget and warm-up:
`nas_attn.searching.oneshot.phase1.supernet_config` and `start_sampling`, then fair
single-path sampling; `--budget-factor` and `--warmup` change the last two) in a process of
its own, with the space's choices at one group of sites and `none` at every other site; the
`plain` arm holds `none` everywhere, so its supernet is a plain UNet trained with the same
recipe (the reference), and `all` holds every choice (what a one-shot search trains). Each
supernet is then scored as phase 2 scores a placement (BatchNorm statistics recalibrated on
the same training batches, validation Dice pooled per class): its plain path, and `--random`
placements drawn uniformly from its choices. Printed per arm: the plain path's inherited Dice
against the `plain` arm's, the random placements' mean and range, and the CPU seconds.

A supernet whose plain path scores far below the plain arm's has a trunk that the sharing
damaged; its inherited scores then rank a damaged network. Validation data only.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GROUPS = {
    "plain": (),
    "all": ("encoder", "bottleneck", "skip", "decoder"),
    "encoder": ("encoder",),
    "bottleneck": ("bottleneck",),
    "skip": ("skip",),
    "decoder": ("decoder",),
    "decoder-1+": ("decoder-1+",),  # the decoder's sites but its last (full-resolution) one
    "decoder-0": ("decoder-0",),    # the last decoder site only (its output feeds the head)
}


def _in_group(site: str, groups: tuple[str, ...]) -> bool:
    kind = site.split(".")[0]
    if kind in groups:
        return True
    if kind == "decoder":
        return ("decoder-0" in groups and site == "decoder.0") or (
            "decoder-1+" in groups and site != "decoder.0")
    return False


def run_arm(arm: str, space: str, data: str | None, runs: str, n_random: int,
            budget_factor: float | None = None, warmup: float | None = None) -> dict:
    import torch

    torch.set_num_threads(1)
    import optuna

    from nas_attn.architecture.description import AttnSpec
    from nas_attn.device import Runtime
    from nas_attn.searching.oneshot.phase1 import start_sampling, supernet_config
    from nas_attn.searching.oneshot.supernet import SuperNet
    from nas_attn.searching.opening import SearchRequest, open_search
    from nas_attn.training import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = "sharing_" + arm.replace("+", "plus")  # study names allow no '+'
    s = open_search(SearchRequest(space=space, data=data, study=study, runs_dir=Path(runs),
                                  strategy="oneshot"))
    obj = s.objective
    one = obj.space.search.oneshot
    obj.space.search.oneshot = one.model_copy(update={
        k: v for k, v in (("budget_factor", budget_factor), ("warmup", warmup))
        if v is not None})
    unit = obj.units()[0]
    macro, full = unit.macro, unit.choices
    none = AttnSpec()
    lacking = [site for site, specs in full.items() if none not in specs]
    if lacking:
        raise SystemExit(f"{space}: site(s) {', '.join(lacking)} do not allow none; this "
                         "benchmark needs a plain path")
    groups = GROUPS[arm]
    choices = {site: (list(specs) if _in_group(site, groups) else [none])
               for site, specs in full.items()}
    cfg = supernet_config(obj, obj.overrides)
    torch.manual_seed(cfg.seed)  # the initial weights too, as phase 1 seeds them
    net = SuperNet(macro, choices, seed=cfg.seed)
    start_sampling(net, obj, cfg)  # as phase 1: the warm-up on the plain path, then fair
    c0 = time.process_time()
    res = train(macro, obj.train_data, obj.val_data, obj.data_cfg, cfg, preview=False,
                model=net)
    cpu = time.process_time() - c0
    warm = net.warmup_steps
    net = res.model
    net.sampling = False
    runtime = Runtime.create(obj.device, amp=cfg.amp, spatial_dims=macro.spatial_dims)

    def score(arch) -> float:  # as phase 2 scores a placement
        return float(obj.score_path(net, runtime, arch, cfg)["dice"])

    rng = random.Random(0)
    placements = []
    varied = [site for site, specs in choices.items() if len(specs) > 1]
    for _ in range(n_random if varied else 0):
        placements.append(macro.with_sites(**{site.replace(".", "_"): rng.choice(choices[site])
                                              for site in varied}))
    return {"arm": arm, "sites": varied, "steps": res.steps, "warmup_steps": warm,
            "cpu_s": cpu,
            "placements": int(math.prod(len(c) for c in choices.values())),
            "plain": score(macro), "random": [score(a) for a in placements],
            "train_end": float(res.best["dice"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/inia19-macaque",
                    help="a data folder, or builtin / builtin3d")
    ap.add_argument("--space", default="default", help="a space name or file (default: default)")
    ap.add_argument("--arms", nargs="+", choices=list(GROUPS),
                    default=["plain", "all", "encoder", "bottleneck", "skip", "decoder",
                             "decoder-1+", "decoder-0"])
    ap.add_argument("--random", type=int, default=5,
                    help="random placements scored per arm (besides the plain path)")
    ap.add_argument("--budget-factor", type=float, default=None,
                    help="the supernets' epochs in full budgets (default: the space's "
                         "oneshot.budget_factor, 2)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="share of the steps on the plain path first (default: the space's "
                         "oneshot.warmup, 0.5)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs-dir", type=Path, default=None)
    ap.add_argument("--out", default=None, help="also write the results here (JSON with the "
                    "date, commit and machine; benchmarks/render.py builds the docs' table)")
    args = ap.parse_args(argv)
    runs = args.runs_dir or Path(tempfile.mkdtemp(prefix="oneshot_sharing_"))
    runs.mkdir(parents=True, exist_ok=True)
    data = None if args.data in ("builtin", "builtin3d") else str(Path(args.data).resolve())
    arms = list(dict.fromkeys(["plain", *args.arms]))
    # a rerun with the same --runs-dir and variant reuses finished arms
    variant = "".join(f"_{k}{v:g}" for k, v in (("budget", args.budget_factor),
                                                ("warmup", args.warmup)) if v is not None)
    cache = runs / f"sharing{variant}.json"
    done = json.loads(cache.read_text()) if cache.exists() else {}
    with ProcessPoolExecutor(args.jobs, max_tasks_per_child=1) as pool:
        futures = {a: pool.submit(run_arm, a, args.space, data, str(runs / (variant or "default")),
                                  args.random, args.budget_factor, args.warmup)
                   for a in arms if a not in done}
        for a, f in futures.items():
            done[a] = f.result()
            cache.write_text(json.dumps(done, indent=1))
            print(f"arm {a}: plain path {done[a]['plain']:.4f}, {done[a]['cpu_s']:.0f} CPU s",
                  flush=True)
    rows = [done[a] for a in arms]
    tables = report(args, rows)
    if args.out:
        import results_file

        path = results_file.write(args.out, "oneshot_sharing", vars(args), {"arms": rows},
                                  tables, argv=argv)
        print(f"written: {path}")
    return 0


def report(args, rows: list[dict]) -> list[dict]:
    """Print each arm against the plain arm; the same table for the results file."""
    from results_file import table

    ref = rows[0]["plain"]
    warm = max(r.get("warmup_steps", 0) for r in rows)
    head = (f"data {args.data}, space {args.space}: one supernet per arm (the space's first "
            f"macro, phase 1's budget: {rows[0]['steps']} steps, the first {warm} on the plain "
            f"path); inherited validation Dice after BatchNorm recalibration")
    print(head)
    columns = ["arm", "placements", "plain path", "vs plain arm", "random placements", "CPU s"]
    print(f"{'arm':<11} {'placements':>10} {'plain path':>10} {'vs plain arm':>12} "
          f"{'random placements':>24} {'CPU s':>6}")
    cells = []
    for r in rows:
        rnd = r["random"]
        spread = (f"{statistics.mean(rnd):.3f} ({min(rnd):.3f}-{max(rnd):.3f})" if rnd
                  else "-")
        c = [r["arm"], f"{r['placements']:.3g}", f"{r['plain']:.4f}", f"{r['plain'] - ref:+.4f}",
             spread, f"{r['cpu_s']:.0f}"]
        cells.append(c)
        print(f"{c[0]:<11} {c[1]:>10} {c[2]:>10} {c[3]:>12} {c[4]:>24} {c[5]:>6}")
    return [table("The plain path's inherited Dice, one supernet per arm", columns, cells,
                  [head])]


if __name__ == "__main__":
    raise SystemExit(main())
