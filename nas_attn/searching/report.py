"""What `nas-attn show` (and the dashboard, export and train --from-study) read from a study."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..arch import UNetArch
from ..errors import ArchError, StudyError


@dataclass(frozen=True)
class Row:
    rank: int | None
    number: int
    state: str
    dice: float | None
    params: int | None
    flops: float | None
    latency_ms: float | None
    summary: str
    label: str
    reason: str


def trial_dice(t: FrozenTrial) -> float | None:
    if t.state == TrialState.COMPLETE and t.values:
        return float(t.values[0])
    curve = t.user_attrs.get("curve") or []
    vals = [c.get("dice") for c in curve if c.get("dice") is not None]
    return max(vals) if vals else None


def leaderboard(study: optuna.Study, top: int | None = None) -> list[Row]:
    trials = study.get_trials(deepcopy=False)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                      key=lambda t: -t.values[0])
    others = sorted((t for t in trials if t.state != TrialState.COMPLETE),
                    key=lambda t: -(trial_dice(t) or -1))
    rows = []
    for i, t in enumerate(complete + others):
        ua = t.user_attrs
        rows.append(Row(
            rank=i + 1 if t.state == TrialState.COMPLETE else None, number=t.number,
            state=t.state.name.lower(), dice=trial_dice(t), params=ua.get("params"),
            flops=ua.get("flops"), latency_ms=ua.get("latency_ms"),
            summary=ua.get("arch_summary", ""), label=ua.get("baseline", ""),
            reason=ua.get("fail_reason") or ua.get("prune_reason") or
            (f"duplicate of #{ua['duplicate_of']}" if "duplicate_of" in ua else "")))
    return rows[:top] if top else rows


def best_trial(study: optuna.Study) -> FrozenTrial:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise StudyError(f"study {study.study_name!r} has no completed trial yet")
    return max(complete, key=lambda t: t.values[0])


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    if len(study.directions) < 2:
        return []
    return sorted(study.best_trials, key=lambda t: -t.values[0])


def get_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    if number is None:
        return best_trial(study)
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.number == number:
            return t
    raise StudyError(f"study {study.study_name!r} has no trial {number}; trials are "
                     f"0..{len(trials) - 1}")


def trial_arch(trial: FrozenTrial) -> UNetArch:
    text = trial.user_attrs.get("arch")
    if not text:
        raise StudyError(f"trial {trial.number} has no architecture recorded")
    try:
        return UNetArch.from_json(text)
    except ArchError as e:
        raise StudyError(f"trial {trial.number}: the recorded architecture is invalid: {e}") from None


SAME_SIZE = "plain UNet at the best's size"


def baseline_gains(study: optuna.Study) -> list[tuple[str, float, float]]:
    """(baseline label, its Dice, best Dice minus it) for each completed baseline. A baseline
    that was interrupted, failed, pruned or is still running has only a partial score, which
    would flatter the search: it does not count (its retry does, once complete). The baselines
    take the narrowest macro, so when the best is wider, a last row compares it with the plain
    UNet of its own macro (`SAME_SIZE`, see `same_size_plain`): the gain that is not width."""
    try:
        best = best_trial(study)
    except StudyError:
        return []
    scores: dict[str, float] = {}
    archs: dict[str, str] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        label = t.user_attrs.get("baseline")
        if label:
            scores[label] = max(scores.get(label, -math.inf), float(t.values[0]))
            archs[label] = t.user_attrs.get("arch_summary", "")
    out = [(label, d, best.values[0] - d) for label, d in scores.items()]
    plain = same_size_plain(study, best)
    if plain is not None and plain[0] not in archs.values():
        out.append((SAME_SIZE, plain[1], best.values[0] - plain[1]))
    return out


def same_size_plain(study: optuna.Study, best: FrozenTrial) -> tuple[str, float] | None:
    """(summary, score) of the plain UNet of `best`'s macro (its widths, depth, upsampling;
    every site empty): the best completed trial of that architecture, else, in a one-shot
    study, the inherited score of its supernet's plain path (scored after phase 1). None when
    `best` has no attention or neither exists."""
    try:
        arch = trial_arch(best)
    except StudyError:
        return None
    plain = arch.without_attention()
    if plain == arch:
        return None
    summary = plain.summary()
    found = [float(t.values[0]) for t in study.get_trials(deepcopy=False,
                                                          states=(TrialState.COMPLETE,))
             if t.user_attrs.get("arch_summary") == summary and _arch_is(t, plain)]
    if found:
        return summary, max(found)
    for p in (study.user_attrs.get("oneshot") or {}).get("plain_paths", []):
        try:
            if UNetArch.from_json(p["arch"]) == plain:
                return summary, float(p["dice"])
        except (ArchError, KeyError, TypeError):
            continue
    return None


def _arch_is(t: FrozenTrial, arch: UNetArch) -> bool:
    try:
        return trial_arch(t) == arch
    except StudyError:
        return False


def importances(study: optuna.Study) -> dict[str, float]:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 3:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {k: v for k, v in imp.items() if not math.isnan(v)}


def arch_markdown(arch: UNetArch, cost: dict | None = None) -> str:
    """The architecture as a markdown table of sites (the dashboard's trial note)."""
    lines = [f"**{arch.summary()}**", "",
             "| site | level | attention | options |", "|---|---|---|---|"]
    for site, spec in arch.sites():
        opts = ", ".join(f"{k}={v}" for k, v in spec.options) or ""
        lines.append(f"| {site} | {arch.level_of(site)} | {spec.name or 'none'} | {opts} |")
    lines += ["", f"widths {list(arch.widths)}, block {arch.block.convs}× conv-{arch.block.norm}-"
              f"{arch.block.act}, upsample {arch.upsample}, encoder {arch.encoder_name}"]
    if cost:
        lines.append(f"params {cost['params']:,}, forward FLOPs {cost['flops']:.3g}, "
                     f"latency {cost['latency_ms']:.1f} ms, activations "
                     f"{cost['activation_mb']:.1f} MB")
    return "\n".join(lines)
