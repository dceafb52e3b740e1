"""What `nas-attn show` (and the dashboard, export and train --from-study) read from a study."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..architecture.description import UNetArch
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
    dice_ci: tuple[float, float] | None = None


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
            (f"duplicate of #{ua['duplicate_of']}" if "duplicate_of" in ua else "") or
            _gone(t),
            dice_ci=tuple(ua["dice_ci"]) if t.state == TrialState.COMPLETE and
            isinstance(ua.get("dice_ci"), list) and None not in ua["dice_ci"] else None))
    return rows[:top] if top else rows


def _gone(t: FrozenTrial) -> str:
    """The note of a RUNNING trial whose process on this machine is gone."""
    if t.state != TrialState.RUNNING:
        return ""
    from .heartbeat import process_gone

    if not process_gone(t):
        return ""
    return (f"its process ({t.user_attrs.get('worker')}) is gone: the next `nas-attn search` "
            "of this study records it as failed and runs it again")


def best_trial(study: optuna.Study) -> FrozenTrial:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise StudyError(f"study {study.study_name!r} has no completed trial yet")
    return max(complete, key=lambda t: t.values[0])


def versus_best(study: optuna.Study, numbers, noise=None) -> dict[int, str]:
    """For each completed trial in `numbers`: "best", "≈ best" (no detectable difference from
    the best by the paired comparison on the validation cases, one run each; `noise` adds the
    data's seed-to-seed spread), "worse" (significantly), or "" (no per-case counts)."""
    from ..stats.compare import HURTS
    from .scores import trial_counts, versus

    try:
        best = best_trial(study)
    except StudyError:
        return {}
    ref = trial_counts(best)
    out = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number not in numbers:
            continue
        if t.number == best.number:
            out[t.number] = "best"
            continue
        c = versus(trial_counts(t), ref, noise)
        out[t.number] = "" if c is None else "worse" if c.verdict == HURTS else "≈ best"
    return out


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
        if trial.state == TrialState.WAITING:
            label = trial.user_attrs.get("baseline")
            raise StudyError(f"trial {trial.number}{f' ({label})' if label else ''} is queued "
                             "and has not run yet: its architecture is recorded when it runs "
                             "(`nas-attn search --study NAME` runs it)")
        why = {TrialState.RUNNING: "it is still starting",
               TrialState.FAIL: "it failed before its architecture was sampled"}.get(
            trial.state, "the study does not say why")
        raise StudyError(f"trial {trial.number} has no architecture recorded ({why})")
    try:
        return UNetArch.from_json(text)
    except ArchError as e:
        raise StudyError(f"trial {trial.number}: the recorded architecture is invalid: {e}") from None


SAME_SIZE = "plain UNet at the best's size"


class Gain(NamedTuple):
    """The best trial against a baseline (or the plain UNet at the best's size)."""

    label: str
    dice: float
    gain: float
    comparison: Any
    """`nas_attn.stats.compare.Comparison` on the same validation cases, one run each (None
    when the counts were not recorded)."""

    def text(self) -> str:
        if self.comparison is None:
            return f"{self.label} {self.dice:.4f} ({self.gain:+.4f})"
        return f"{self.label} {self.dice:.4f} ({self.comparison.text()})"


def completed_baselines(study: optuna.Study) -> dict[str, FrozenTrial]:
    """Each baseline's best completed trial, by label. A baseline that was interrupted, failed,
    pruned or is still running has only a partial score, which would flatter the search: it
    does not count (its retry does, once complete)."""
    found: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        label = t.user_attrs.get("baseline")
        if label and (label not in found or t.values[0] > found[label].values[0]):
            found[label] = t
    return found


def baseline_gains(study: optuna.Study, noise=None) -> list[Gain]:
    """The best trial against each completed baseline (`completed_baselines`) by the one paired
    comparison on the validation cases (`nas_attn.searching.scores.versus`; `noise`: the data's
    noise record, which adds the seed-to-seed spread a one-seed comparison cannot see). When
    the best is itself a baseline, it is not compared with itself. The baselines take the
    narrowest macro, so when the best is wider, a last row compares it with the plain UNet
    of its own macro (`SAME_SIZE`, see `same_size_plain`): the gain that is not width."""
    from .scores import trial_counts, versus

    try:
        best = best_trial(study)
    except StudyError:
        return []
    found = completed_baselines(study)
    mine = trial_counts(best)
    out = [Gain(label, float(t.values[0]), best.values[0] - t.values[0],
                versus(mine, trial_counts(t), noise)) for label, t in found.items()
           if t.number != best.number]
    archs = {t.user_attrs.get("arch_summary", "") for t in found.values()}
    plain = same_size_plain(study, best)
    if plain is not None and plain[0] not in archs:
        out.append(Gain(SAME_SIZE, plain[1], best.values[0] - plain[1],
                        versus(mine, plain[2], noise)))
    return out


def same_size_plain(study: optuna.Study, best: FrozenTrial):
    """(summary, score, per-case counts or None) of the plain UNet of `best`'s macro (its
    widths, depth, upsampling; every site empty): the best completed trial of that
    architecture, else, in a one-shot study, the inherited score of its supernet's plain path
    (scored after phase 1). None when `best` has no attention or neither exists."""
    from ..stats.counts import CaseCounts
    from .scores import trial_counts

    try:
        arch = trial_arch(best)
    except StudyError:
        return None
    plain = arch.without_attention()
    if plain == arch:
        return None
    summary = plain.summary()
    found = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if t.user_attrs.get("arch_summary") == summary and _arch_is(t, plain)]
    if found:
        top = max(found, key=lambda t: t.values[0])
        return summary, float(top.values[0]), trial_counts(top)
    for p in (study.user_attrs.get("oneshot") or {}).get("plain_paths", []):
        try:
            if UNetArch.from_json(p["arch"]) == plain:
                cases = p.get("cases")
                return summary, float(p["dice"]), CaseCounts.from_dict(cases) if cases else None
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
