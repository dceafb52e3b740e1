"""How long phase 2 of a one-shot search runs: until it has scored `--trials` (or
`search.oneshot.trials`) placements it had not seen.

Two kinds of trial score nothing and do not count:
- a repeat: TPE proposes placements it has already tried (in the fidelity runs of
  docs/benchmarks/oneshot-fidelity.md, 300 trials held 243-274 distinct placements); such a trial is
  answered from the earlier one (`duplicate_of`);
- a refusal: a placement the space's constraints (or the device's memory) rule out is pruned
  before it is scored.
So that a run cannot go on for ever, it also stops when every placement of the space has been
seen, when the sampler has proposed as many repeats as the placements asked for (it has
converged), or after ten times as many refusals (the constraints leave little to score). A
failed trial counts, as an attempt.

The same policy serves the single-process loop (`callback`, which stops the study) and the
parent of worker processes (`Supervisor`, which hands out one more trial per trial that did
not count).
"""
from __future__ import annotations

from dataclasses import dataclass

import optuna

_SEEN_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
REFUSALS_PER_PLACEMENT = 10
"""Refused placements a run may see per placement asked for before it gives up."""


def outcome(trial: optuna.trial.FrozenTrial) -> str:
    """`repeat`, `refused`, `scored` or `failed` (what `PlacementBudget` counts)."""
    if "duplicate_of" in trial.user_attrs:
        return "repeat"
    if trial.state == optuna.trial.TrialState.PRUNED:
        return "refused"
    return "scored" if trial.state == optuna.trial.TrialState.COMPLETE else "failed"


def seen_placements(study: optuna.Study) -> int:
    """Distinct placements the study has scored or refused so far."""
    keys = {t.user_attrs.get("config_key", f"#{t.number}")
            for t in study.get_trials(deepcopy=False, states=_SEEN_STATES)}
    return len(keys)


@dataclass
class PlacementBudget:
    target: int
    """New placements this run is to score."""
    space_size: int | None = None
    """Placements the space holds (None: unknown)."""
    seen_before: int = 0
    """Distinct placements the study held before this run."""
    new: int = 0
    """Placements scored (or failed) in this run."""
    repeats: int = 0
    refused: int = 0

    @classmethod
    def for_study(cls, study: optuna.Study, target: int) -> PlacementBudget:
        size = (study.user_attrs.get("oneshot") or {}).get("placements")
        return cls(int(target), int(size) if size else None, seen_placements(study))

    def record(self, trial: optuna.trial.FrozenTrial) -> None:
        self.record_outcome(outcome(trial))

    def record_outcome(self, kind: str) -> bool:
        """Count one finished trial (`outcome`); True when it counts toward the target."""
        if kind == "repeat":
            self.repeats += 1
        elif kind == "refused":
            self.refused += 1
        else:
            self.new += 1
        return kind in ("scored", "failed")

    @property
    def exhausted(self) -> bool:
        """Every placement of the space has been seen: a new one cannot be proposed."""
        return self.space_size is not None and \
            self.seen_before + self.new + self.refused >= self.space_size

    @property
    def done(self) -> bool:
        return self.why_stopped() is not None or self.new >= self.target

    def why_stopped(self) -> str | None:
        """One line when the run stops short of its target; None otherwise."""
        if self.new >= self.target:
            return None
        if self.exhausted:
            return (f"every placement of the space ({self.space_size}) has been seen; "
                    f"{self.new} scored in this run")
        if self.repeats >= self.target:
            return (f"the sampler proposed {self.repeats} placements again (as many as were "
                    f"asked for), so it has converged: {self.new} of {self.target} new "
                    "placements scored")
        if self.refused >= REFUSALS_PER_PLACEMENT * self.target:
            return (f"{self.refused} placements were refused by the constraints (ten per "
                    f"placement asked for): {self.new} of {self.target} scored; loosen the "
                    "space's constraints")
        return None

    def summary(self) -> str:
        parts = [f"{self.new} new placement(s) scored"]
        if self.repeats:
            parts.append(f"{self.repeats} proposed again, answered from the earlier trial")
        if self.refused:
            parts.append(f"{self.refused} refused by the constraints before scoring")
        return "; ".join(parts)

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """`study.optimize` callback: count the trial, stop the study when done."""
        self.record(trial)
        if self.done:
            study.stop()
