"""Tables for the documentation, built from the benchmarks' result files (benchmarks/results/*.json,
each with its date, commit and machine): no figure is typed by hand. The docs build calls
`render(name)` through its hook (docs/hooks.py) for every `<!-- results: NAME -->` marker;
`python benchmarks/render.py NAME` prints the same markdown. A results file without a renderer
of its own (the tables `results_file.write` stores) is shown by `tables`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _head(d: dict, command: str) -> list[str]:
    return [f"Measured {d['date']} at commit `{d['commit']}` on {d['machine']}; "
            f"`{command}`", ""]


def _pct(v) -> str:
    return f"{100 * v:.1f} %"


def decision_quality_simulate(name: str = "decision_quality_simulate") -> str:
    d = _load(name)
    a = d["args"]
    cmd = (f"python benchmarks/decision_quality.py simulate --noise {' '.join(a['noise'])} "
           f"--reps {a['reps']}" + (f" --case-factor {a['case_factor']}"
                                    if a.get("case_factor", 1) > 1 else "")
           + (f" --effects {' '.join(str(e) for e in a['effects'])}" if a.get("effects")
              else "") + f" --out {a['out']}")
    out = _head(d, cmd)
    for scenario, r in d["results"].items():
        m, s = r["measured"], r["simulated"]
        out += [f"**{scenario}** (seed-to-seed SD of the pooled Dice {m[0]:.4f} measured, "
                f"{s[0]:.4f} simulated; mean per-case SD across seeds {m[1]:.4f} measured, "
                f"{s[1]:.4f} simulated). Rate of a gain verdict (at effect 0: the false-gain "
                "rate; above it: the power):", "",
                "| true effect | compare, 3 seeds | compare, 5 seeds | smallest detectable "
                "(3 / 5 seeds) | old 2-SD rule (3 / 5) | two-level bootstrap (3 / 5) | "
                "finalize: helps | truly best kept / chosen | full trainings | old finalize: "
                "gain |", "|---|---|---|---|---|---|---|---|---|---|"]
        for effect, e in r["effects"].items():
            out.append(
                f"| {float(effect):+.3f} | {_pct(e['compare3'])} | {_pct(e['compare5'])} | "
                f"{e['mde3']:.3f} / {e['mde5']:.3f} | {_pct(e['old3'])} / {_pct(e['old5'])} | "
                f"{_pct(e['boot3'])} / {_pct(e['boot5'])} | {_pct(e['race_helps'])} | "
                f"{_pct(e['race_kept_best'])} / {_pct(e['race_champion_best'])} | "
                f"{e['race_trainings']:.1f} | {_pct(e['old_finalize_gain'])} |")
        out.append("")
    return "\n".join(out)


def decision_quality_real(name: str = "decision_quality_real") -> str:
    d = _load(name)
    r = d["results"]
    a = d["args"]
    out = _head(d, f"python benchmarks/decision_quality.py real --runs-dir R --finalizes "
                   f"{a['finalizes']} --null-reps {a['null_reps']} --epochs {a['epochs']} "
                   f"--null-epochs {a['null_epochs']} --out benchmarks/results/{name}.json")
    out += [f"Built-in cue set, where attention truly helps: **{r['cue_helps']} of "
            f"{len(r.get('cue_finalizes', []))}** finalizes say *helps*.", "",
            "| finalize | verdict on fresh confirmation seeds (validation) | on test (reported) "
            "| full trainings | their wall seconds (summed) |", "|---|---|---|---|---|"]
    for i, v in enumerate(r.get("cue_finalizes", []), 1):
        out.append(f"| {i} | {v['text']} | {v['test']} | {v.get('trainings', '')} | "
                   f"{v.get('seconds', '')} |")
    out += ["", f"The plain UNet against itself (3 seeds each at {d['args']['null_epochs']} "
            f"epochs, no true difference): **{r['null_helps']} of {len(r.get('null', []))}** "
            "comparisons say *helps*.", "",
            "| repetition | difference [95 % interval], p: verdict | wall seconds (6 trainings) |",
            "|---|---|---|"]
    out += [f"| {i} | {v['text']} | {v.get('seconds', '')} |"
            for i, v in enumerate(r.get("null", []), 1)]
    out += [""] + [f"- {n}" for n in d.get("notes", [])]
    return "\n".join(out)


def vs_nnunet(name: str) -> str:
    d = _load(name)
    test = f" --test-data {d['test_data']}" if d.get("test_data") else ""
    n = d.get("noise")
    extra = f" --epochs {d['epochs']}" if d.get("epochs") else ""
    if any(r.get("extra_seeds") for r in d["arms"].values()):
        extra += f" --seeds {max(1 + len(r.get('extra_seeds', [])) for r in d['arms'].values())}"
    if n:
        extra += f" --noise {n['record']}"
    winner = d["arms"].get("nasattn_winner")
    if winner:
        extra += f" --finalize {winner['finalize']}"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from vs_nnunet import ARMS, WINNER_ARMS

    default = [a for a in ARMS if winner or a not in WINNER_ARMS]
    if sorted(d["arms"]) != sorted(default):  # a run of some of the arms says which
        extra += " --arms " + " ".join(a for a in ARMS if a in d["arms"])
    out = _head(d, f"python benchmarks/vs_nnunet.py --data {d['data']}{test} --work W{extra}")
    out += ["| arm | seeds | steps | batch | samples | CPU s | test Dice, pooled [95 % CI] | "
            "nnU-Net's per-case mean | the two agree | vs the nas-attn plain UNet (test) | "
            "vs nnU-Net's own plans (test) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, r in d["arms"].items():
        t = r["test"]
        seeds = 1 + len(r.get("extra_seeds", []))
        sc = r.get("seeds_score") or {"value": t["pooled_dice"], **t["ci"]}
        out.append(f"| {arm} | {seeds} | {r['steps']} | {r['batch']} | {r['samples']} | "
                   f"{'—' if r['cpu_s'] is None else r['cpu_s']} | {sc['value']:.4f} "
                   f"[{max(0, sc['low']):.4f}, "
                   f"{min(1, sc['high']):.4f}] | {t['nnunet_mean_dice']:.4f} | "
                   f"{'yes' if t['agree'] else 'no'} | {r.get('vs_plain', '')} | "
                   f"{r.get('vs_nnunet', '')} |")
    out += [""]
    if n:
        out.append(f"- Comparisons with one seed on either side count the training noise of "
                   f"the noise record `{Path(n['record']).name}` (seed-to-seed SD "
                   f"{n['seed_sd']:.4f} of nas-attn's plain UNet on this data, {n['df']} df); "
                   "two nas-attn arms with several seeds are paired by seed. Steps, samples, "
                   "CPU seconds and the per-case mean are seed 0's.")
    if winner:
        seeds = ", ".join(str(r["seed"]) for r in [winner, *winner.get("extra_seeds", [])])
        out.append(f"- nasattn_winner is the model finalize recommended "
                   f"({winner['finalize_verdict']}), `{winner['arch']}`: the checkpoints finalize "
                   f"trained it with (seeds {seeds}: its confirmation seeds when it has them, "
                   "else the race's), not retrained. Its seconds are finalize's "
                   "wall seconds per training, so its CPU seconds are not known, and its "
                   "comparison with the plain UNet pairs the seeds in order (independent "
                   "seeds, the same cases). nnunet_winner is nnU-Net training that "
                   "architecture through `nas-attn export --format nnunet`.")
    out += [f"- {x}" for x in d.get("notes", [])]
    return "\n".join(out)


def noise(name: str) -> str:
    """A noise record (`nas-attn noise`), summarised by the code that prints it."""
    sys.path.insert(0, str(RESULTS.parents[1]))
    from nas_attn.stats.noise import NoiseRecord

    rec = NoiseRecord.from_dict(_load(name))
    s = rec.summary(finalize_seeds=3)
    data = rec.data if rec.data == "builtin" else "../shared/data/" + Path(rec.data).name
    out = [f"`nas-attn noise --data {data} --seeds {len(rec.runs)}` "
           f"({rec.arch}, {rec.epochs} epochs; record `{name}.json`, data signature "
           f"`{rec.signature[:16]}`)", "",
           "| seeds | validation Dice per seed | seed-to-seed SD | score [95 % CI] | "
           "smallest gain 3 seeds per arm detect | seeds per arm for +0.005 / +0.01 |",
           "|---|---|---|---|---|---|"]
    sc = s["score"]
    need = s["seeds_needed"]
    out.append(f"| {len(rec.runs)} | {' / '.join(f'{v:.3f}' for v in s['scores'])} | "
               f"{s['run_sd']:.4f} | {sc['value']:.3f} [{sc['low']:.3f}, {sc['high']:.3f}] | "
               f"{s['detectable_at_finalize']:+.3f} | "
               f"{need.get('+0.005') or 'more than 200'} / {need.get('+0.010') or 'more than 200'} |")
    return "\n".join(out)


def _cell(v) -> str:
    return str(v).strip().replace("|", "\\|").replace("\n", " ")


def tables(name: str) -> str:
    """Any results file written through `results_file.write`: a line with its date, commit,
    machine (and device) and the command, then each table as the script printed it, with its
    title and notes."""
    d = _load(name)
    if not d.get("tables"):
        raise ValueError(f"{name}.json has no tables (and no renderer of its own)")
    device = f", device {d['device']}" if d.get("device") else ""
    out = [f"Measured {d['date']} at commit `{d['commit']}` on {d['machine']}{device}: "
           f"`{d['command']}`", ""]
    for t in d["tables"]:
        if t.get("title"):
            out += [f"**{t['title']}**", ""]
        out += ["| " + " | ".join(_cell(c) for c in t["columns"]) + " |",
                "|" + "---|" * len(t["columns"])]
        out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t["rows"]]
        notes = [f"- {n.strip()}" for n in t.get("notes", [])]
        out += [""] + notes + ([""] if notes else [])
    return "\n".join(out).rstrip() + "\n"


RENDERERS = {"decision_quality_simulate": decision_quality_simulate,
             "decision_quality_simulate_seed_dominated": decision_quality_simulate,
             "decision_quality_real": decision_quality_real}


def render(name: str) -> str:
    if name.startswith("vs_nnunet"):
        return vs_nnunet(name)
    if name.startswith("noise_"):
        return noise(name)
    return RENDERERS.get(name, tables)(name)


if __name__ == "__main__":
    print(render(sys.argv[1]))
