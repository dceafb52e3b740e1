"""The noise floor of a data set: the plain UNet trained under a few seeds at the full budget.

Two seeds of the same architecture are a pair with no true difference, so their spread is the
noise any comparison on this data must beat. `NoiseRecord` holds the per-seed counts and says:

- `run_sd`: the seed-to-seed standard deviation of one run's pooled Dice;
- `score`: the case-level interval of the mean score;
- `pair`: the plain UNet's seeds compared with each other (a comparison with no true effect);
- `detectable(seeds)`: the smallest gain a paired comparison with that many seeds per arm
  detects with 80 % power (a gain's variance: twice one run's seed variance, plus the case
  variance of a difference between two runs, both divided by the seeds);
- `seeds_needed(effect)`: the fewest seeds per arm that detect `effect` at 80 % power.

Records are stored per data set (`runs/noise/<signature>.json`, the signature of
`nas_attn.data.identity`), so a search, `show` and `finalize` on the same data quote them.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write
from ..errors import NasAttnError
from .compare import (
    Comparison,
    Estimate,
    SeedNoise,
    case_variance,
    compare,
    detectable,
    estimate,
    satterthwaite,
)
from .counts import CaseCounts, pooled_from_sums

MAX_SEEDS = 200
"""`seeds_needed` says "more than this" beyond it."""
EFFECTS = (0.005, 0.01)
"""The gains the noise check plans for: +0.5 and +1.0 Dice points."""


@dataclass
class NoiseRecord:
    """The plain UNet's runs under several seeds on one data set (module docstring)."""

    runs: list[CaseCounts]
    seeds: list[int]
    signature: str
    data: str
    arch: str
    epochs: int | None = None
    source: str = "noise"
    """"noise" (`nas-attn noise` trained them) or "finalize STUDY" (read from its runs)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if len(self.runs) < 2:
            raise NasAttnError(f"a noise check needs at least 2 seeds, got {len(self.runs)}")

    @property
    def scores(self) -> list[float]:
        return [r.pooled() for r in self.runs]

    @property
    def run_sd(self) -> float:
        return float(np.std(self.scores, ddof=1))

    @property
    def seed_noise(self) -> SeedNoise:
        return SeedNoise(self.run_sd ** 2, len(self.runs) - 1)

    @property
    def score(self) -> Estimate:
        return estimate(self.runs)

    @property
    def pair(self) -> Comparison:
        """The first half of the seeds against the second: no true difference (with one seed
        a side, the seed noise is this record's own)."""
        half = len(self.runs) // 2
        return compare(self.runs[:half], self.runs[half:2 * half], noise=self.seed_noise)

    def case_var_of_difference(self) -> float:
        """The case-bootstrap variance of the difference between two runs (one seed each),
        averaged over the pairs of seeds: what a paired comparison's cases contribute."""
        out = []
        for i, j in itertools.combinations(range(len(self.runs)), 2):
            a, b = self.runs[i], self.runs[j].subset(self.runs[i].names)

            def stat(idx, a=a, b=b):
                return (pooled_from_sums(a.tp[idx].sum(-2), a.fp[idx].sum(-2), a.fn[idx].sum(-2))
                        - pooled_from_sums(b.tp[idx].sum(-2), b.fp[idx].sum(-2),
                                           b.fn[idx].sum(-2)))

            out.append(case_variance(stat, a.cases, width=2 * a.classes))
        return float(np.mean(out))

    def detectable(self, seeds: int) -> float:
        """The smallest gain a paired comparison with `seeds` seeds per arm detects at 80 %."""
        var_seed = 2 * self.run_sd ** 2 / seeds
        var_case = self._case_var() / seeds
        df = satterthwaite([(var_seed, seeds - 1 if seeds > 1 else len(self.runs) - 1),
                            (var_case, self.runs[0].cases - 1)])
        return detectable(math.sqrt(var_seed + var_case), df)

    def seeds_needed(self, effect: float) -> int | None:
        """The fewest seeds per arm (2 or more) that detect `effect` with 80 % power; None
        beyond `MAX_SEEDS`."""
        for s in range(2, MAX_SEEDS + 1):
            if self.detectable(s) <= effect:
                return s
        return None

    def _case_var(self) -> float:
        if "case_var_diff" not in self.extra:
            self.extra["case_var_diff"] = self.case_var_of_difference()
        return float(self.extra["case_var_diff"])

    def summary(self, finalize_seeds: int) -> dict[str, Any]:
        """Everything `nas-attn noise` prints, as JSON."""
        return {"seeds": self.seeds, "scores": self.scores, "run_sd": self.run_sd,
                "score": self.score.to_dict(), "pair": self.pair.to_dict(),
                "finalize_seeds": finalize_seeds,
                "detectable_at_finalize": self.detectable(finalize_seeds),
                "seeds_needed": {f"{e:+.3f}": self.seeds_needed(e) for e in EFFECTS}}

    def to_dict(self) -> dict[str, Any]:
        return {"format": 1, "signature": self.signature, "data": self.data, "arch": self.arch,
                "epochs": self.epochs, "source": self.source, "seeds": self.seeds,
                "runs": [r.to_dict() for r in self.runs],
                "case_var_diff": self._case_var()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NoiseRecord":
        try:
            rec = cls([CaseCounts.from_dict(r) for r in d["runs"]], list(d["seeds"]),
                      str(d["signature"]), str(d.get("data", "")), str(d.get("arch", "")),
                      d.get("epochs"), str(d.get("source", "noise")))
        except (KeyError, TypeError) as e:
            raise NasAttnError(f"a noise record is damaged or of another format: {e}") from None
        if d.get("case_var_diff") is not None:
            rec.extra["case_var_diff"] = float(d["case_var_diff"])
        return rec


def record_path(runs_dir: str | Path, signature: str) -> Path:
    return Path(runs_dir) / "noise" / f"{signature[:16]}.json"


def save_record(rec: NoiseRecord, runs_dir: str | Path) -> Path:
    import json

    path = record_path(runs_dir, rec.signature)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(rec.to_dict()))
    return path


def load_record(runs_dir: str | Path, signature: str | None) -> NoiseRecord | None:
    """The stored noise record of the data with this signature, if any (a damaged file is
    treated as none: the check can be run again)."""
    import json

    if not signature:
        return None
    path = record_path(runs_dir, signature)
    try:
        rec = NoiseRecord.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, NasAttnError):
        return None
    return rec if rec.signature == signature else None


def sd_text(rec: NoiseRecord, finalize_seeds: int) -> str:
    """One line for the search's opening and closing lines."""
    return (f"noise check ({len(rec.runs)} seeds of {rec.arch.split(' | ')[0]}): seed-to-seed "
            f"SD {rec.run_sd:.4f}; a comparison with {finalize_seeds} seeds per arm detects "
            f"gains of {rec.detectable(finalize_seeds):+.4f} or more")
