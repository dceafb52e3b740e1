"""The seam between the search loop and a search strategy.

A strategy says what a trial is and how its score was obtained; the loop (`run`, `parallel`,
`workers`), the reports and the command line ask it instead of testing its name:

- `objective(...)`: the callable optuna runs for each trial (per-trial: train the candidate;
  one-shot: score a placement with inherited weights);
- `sampler(objective, sampler)`: the sampler it needs (one-shot fixes the macro architecture
  when the space allows only one);
- `prepare(session)`: what runs once before the trials (one-shot: phase 1, the supernets),
  resumable; only `SearchSession.prepare` calls it, so it starts from one place;
- `trials(space)`, `budget(session, trials)`: the default count, and a stopping rule other than
  the count of trials (one-shot: `trials` new placements, not repeats);
- `trial_epochs(space)`: the epochs a trial trains (0: it does not train);
- `score_kind`, `finalize_first`: how it describes its scores, and whether they must not be
  acted on before `finalize` (the search's closing `next:` line).

The strategies are `Trials` (below) and `oneshot.OneShotStrategy`. A third one is a package
beside `oneshot/` with a class of these members, named in `STRATEGY_CLASSES` and in
`space.STRATEGIES` (the spaces' schema).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..errors import StudyError
from .space import STRATEGIES, Space


class Strategy(Protocol):
    name: str
    score_kind: str
    """What a trial's score is, in a phrase: "short-trial", "inherited (one-shot)"."""
    finalize_first: bool

    def objective(self, space: Space, data_cfg, runs_dir: Path, study_name: str, device,
                  listener, store) -> Any: ...

    def sampler(self, objective, sampler) -> Any: ...

    def prepare(self, session) -> None: ...

    def trials(self, space: Space) -> int: ...

    def budget(self, session, trials: int) -> Any: ...

    def trial_epochs(self, space: Space) -> int: ...


class Trials:
    """Per-trial search: every trial trains its candidate from scratch for a short budget."""

    name = "trials"
    score_kind = "short-trial"
    finalize_first = False

    def objective(self, space, data_cfg, runs_dir, study_name, device, listener, store):
        from .objective import Objective

        return Objective(space, data_cfg, runs_dir, study_name, device, listener, store)

    def sampler(self, objective, sampler):
        return sampler

    def prepare(self, session) -> None:
        return None

    def trials(self, space: Space) -> int:
        return space.search.trials

    def budget(self, session, trials: int):
        return None

    def trial_epochs(self, space: Space) -> int:
        return space.budget.epochs


def _oneshot() -> Strategy:
    from .oneshot.strategy import OneShotStrategy

    return OneShotStrategy()


STRATEGY_CLASSES = {"trials": Trials, "oneshot": _oneshot}
"""Every strategy by name (a class, or a function that imports its package on first use)."""


def get_strategy(name: str | None) -> Strategy:
    """The strategy called `name` (None: a study created before strategies were recorded,
    `trials`), or one line naming the accepted ones."""
    make = STRATEGY_CLASSES.get(name or "trials")
    if make is None:
        raise StudyError(f"strategy {name!r} unknown; accepted: {', '.join(STRATEGIES)}")
    return make()


def score_kind(name: str | None) -> str:
    """How a study's search scores were obtained, for reports (`score_kind` of its strategy)."""
    return get_strategy(name).score_kind
