"""`finalize` as a race (SMAC's intensification, irace's elimination), on per-case counts only:
what to train next and what to drop. The trainings themselves are `nas_attn.searching.finalize`'s.

- Every entrant (the top candidates of the search, the baselines, the plain UNet at each
  candidate's size) is trained under `min_seeds` seeds (seeds 0, 1, ...).
- After each round the **current best** is the survivor with the highest mean validation
  score; every other survivor is compared with it (`nas_attn.stats.compare`, paired by seed on
  the same cases) and dropped when it is significantly worse after Holm's correction for the
  number of comparisons of that round. The current best and the plain UNet of its size are
  never dropped.
- The race stops when what survives is one attention candidate and its plain UNet (or no
  attention candidate: every one was significantly worse), when the next round would exceed
  `budget` full trainings, or at `max_seeds` seeds. Otherwise every survivor gets one more seed.

The decisions are a pure function of the runs recorded so far (`Race.replay`), so a killed
race resumes from its last finished training and makes the same decisions again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .compare import ALPHA, Comparison, SeedNoise, compare, holm
from .counts import CaseCounts


@dataclass(frozen=True)
class Entrant:
    key: str
    """Unique, also the folder name of its trainings (`trial_0007`, `plain_at_trial_0007`)."""
    label: str
    attention: bool
    plain_key: str | None
    """The entrant that is the plain UNet of this one's size (None: none entered, or this is
    a plain UNet)."""


@dataclass
class Round:
    seeds: int
    survivors: list[str]
    best: str
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    adjusted_p: dict[str, float] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "survivors": self.survivors, "best": self.best,
                "dropped": self.dropped,
                "comparisons": {k: {**c.to_dict(), "p_holm": self.adjusted_p.get(k)}
                                for k, c in self.comparisons.items()}}


@dataclass
class Plan:
    """`Race.replay`'s answer: the rounds decided so far, the trainings the race waits for
    (empty when it is over) and, once over, why."""

    rounds: list[Round]
    pending: list[tuple[str, int]]
    over: str | None
    survivors: list[str]


class Race:
    def __init__(self, entrants: list[Entrant], *, min_seeds: int = 2, max_seeds: int = 5,
                 budget: int | None = None):
        if len({e.key for e in entrants}) != len(entrants):
            raise ValueError("race entrants need distinct keys")
        if min_seeds < 2 or max_seeds < min_seeds:
            raise ValueError(f"a race needs 2 <= min_seeds <= max_seeds, got {min_seeds}, "
                             f"{max_seeds}")
        self.entrants = {e.key: e for e in entrants}
        self.min_seeds, self.max_seeds = min_seeds, max_seeds
        self.budget = budget if budget is not None else default_budget(len(entrants))
        if self.budget < len(entrants) * min_seeds:
            raise ValueError(f"a budget of {self.budget} full trainings cannot train the "
                             f"{len(entrants)} entrants under {min_seeds} seeds each")
        self.runs: dict[str, dict[int, CaseCounts]] = {e.key: {} for e in entrants}

    def add(self, key: str, seed: int, counts: CaseCounts) -> None:
        self.runs[key][seed] = counts

    def trainings(self) -> int:
        return sum(len(v) for v in self.runs.values())

    def mean(self, key: str, seeds: int) -> float:
        return sum(self.runs[key][s].pooled() for s in range(seeds)) / seeds

    def _missing(self, alive: list[str], seeds: int) -> list[tuple[str, int]]:
        return [(k, s) for k in alive for s in range(seeds) if s not in self.runs[k]]

    def decide(self, alive: list[str], seeds: int) -> Round:
        """One round's eliminations, every survivor holding seeds 0..seeds-1."""
        best = max(alive, key=lambda k: (self.mean(k, seeds), k))
        keep = {best, self.entrants[best].plain_key}
        others = [k for k in alive if k not in keep]
        rnd = Round(seeds, list(alive), best)
        ref = [self.runs[best][s] for s in range(seeds)]
        pooled = block_noise([[self.runs[k][s].pooled() for s in range(seeds)] for k in alive])
        for k in others:
            rnd.comparisons[k] = compare([self.runs[k][s] for s in range(seeds)], ref,
                                         pooled=pooled)
        adjusted = holm([rnd.comparisons[k].p for k in others])
        for k, p in zip(others, adjusted):
            rnd.adjusted_p[k] = p
            if p < ALPHA and rnd.comparisons[k].diff.value < 0:
                rnd.dropped.append(k)
        return rnd

    def settled(self, alive: list[str]) -> bool:
        """One attention candidate and (at most) its plain UNet, or no attention candidate."""
        att = [k for k in alive if self.entrants[k].attention]
        if len(att) > 1:
            return False
        if not att:
            return True
        return all(k == att[0] or k == self.entrants[att[0]].plain_key for k in alive)

    def replay(self) -> Plan:
        """The race as far as the recorded runs take it (module docstring)."""
        alive, seeds, rounds = list(self.entrants), self.min_seeds, []
        used = len(self.entrants) * self.min_seeds
        while True:
            missing = self._missing(alive, seeds)
            if missing:
                return Plan(rounds, missing, None, alive)
            rnd = self.decide(alive, seeds)
            rounds.append(rnd)
            alive = [k for k in alive if k not in rnd.dropped]
            if self.settled(alive):
                return Plan(rounds, [], "settled", alive)
            if seeds >= self.max_seeds:
                return Plan(rounds, [], "max_seeds", alive)
            if used + len(alive) > self.budget:
                return Plan(rounds, [], "budget", alive)
            used += len(alive)
            seeds += 1

    def champion(self, plan: Plan) -> str | None:
        """The attention entrant the race chose: the best attention survivor, else (every one
        was dropped) the best attention entrant at the seeds it reached; None without any."""
        def score(k):
            return self.mean(k, len(self.runs[k]))

        att = [k for k in plan.survivors if self.entrants[k].attention]
        if not att:
            att = [k for k in self.entrants if self.entrants[k].attention and self.runs[k]]
        return max(att, key=lambda k: (score(k), k)) if att else None

    def best_plain(self, plan: Plan) -> str | None:
        """The survivor without attention with the best mean over its seeds: what to deploy
        when attention is not shown to help (the champion's same-size plain UNet answers
        whether it helps; a plain UNet of another size may score higher). None without any."""
        plain = [k for k in plan.survivors if not self.entrants[k].attention]
        return max(plain, key=lambda k: (self.mean(k, len(self.runs[k])), k)) if plain else None


def block_noise(scores: list[list[float]]) -> SeedNoise | None:
    """The seed variance of one run, pooled over the models of a round: the residual variance
    of the models x seeds table of pooled Dice after the model and seed effects (a randomised
    complete block design, seeds as blocks: runs of one seed share the data order), with
    (models - 1)(seeds - 1) degrees of freedom. A per-pair estimate has seeds - 1 (one at two
    seeds: t(0.975, 1) = 12.7); pooling assumes the models' seed noise is alike. None with
    fewer than 3 models (then the pair's own spread is the same thing)."""
    y = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 3 or y.shape[1] < 2:
        return None
    r = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    df = (y.shape[0] - 1) * (y.shape[1] - 1)
    return SeedNoise(float((r ** 2).sum() / df), df)


def default_budget(entrants: int) -> int:
    """As many full trainings as `finalize --seeds 3` used before the race: 3 per entrant."""
    return 3 * entrants


def why_over(reason: str | None) -> str:
    return {"settled": "one attention candidate and its plain UNet remain",
            "max_seeds": "the largest number of seeds was reached",
            "budget": "the next round would exceed the budget of full trainings",
            None: "not over"}[reason]
