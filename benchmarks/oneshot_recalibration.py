"""How many BatchNorm recalibration batches does an inherited score need? Phase 2 spends most
of a placement's time on them (`search.oneshot.recalibration_batches`, default 8) and on the
validation pass; fewer batches are cheaper, but a noisier estimate of the statistics can
reorder placements.

    python benchmarks/oneshot_fidelity.py --data ../shared/data/inia19-macaque --depth 3 \\
        --width 8 --epochs 15 --samples-per-epoch 128 --runs-dir runs/fidelity_inia19
    python benchmarks/oneshot_recalibration.py --runs-dir runs/fidelity_inia19 [--out results.json]

Takes the trained supernet of a `oneshot_fidelity.py` runs dir (its space, data and study;
phase 1 must be done), draws `--placements` placements uniformly from its choices and scores
each as phase 2 does (validation Dice pooled per class, the same validation pass) after
recalibrating on: the first 2, 4 and 8 of phase 2's own batches (the recipe's seed), 8 other
batches (the next seed: how much two equally good estimates disagree), and all 16 (the
reference). Printed per set: the mean and range of the scores, Spearman / Kendall against the
16-batch ranking, the largest score change, and the CPU seconds of one recalibration.
Validation data only.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs-dir", type=Path, required=True,
                    help="the runs dir of an oneshot_fidelity.py run whose phase 1 is done")
    ap.add_argument("--placements", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7, help="of the random placements")
    ap.add_argument("--out", default=None, help="also write the results here (JSON with the "
                    "date, commit and machine; benchmarks/render.py builds the docs' table)")
    args = ap.parse_args(argv)

    cache = args.runs_dir / "fidelity.json"
    space = args.runs_dir / "space.yaml"
    state = json.loads(cache.read_text()) if cache.exists() else {}
    if "phase1" not in state or not space.exists():
        print(f"error: {args.runs_dir} holds no finished phase 1 of oneshot_fidelity.py "
              "(fidelity.json with 'phase1', space.yaml)", file=sys.stderr)
        return 2
    data = state.get("data")
    data = None if data in (None, "builtin", "builtin3d") else data

    import torch

    torch.set_num_threads(1)
    import optuna
    from oneshot_fidelity import random_placements

    from nas_attn.architecture.description import UNetArch
    from nas_attn.searching.opening import SearchRequest, open_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = open_search(SearchRequest(space=str(space), runs_dir=args.runs_dir, study="fidelity",
                                  data=data))
    obj = s.objective
    cfg = obj.train_config(dict(obj.overrides))
    archs = [UNetArch.from_json(a) for a in
             random_placements(str(space), data, args.placements, args.seed)]
    net, runtime = obj.supernet(archs[0], cfg)
    first = obj.calibration_batches(cfg, runtime)  # phase 2's own batches
    if len(first) < 8:
        print(f"error: the space's recalibration_batches is {len(first)}; this compares "
              "against phase 2's default of 8", file=sys.stderr)
        return 2
    first = first[:8]
    other = obj.calibration_batches(cfg.model_copy(update={"seed": cfg.seed + 1}), runtime)[:8]
    sets = {"2": first[:2], "4": first[:4], "8 (phase 2)": first, "8, next seed": other,
            "16 (reference)": first + other}
    scores, recal_s = measure(net, sets, archs, obj, runtime, cfg)
    head = (f"{len(archs)} random placements of {archs[0].without_attention().summary()}, "
            f"batches of {cfg.batch_size}")
    tables = report(head, scores, recal_s, len(archs))
    out = args.runs_dir / "recalibration.json"
    raw = {"archs": [a.to_json() for a in archs], "scores": scores,
           "recalibration_cpu_s": recal_s}
    out.write_text(json.dumps(raw, indent=1))
    print(f"results: {out}")
    if args.out:
        import results_file

        path = results_file.write(args.out, "oneshot_recalibration", vars(args), raw, tables,
                                  argv=argv)
        print(f"written: {path}")
    return 0


def measure(net, sets: dict, archs: list, obj, runtime, cfg) -> tuple[dict, dict]:
    """Each placement's score after recalibrating on each batch set; CPU s per set."""
    from nas_attn.searching.oneshot.supernet import recalibrate_bn

    scores: dict[str, list[float]] = {k: [] for k in sets}
    recal_s: dict[str, float] = {k: 0.0 for k in sets}
    for arch in archs:
        net.set_path(arch)
        for k, batches in sets.items():
            c0 = time.process_time()
            recalibrate_bn(net, batches, runtime)
            recal_s[k] += time.process_time() - c0
            scores[k].append(float(obj.validate(net, runtime, arch, cfg)["dice"]))
    return scores, recal_s


def report(head: str, scores: dict, recal_s: dict, n: int) -> list[dict]:
    """Print each batch set against the 16-batch scores; the same table for the results file."""
    from results_file import table

    from nas_attn.searching.verdict import kendall, spearman

    ref = scores["16 (reference)"]
    print(head)
    print(f"{'batches':<15} {'mean':>7} {'range':>15} {'Spearman':>9} {'Kendall':>8} "
          f"{'max |d|':>8} {'CPU s':>6}   (against the 16-batch scores)")
    rows = []
    for k, v in scores.items():
        rows.append([k, f"{sum(v) / len(v):.4f}", f"{min(v):.4f}-{max(v):.4f}",
                     f"{spearman(v, ref):+.3f}", f"{kendall(v, ref):+.3f}",
                     f"{max(abs(a - b) for a, b in zip(v, ref)):.4f}", f"{recal_s[k] / n:.3f}"])
        c = rows[-1]
        print(f"{c[0]:<15} {c[1]:>7} {min(v):7.4f}-{max(v):.4f} {c[3]:>9} {c[4]:>8} {c[5]:>8} "
              f"{c[6]:>6}")
    return [table("Inherited scores after recalibrating on each batch set",
                  ["batches", "mean", "range", "Spearman", "Kendall", "max |d|", "CPU s"], rows,
                  [head, "Spearman, Kendall and max |d| against the 16-batch scores; CPU s of "
                   "one recalibration"])]


if __name__ == "__main__":
    raise SystemExit(main())
