"""How long phase 2 of a one-shot search runs: until it has scored `--trials` (or
`search.oneshot.trials`) placements it had not seen.

TPE proposes placements it has already tried (in the fidelity runs of README "Is the one-shot
proxy faithful?", 300 trials held 243-274 distinct placements). Such a trial is answered from the
earlier one (`duplicate_of`) without scoring anything, so counting it would promise 300
placements and score fewer. A repeat therefore does not count, within limits: the run also stops
when every placement of the space has been seen, or when TPE has proposed as many repeats as
the placements asked for (it has converged; running on would score nothing new).

The same policy serves the single-process loop (`callback`, which stops the study) and the
parent of worker processes (`Supervisor`, which hands one more trial out per counted repeat).
"""
from __future__ import annotations

from dataclasses import dataclass

import optuna

_SEEN_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def is_repeat(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial answered from an earlier one of the same placement (nothing scored)."""
    return "duplicate_of" in trial.user_attrs


def seen_placements(study: optuna.Study) -> int:
    """Distinct placements the study has scored or refused (by a constraint) so far."""
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
    repeats: int = 0

    @classmethod
    def for_study(cls, study: optuna.Study, target: int) -> PlacementBudget:
        size = (study.user_attrs.get("oneshot") or {}).get("placements")
        return cls(int(target), int(size) if size else None, seen_placements(study))

    def record(self, trial: optuna.trial.FrozenTrial) -> None:
        self.record_outcome(is_repeat(trial))

    def record_outcome(self, repeat: bool) -> None:
        if repeat:
            self.repeats += 1
        else:
            self.new += 1

    @property
    def exhausted(self) -> bool:
        """Every placement of the space has been seen: a new one cannot be proposed."""
        return self.space_size is not None and self.seen_before + self.new >= self.space_size

    @property
    def done(self) -> bool:
        return self.new >= self.target or self.exhausted or self.repeats >= self.target

    def why_stopped(self) -> str | None:
        """One line when the run stopped short of its target; None when it reached it."""
        if self.new >= self.target:
            return None
        if self.exhausted:
            return (f"every placement of the space ({self.space_size}) has been scored; "
                    f"{self.new} new in this run")
        if self.repeats >= self.target:
            return (f"the sampler proposed {self.repeats} placements again (as many as were "
                    f"asked for), so it has converged: {self.new} of {self.target} new "
                    "placements scored")
        return None

    def summary(self) -> str:
        return (f"{self.new} new placement(s) scored" +
                (f"; {self.repeats} proposed again, answered from the earlier trial"
                 if self.repeats else ""))

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """`study.optimize` callback: count the trial, stop the study when done."""
        self.record(trial)
        if self.done:
            study.stop()
