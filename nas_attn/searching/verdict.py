"""What `finalize` concludes and how it says it: the result of the race and its confirmation as
one JSON-able dict (`assemble`), the verdict on attention (`attention_gain`, decided on the
confirmation seeds by `nas_attn.stats.compare`), the rank correlations of the search's scores
with the full-budget ones, and the result as lines and as the study's markdown note."""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import optuna

from ..stats.compare import HELPS, compare, estimate
from .racing import counts_of, entrant_name

METRIC = "Dice per class, pooled over the split (mean over foreground classes present)"


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (scipy), None with fewer than 3 points or no spread."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return None if rho is None or math.isnan(rho) else float(rho)


def kendall(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b (scipy), None with fewer than 3 points or no spread."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import kendalltau

    tau = kendalltau(x, y).statistic
    return None if tau is None or math.isnan(tau) else float(tau)


def mean_std(v: list[float]) -> tuple[float, float]:
    return (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)


# ----- rows -------------------------------------------------------------------------------------
def run_row(candidate, records: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """One entrant (or one confirmation arm): its runs, their means and 95 % intervals (over
    cases and seeds), and the per-case counts of every run."""
    arch = candidate.arch
    val = [r["val"] for r in records]
    test = [r["test"] for r in records]
    row: dict[str, Any] = {
        "key": candidate.folder, "trial": candidate.trial, "label": candidate.label,
        "control_of": candidate.control_of, "summary": arch.summary(), "arch": arch.to_dict(),
        "short_dice": candidate.short_dice, "status": status,
        "seeds": [r["seed"] for r in records], "val": val, "test": test,
        "best_epoch": [r["best_epoch"] for r in records],
        "checkpoints": [r["checkpoint"] for r in records],
        "seconds": [r["seconds"] for r in records],
        "train_config": records[0]["train_config"] if records else None,
        "val_cases": [r["val_cases"] for r in records],
        "test_cases": [r["test_cases"] for r in records]}
    row["val_mean"], row["val_std"] = mean_std(val)
    row["val_ci"] = estimate(counts_of(records, "val")).to_dict()
    if all(t is not None for t in test):
        row["test_mean"], row["test_std"] = mean_std(test)
        row["test_ci"] = estimate(counts_of(records, "test")).to_dict()
    return row


def _race_rows(race, plan, chosen, runner) -> list[dict[str, Any]]:
    """Every entrant at the seeds the race trained it with: those of the last round it took
    part in."""
    out = []
    for c in chosen:
        seeds = max(r.seeds for r in plan.rounds if c.folder in r.survivors)
        status = next((f"dropped in round {i}" for i, r in enumerate(plan.rounds, 1)
                       if c.folder in r.dropped), "survived")
        out.append(run_row(c, [runner.records_for(c.folder, s) for s in range(seeds)], status))
    return out


# ----- the verdict ------------------------------------------------------------------------------
def attention_gain(conf: dict | None, rows: dict[str, dict], race, plan) -> dict[str, Any]:
    """The champion against the plain UNet of its size, decided on the confirmation seeds (or,
    without them, on the race's seeds, said so); against the Attention U-Net, reported; on
    test, reported. `recommend` is "winner" only when attention helps."""
    champion = conf["champion"] if conf else race.champion(plan)
    if champion is None:
        return {"verdict": "no attention among the candidates", "recommend": "winner",
                "on": None, "plain_key": None}
    plain = race.entrants[champion].plain_key
    out: dict[str, Any] = {"champion_key": champion, "plain_key": plain,
                           "plain_summary": rows[plain]["summary"] if plain else None}
    if plain is None:
        return {**out, "verdict": "no same-size plain UNet retrained", "recommend": "winner",
                "on": None}
    if conf is None:  # decided on the seeds that chose the champion: winner's curse
        n = min(len(race.runs[champion]), len(race.runs[plain]))
        a = [race.runs[champion][s] for s in range(n)]
        b = [race.runs[plain][s] for s in range(n)]
        on, test = f"the race's seeds 0..{n - 1} (not confirmed: they chose the champion)", None
    else:
        a, b = counts_of(conf["runs"][champion]), counts_of(conf["runs"][plain])
        on = f"fresh confirmation seeds {conf['seeds']} (not used to choose)"
        ta, tb = counts_of(conf["runs"][champion], "test"), counts_of(conf["runs"][plain], "test")
        test = compare(ta, tb) if ta and tb else None
    val = compare(a, b)
    out.update(verdict=val.verdict, recommend="winner" if val.verdict == HELPS else "plain",
               on=on, val=val.to_dict(), val_text=val.text(),
               test=None if test is None else test.to_dict(),
               test_text=None if test is None else test.text())
    gate = conf.get("attention_unet") if conf else None
    if gate:
        vs = compare(a, counts_of(conf["runs"][gate]))
        out["vs_attention_unet"] = {**vs.to_dict(), "text": vs.text()}
    return out


def assemble(study: optuna.Study, race, plan, conf, chosen, runner, d, top: int
             ) -> dict[str, Any]:
    """The finalize result (finalize.json; the study's `finalize` attribute without the
    per-case counts, see `slim`)."""
    from ..stats.race import why_over
    rows = _race_rows(race, plan, chosen, runner)
    by_key = {r["key"]: r for r in rows}
    gain = attention_gain(conf, by_key, race, plan)
    confirmation = None
    if conf is not None:
        confirmation = {"seeds": conf["seeds"], "rows": [
            run_row(next(c for c in chosen if c.folder == k), recs, "confirmation")
            for k, recs in conf["runs"].items()]}
    best = max(plan.survivors, key=lambda k: (by_key[k]["val_mean"], k))
    champ = gain.get("champion_key") or best
    rec_key = champ if gain["recommend"] == "winner" else \
        race.best_plain(plan) or gain["plain_key"]
    rec = _recommended(by_key[rec_key], confirmation)
    searched = [r for r in rows if r["short_dice"] is not None]
    short, full = [r["short_dice"] for r in searched], [r["val_mean"] for r in searched]
    return {
        "metric": METRIC, "strategy": study.user_attrs.get("strategy", "trials"),
        "top": top,
        "seeds": race.max_seeds, "epochs": rows[0]["train_config"]["epochs"],
        "data": d.cfg.source,
        "splits": {"train": len(d.train), "val": len(d.val),
                   "test": len(d.test) if d.test is not None else 0},
        "test_source": ("separate folder " + str(d.cfg.test_source) if d.cfg.test_source
                        else "test_pattern " + str(d.cfg.test_pattern) if d.cfg.test_pattern
                        else "built-in held-out set" if d.cfg.is_builtin
                        else "the folder's test list" if d.test is not None else None),
        "race": {"min_seeds": race.min_seeds, "max_seeds": race.max_seeds,
                 "budget": race.budget, "trainings": sum(len(r["val"]) for r in rows),
                 "over": plan.over, "why": why_over(plan.over), "survivors": plan.survivors,
                 "rounds": [r.to_dict() for r in plan.rounds]},
        "candidates": rows, "confirmation": confirmation,
        "winner": by_key[champ]["trial"], "winner_key": champ,
        "winner_summary": by_key[champ]["summary"],
        "winner_checkpoint": _best_checkpoint(by_key[champ], confirmation),
        "attention_gain": gain, "recommended": rec,
        "spearman_short_vs_full": spearman(short, full),
        "kendall_short_vs_full": kendall(short, full),
    }


def _best_checkpoint(row: dict, confirmation: dict | None) -> str | None:
    """The checkpoint of the entrant's best validation run, race or confirmation."""
    runs = list(zip(row["val"], row["checkpoints"]))
    for r in (confirmation or {}).get("rows", []):
        if r["key"] == row["key"]:
            runs += list(zip(r["val"], r["checkpoints"]))
    runs = [x for x in runs if x[1]]
    return max(runs)[1] if runs else None


def _recommended(row: dict, confirmation: dict | None) -> dict[str, Any]:
    conf_row = next((r for r in (confirmation or {}).get("rows", []) if r["key"] == row["key"]),
                    None)
    out = {"trial": row["trial"], "label": row["label"], "summary": row["summary"],
           "arch": row["arch"], "key": row["key"], "control_of": row.get("control_of"),
           "checkpoint": _best_checkpoint(row, confirmation),
           "val_ci": (conf_row or row)["val_ci"]}
    if conf_row is not None and conf_row.get("test_ci"):
        out["test_ci"] = conf_row["test_ci"]
    return out


def slim(result: dict[str, Any]) -> dict[str, Any]:
    """The result without per-case counts (the study attribute; finalize.json keeps them)."""
    def rows(rs):
        return [{k: v for k, v in r.items() if k not in ("val_cases", "test_cases")} for r in rs]

    out = {**result, "candidates": rows(result["candidates"])}
    if result.get("confirmation"):
        out["confirmation"] = {**result["confirmation"],
                               "rows": rows(result["confirmation"]["rows"])}
    return out


def attach_picture(study: optuna.Study, result: dict[str, Any], conf: dict | None,
                   out_root: Path) -> None:
    """The per-case differences of the champion and its plain UNet on the runs that decided
    (`nas_attn.stats.picture`), saved beside finalize.json and attached to the study as an
    artifact (optuna-dashboard shows it); its path goes into the result."""
    from ..stats.picture import save_case_picture

    gain = result["attention_gain"]
    if not gain.get("val") or not gain.get("plain_key"):
        return
    champ, plain = gain["champion_key"], gain["plain_key"]
    if conf is not None:
        a, b = counts_of(conf["runs"][champ]), counts_of(conf["runs"][plain])
        seeds = conf["seeds"]
    else:
        rows = {r["key"]: r for r in result["candidates"]}
        n = min(len(rows[champ]["val"]), len(rows[plain]["val"]))
        a, b = (counts_of([{"val_cases": c} for c in rows[k]["val_cases"][:n]])
                for k in (champ, plain))
        seeds = list(range(n))
    title = f"{result['winner_summary']}  minus  {gain['plain_summary']} (validation)"
    path = save_case_picture(a, b, compare(a, b), out_root / "confirmation.png", title, seeds)
    gain["picture"] = str(path)
    try:
        from optuna.artifacts import upload_artifact

        from .artifacts import artifact_store

        store = artifact_store(out_root.parent.parent)
        gain["picture_artifact"] = upload_artifact(artifact_store=store, file_path=str(path),
                                                   study_or_trial=study)
    except Exception:  # noqa: BLE001  (the picture on disk is what matters)
        gain["picture_artifact"] = None


# ----- lines and the markdown note ---------------------------------------------------------------
def gain_line(res: dict[str, Any]) -> str | None:
    """The verdict in words: the champion against the plain UNet of its size, on which runs."""
    g = res.get("attention_gain")
    if not g:
        return None
    if not g.get("val"):
        return f"attention: {g['verdict']}"
    rec = res.get("recommended") or {}
    who = entrant_name(rec)
    parts = [f"attention ({res['winner_summary']}) vs the plain UNet of its size "
             f"({g['plain_summary']}), validation, {g['on']}: {g['val_text']}"]
    if g.get("test_text"):
        parts.append(f"on test (reported, not used): {g['test_text']}")
    if g.get("vs_attention_unet"):
        parts.append(f"vs the Attention U-Net baseline: {g['vs_attention_unet']['text']}")
    parts.append(f"recommended: {who}" + ("" if g["verdict"] == HELPS else
                                           " (attention is not shown to help: the race's best "
                                           "plain UNet, " + rec.get("summary", "") + ")"))
    return "; ".join(parts)


def race_lines(res: dict[str, Any]) -> list[str]:
    """The race, round by round, in words."""
    race = res.get("race") or {}
    rows = {r["key"]: r for r in res.get("candidates", [])}

    def name(k):
        return entrant_name(rows.get(k, {"key": k}))

    out = []
    for i, rnd in enumerate(race.get("rounds", []), 1):
        dropped = ", ".join(f"{name(k)} ({rnd['comparisons'][k]['diff']['value']:+.4f}, Holm "
                            f"p {rnd['comparisons'][k]['p_holm']:.3f})" for k in rnd["dropped"])
        out.append(f"round {i} ({rnd['seeds']} seeds, {len(rnd['survivors'])} in): best "
                   f"{name(rnd['best'])}; " + (f"dropped {dropped}" if dropped else
                                                "none significantly worse"))
    if race:
        out.append(f"race over after {race['trainings']} full trainings (budget "
                   f"{race['budget']}): {race['why']}")
    return out


def proxy_line(res: dict[str, Any]) -> str:
    """How far the search's scores (short trials, or inherited weights) ranked the candidates
    as the full-budget retraining did."""
    from .strategy import score_kind

    what = f"{score_kind(res.get('strategy'))} score"
    rho, tau = res.get("spearman_short_vs_full"), res.get("kendall_short_vs_full")
    if rho is None:
        return f"rank correlation, {what} vs full-budget validation mean (Spearman, Kendall): " \
               "n/a (fewer than 3 distinct searched candidates)"
    return (f"rank correlation, {what} vs full-budget validation mean: Spearman {rho:+.2f}"
            + ("" if tau is None else f", Kendall {tau:+.2f}"))


def ci_text(ci: dict | None) -> str:
    """A score with its 95 % interval, the interval shown within [0, 1] (a t interval of a
    score near 0 or 1 reaches past them)."""
    if not ci or ci.get("low") is None:
        return "—"
    return f"{ci['value']:.4f} [{max(0.0, ci['low']):.4f}, {min(1.0, ci['high']):.4f}]"


def finalize_markdown(res: dict[str, Any]) -> str:
    """The result as markdown (the study's note in optuna-dashboard)."""
    has_test = res["splits"]["test"] > 0
    rec = res.get("recommended") or {"trial": res["winner"], "label": ""}
    who = entrant_name(rec)
    lines = [f"## Final answer: {who}",
             f"A race of full-budget retrainings ({res['epochs']} epochs) of the {res['top']} best "
             f"trials, the baselines and the plain UNet at each one's size; at most "
             f"{res['seeds']} seeds each, an entrant significantly worse than the best dropped "
             f"after each round. Metric: {res['metric']}. Intervals: 95 %, over cases and seeds. "
             f"Test: {res['test_source'] or 'none'} ({res['splits']['test']} samples), never "
             "used to choose.", "",
             "| trial | baseline | short-trial Dice | seeds | val Dice [95 % CI] | "
             "test Dice [95 % CI] | status | architecture |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(res["candidates"], key=lambda r: -r["val_mean"]):
        short = "—" if r["short_dice"] is None else f"{r['short_dice']:.4f}"
        lines.append(f"| {'—' if r['trial'] is None else r['trial']} | {r['label'] or ''} | "
                     f"{short} | {len(r['val'])} | {ci_text(r['val_ci'])} | "
                     f"{ci_text(r.get('test_ci')) if has_test else '—'} | {r['status']} | "
                     f"`{r['summary']}` |")
    lines += [""] + [f"- {x}" for x in race_lines(res)] + ["", proxy_line(res)]
    if gain_line(res):
        lines += ["", gain_line(res)]
    pic = (res.get("attention_gain") or {}).get("picture")
    if pic:
        lines += ["", f"Per-case differences: `{pic}` (also among the study's artifacts)."]
    return "\n".join(lines)


def save_dashboard_note(study: optuna.Study, res: dict[str, Any]) -> None:
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    save_note(study, finalize_markdown(res))
