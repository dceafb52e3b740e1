"""What `finalize` concludes and how it says it: rank correlations of the search's scores with
the full-budget ones, the winner's paired gain over the plain UNet of its size and the verdict,
and the result as lines and as the study's markdown note."""
from __future__ import annotations

import math
import statistics
from typing import Any

import optuna

from ..arch import UNetArch


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


def _paired(a: list, b: list) -> tuple[float, float] | None:
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    return mean_std(diffs) if diffs else None


def attention_gain(rows: list[dict[str, Any]], winner: dict[str, Any]) -> dict[str, Any]:
    """The winner's paired gain (by seed) over the plain UNet of its own macro, on validation
    (what decides) and test (what is reported). "gain from attention" needs the validation gain
    above zero and above two standard deviations of the paired differences, with two seeds or
    more; else the plain UNet is recommended (or, with one seed, the winner, without verdict)."""
    plain_json = UNetArch.from_dict(winner["arch"]).without_attention().to_json()
    plain = next((r for r in rows if UNetArch.from_dict(r["arch"]).to_json() == plain_json), None)
    out: dict[str, Any] = {"plain_row": plain, "plain_trial": None if plain is None
                           else plain["trial"], "plain_label": None if plain is None
                           else plain["label"], "plain_summary": None if plain is None
                           else plain["summary"], "val": None, "test": None}
    if plain is None:  # baselines off and no attention in the space's sites
        return {**out, "verdict": "no same-size plain UNet retrained", "recommend": "winner"}
    if plain is winner:
        return {**out, "verdict": "no gain from attention (the plain UNet wins)",
                "recommend": "winner"}
    val, test = _paired(winner["val"], plain["val"]), _paired(winner["test"], plain["test"])
    out.update(val=None if val is None else {"mean": val[0], "sd": val[1]},
               test=None if test is None else {"mean": test[0], "sd": test[1]})
    if len(winner["val"]) < 2:
        return {**out, "verdict": "one seed: no verdict on attention", "recommend": "winner"}
    if val[0] > 0 and val[0] > 2 * val[1]:
        return {**out, "verdict": "gain from attention", "recommend": "winner"}
    return {**out, "verdict": "no gain from attention", "recommend": "plain"}


def gain_line(res: dict[str, Any]) -> str | None:
    """One line: the winner against the plain UNet of the same size, and the verdict."""
    g = res.get("attention_gain")
    if not g:
        return None
    parts = [f"attention vs the plain UNet at the winner's size ({g['plain_summary']}):"]
    for split in ("val", "test"):
        if g.get(split):
            parts.append(f"{split} {g[split]['mean']:+.4f} ± {g[split]['sd']:.4f}")
    parts.append(f"(paired by seed) → {g['verdict']}")
    rec = res.get("recommended") or {}
    if rec:
        who = f"trial {rec['trial']}" if rec["trial"] is not None else rec["label"]
        parts.append(f"; recommended: {who}")
    return " ".join(parts)


def finalize_markdown(res: dict[str, Any]) -> str:
    """The result as a markdown table (the study's note in optuna-dashboard)."""
    has_test = res["splits"]["test"] > 0
    rec = res.get("recommended") or {"trial": res["winner"], "label": ""}
    who = f"trial {rec['trial']}" if rec["trial"] is not None else \
        "the plain UNet at the winner's size"
    lines = [f"## Final answer: {who}",
             f"Full-budget retraining ({res['epochs']} epochs, {res['seeds']} seeds) of the "
             f"{res['top']} best trials and the baselines; winner chosen by mean validation "
             f"Dice. Metric: {res['metric']}. Test: {res['test_source'] or 'none'} "
             f"({res['splits']['test']} samples), scored once, never used to choose.", "",
             "| trial | baseline | short-trial Dice | val Dice (mean ± sd) | test Dice (mean ± sd) "
             "| architecture |", "|---|---|---|---|---|---|"]
    for r in sorted(res["candidates"], key=lambda r: -r["val_mean"]):
        test = f"{r['test_mean']:.4f} ± {r['test_std']:.4f}" if has_test else "—"
        short = "—" if r["short_dice"] is None else f"{r['short_dice']:.4f}"
        lines.append(f"| {'—' if r['trial'] is None else r['trial']} | {r['label'] or ''} | "
                     f"{short} | {r['val_mean']:.4f} ± {r['val_std']:.4f} | {test} | "
                     f"`{r['summary']}` |")
    lines += ["", proxy_line(res)]
    if gain_line(res):
        lines += ["", gain_line(res)]
    return "\n".join(lines)


def proxy_line(res: dict[str, Any]) -> str:
    """How far the search's scores (short trials, or inherited weights) ranked the candidates
    as the full-budget retraining did."""
    what = ("inherited (one-shot) score" if res.get("strategy") == "oneshot"
            else "short-trial score")
    rho, tau = res.get("spearman_short_vs_full"), res.get("kendall_short_vs_full")
    if rho is None:
        return f"rank correlation, {what} vs full-budget validation mean (Spearman, Kendall): " \
               "n/a (fewer than 3 distinct searched candidates)"
    return (f"rank correlation, {what} vs full-budget validation mean: Spearman {rho:+.2f}"
            + ("" if tau is None else f", Kendall {tau:+.2f}"))


def save_dashboard_note(study: optuna.Study, res: dict[str, Any]) -> None:
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    save_note(study, finalize_markdown(res))
