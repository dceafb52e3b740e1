"""A trial's score with its uncertainty, recorded and read back the same way by both strategies,
`show` and the search's closing line.

- `record_scores(trial, metrics)`: the per-case counts of the pass that scored the trial (its
  best epoch, or a one-shot placement's inherited weights) as the user attribute `val_cases`,
  and the 95 % interval of its Dice as `dice_ci` ([low, high]; over cases: a trial is one seed,
  so the interval counts training noise only where the data's noise check measured it).
- `trial_counts(trial)`: those counts back (None for trials recorded before they were kept).
- `noise_for(study, runs_dir)`: the stored noise record of the study's data, if any.
- `versus(a, b, noise)`: the one paired comparison (`nas_attn.stats.compare`) of two trials.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import NasAttnError
from ..stats.compare import Comparison, compare, estimate
from ..stats.counts import CaseCounts
from ..stats.noise import NoiseRecord, load_record


def record_scores(trial, metrics: dict[str, Any], noise: NoiseRecord | None = None) -> None:
    cases = metrics.get("cases")
    if not cases:
        return
    trial.set_user_attr("val_cases", cases)
    est = estimate([CaseCounts.from_dict(cases)],
                   noise=None if noise is None else noise.seed_noise)
    trial.set_user_attr("dice_ci", [est.low, est.high])
    trial.set_user_attr("dice_ci_noise", est.noise)


def trial_counts(trial) -> CaseCounts | None:
    cases = trial.user_attrs.get("val_cases")
    if not cases:
        return None
    try:
        return CaseCounts.from_dict(cases)
    except NasAttnError:
        return None


def noise_for(study, runs_dir: str | Path | None) -> NoiseRecord | None:
    """The noise record stored for the study's data (`nas-attn noise`), if any."""
    if runs_dir is None:
        return None
    ident = study.user_attrs.get("data_identity") or {}
    return load_record(runs_dir, ident.get("signature"))


def versus(a: CaseCounts | None, b: CaseCounts | None,
           noise: NoiseRecord | None = None) -> Comparison | None:
    """A against B, one run each, on the same validation cases (None without counts or when
    they were scored on other cases)."""
    if a is None or b is None or set(a.names) != set(b.names):
        return None
    return compare([a], [b], noise=None if noise is None else noise.seed_noise)
