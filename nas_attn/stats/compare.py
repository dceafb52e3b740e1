"""How sure a score is, and the one paired comparison every decision goes through.

A score here is the mean over training seeds of the pooled Dice of each seed's model on the same
cases. Two things make it uncertain, and both are counted:

- **cases**: other cases from the same source would give another score. Estimated by a
  bootstrap over cases (`scipy.stats.bootstrap`), resampling the cases jointly for every seed
  and, in a comparison, for both arms, and recomputing the pooled Dice from the per-case
  counts (never a mean of per-case Dice);
- **training seeds**: another seed gives another model. Estimated from the spread of the
  per-seed scores (or per-seed differences, paired by seed), with S - 1 degrees of freedom.
  With one seed it comes from the data's noise check (`nas_attn.stats.noise`) when one was
  measured; otherwise it is unknown and the interval says "cases only".

The two variances add (as in the "pigeonhole" bootstrap of crossed designs, Owen 2007: this
counts the seed-by-case interaction twice, so it errs wide) and the interval uses Student's t
with Welch-Satterthwaite degrees of freedom. Why not the two-level bootstrap alone (resample
seeds, then cases): with 2-5 seeds, resampling seeds underestimates their variance by
(S - 1) / S and ignores that S - 1 degrees of freedom need t quantiles (t(0.975, 2) = 4.30,
not 1.96), which matters where the seed noise dominates the case noise; and one formula covers
one seed with a noise check's seed variance. `benchmarks/decision_quality.py` measures both
rules' false-gain rates on data simulated from real noise checks.

A comparison ends in one of three verdicts: **helps** (the 95 % interval of A - B is above
zero), **hurts** (below zero), or **no detectable difference**, stated with the smallest effect
this comparison had an 80 % chance to detect.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .counts import CaseCounts, pooled_from_sums, stack_seeds

ALPHA = 0.05
POWER = 0.80
RESAMPLES = 2000
"""Bootstrap resamples over cases (Monte Carlo error of the standard error: about 1.6 %)."""
RNG_SEED = 0
"""The bootstrap's random stream is fixed: the same counts always give the same verdict."""

HELPS, HURTS, NO_DIFFERENCE = "helps", "hurts", "no detectable difference"

NOISE_SEEDS, NOISE_POOLED, NOISE_CHECK, CASES_ONLY = (
    "seeds", "seeds, pooled over the entrants", "noise check", "cases only")


@dataclass(frozen=True)
class SeedNoise:
    """Training noise from outside the runs at hand (a noise check): the variance of one
    run's pooled Dice across seeds and its degrees of freedom."""

    var: float
    df: int


@dataclass(frozen=True)
class Estimate:
    """A score (or a difference of scores) with its 95 % interval."""

    value: float
    low: float
    high: float
    se: float
    df: float
    seeds: int
    cases: int
    noise: str
    """Where the training noise came from: "seeds", "noise check" or "cases only"."""
    var_seed: float = 0.0
    var_case: float = 0.0

    def text(self, digits: int = 4) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(getattr(self, k)) for k in (
            "value", "low", "high", "se", "df", "seeds", "cases", "noise", "var_seed",
            "var_case")}


@dataclass(frozen=True)
class Comparison:
    """A - B on the same cases (and seeds, paired by seed): the difference with its interval,
    a two-sided p-value, the verdict and the smallest detectable effect."""

    diff: Estimate
    p: float
    verdict: str
    mde: float | None
    """The smallest true difference this comparison detects with 80 % power (None: the noise
    could not be estimated)."""
    a: float = 0.0
    b: float = 0.0
    notes: tuple[str, ...] = field(default=())

    def text(self, digits: int = 4) -> str:
        """`+0.0123 [+0.0040, +0.0206], p = 0.004: helps`, and for no detectable difference
        the smallest effect it could have detected."""
        d = self.diff
        core = (f"{d.value:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}], "
                f"p {_p(self.p)}: {self.verdict}")
        if self.verdict == NO_DIFFERENCE:
            core += (" (could not estimate the noise)" if self.mde is None else
                     f" (could detect ±{self.mde:.{digits}f})")
        if d.noise not in (NOISE_SEEDS, NOISE_POOLED):
            core += f"; {d.seeds} seed, noise from {d.noise}" if d.noise == NOISE_CHECK else \
                f"; {d.noise}: training noise not counted"
        return core

    def to_dict(self) -> dict[str, Any]:
        return {"diff": self.diff.to_dict(), "p": _clean(self.p), "verdict": self.verdict,
                "mde": _clean(self.mde), "a": _clean(self.a), "b": _clean(self.b),
                "notes": list(self.notes)}


def _p(p: float) -> str:
    """`= 0.004`, `= 1` or `< 0.001`: the relation with the value."""
    return "= 1" if p >= 0.9995 else f"= {p:.3f}" if p >= 0.001 else "< 0.001"


def _clean(v):
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return None if math.isnan(v) else (v if math.isfinite(v) else None)
    return v


# ----- the two variance components ----------------------------------------------------------
def case_variance(stat, cases: int, *, width: int = 1, resamples: int = RESAMPLES,
                  seed: int = RNG_SEED) -> float:
    """The bootstrap variance over cases of `stat(idx)` (idx: (..., cases) integer indices of a
    resample; the statistic recomputes pooled Dice from the drawn cases' counts), by
    `scipy.stats.bootstrap`; `width` (seeds x classes x arms) bounds the memory of a batch of
    resamples. Zero with fewer than two cases."""
    if cases < 2:
        return 0.0
    from scipy.stats import bootstrap

    res = bootstrap((np.arange(cases),), lambda idx, axis=-1: stat(np.asarray(idx, np.int64)),
                    n_resamples=resamples, vectorized=True, method="percentile",
                    batch=max(1, 8_000_000 // max(1, cases * width)), rng=np.random.default_rng(seed))
    return float(res.standard_error) ** 2


def satterthwaite(parts: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variance estimates (variance, df)."""
    total = sum(v for v, _ in parts)
    den = sum(v * v / d for v, d in parts if v > 0 and math.isfinite(d) and d > 0)
    if total <= 0:
        return math.inf
    return math.inf if den == 0 else total * total / den


def draws(idx: np.ndarray, cases: int) -> np.ndarray:
    """How often each case is drawn in each resample: (..., cases) indices -> (..., cases)
    counts, one `bincount` for the whole batch."""
    idx = np.asarray(idx, np.int64)
    rows = idx.reshape(-1, idx.shape[-1])
    offsets = (np.arange(rows.shape[0]) * cases)[:, None]
    w = np.bincount((rows + offsets).ravel(), minlength=rows.shape[0] * cases)
    return w.reshape(*idx.shape[:-1], cases).astype(np.float64)


def _pooled_per_seed(tp, fp, fn, idx=None) -> np.ndarray:
    """(S,) pooled Dice per seed, or (S, ...) for resampled case indices `idx` (..., n)."""
    if idx is None:
        return pooled_from_sums(tp.sum(1), fp.sum(1), fn.sum(1))
    w = draws(idx, tp.shape[1])  # (B, n) @ (S, n, K) -> (S, B, K), one BLAS call per seed
    return pooled_from_sums(*(np.matmul(w, x.astype(np.float64)) for x in (tp, fp, fn)))


def _combine(value: float, per_seed: np.ndarray, var_case: float, cases: int, *,
             noise: SeedNoise | None, seed_var_scale: float,
             pooled: SeedNoise | None = None) -> Estimate:
    """The estimate from its per-seed values (for the seed variance) and its case variance."""
    seeds = len(per_seed)
    if pooled is not None and seeds >= 2:
        var_seed, df_seed, source = seed_var_scale * pooled.var / seeds, pooled.df, NOISE_POOLED
    elif seeds >= 2:
        var_seed, df_seed, source = float(np.var(per_seed, ddof=1)) / seeds, seeds - 1, NOISE_SEEDS
    elif noise is not None and noise.df >= 1:
        var_seed, df_seed, source = seed_var_scale * noise.var / seeds, noise.df, NOISE_CHECK
    else:
        var_seed, df_seed, source = 0.0, math.inf, CASES_ONLY
    se = math.sqrt(var_seed + var_case)
    df = satterthwaite([(var_seed, df_seed), (var_case, cases - 1)])
    if se == 0 or (source == CASES_ONLY and cases < 2):
        return Estimate(value, value, value, se, df if se else math.nan, seeds, cases, source,
                        var_seed, var_case)
    from scipy.stats import t

    half = float(t.ppf(1 - ALPHA / 2, df)) * se
    return Estimate(value, value - half, value + half, se, df, seeds, cases, source, var_seed,
                    var_case)


# ----- a score, a comparison ----------------------------------------------------------------
def estimate(runs: Sequence[CaseCounts], *, noise: SeedNoise | None = None) -> Estimate:
    """A model's score: the mean over its seeds (`runs`, one `CaseCounts` each, the same cases)
    of their pooled Dice, with its 95 % interval (module docstring)."""
    tp, fp, fn = stack_seeds(runs)
    per_seed = _pooled_per_seed(tp, fp, fn)
    var_case = case_variance(lambda idx: _pooled_per_seed(tp, fp, fn, idx).mean(0), tp.shape[1],
                             width=tp.shape[0] * tp.shape[2])
    return _combine(float(per_seed.mean()), per_seed, var_case, tp.shape[1], noise=noise,
                    seed_var_scale=1.0)


def per_class(runs: Sequence[CaseCounts], *, noise: SeedNoise | None = None
              ) -> list[Estimate | None]:
    """`estimate` of each foreground class's pooled Dice (None for a class in neither the
    reference nor the prediction of any run)."""
    out: list[Estimate | None] = []
    for k in range(runs[0].classes):
        one = [CaseCounts(r.names, r.tp[:, k:k + 1], r.fp[:, k:k + 1], r.fn[:, k:k + 1])
               for r in runs]
        present = any((r.tp + r.fp + r.fn).sum() > 0 for r in one)
        out.append(estimate(one, noise=noise) if present else None)
    return out


def compare(a: Sequence[CaseCounts], b: Sequence[CaseCounts], *,
            noise: SeedNoise | None = None, pooled: SeedNoise | None = None) -> Comparison:
    """A against B: `a[i]` and `b[i]` are the runs of seed i of each (paired by seed; the same
    cases, resampled jointly for both arms). See the module docstring. `noise`: the seed
    variance of one run from a noise check, used with one seed; `pooled`: the residual seed
    variance of one run pooled over several models trained under the same seeds (a race
    round, `nas_attn.stats.race.block_noise`), used instead of this pair's own spread."""
    if len(a) != len(b):
        raise ValueError(f"paired by seed: {len(a)} run(s) of A, {len(b)} of B")
    tpa, fpa, fna = stack_seeds(a)
    tpb, fpb, fnb = stack_seeds([r if r.names == a[0].names else r.subset(a[0].names)
                                 for r in b])
    sa, sb = _pooled_per_seed(tpa, fpa, fna), _pooled_per_seed(tpb, fpb, fnb)
    per_seed = sa - sb

    def stat(idx):
        return (_pooled_per_seed(tpa, fpa, fna, idx) - _pooled_per_seed(tpb, fpb, fnb, idx)
                ).mean(0)

    n = tpa.shape[1]
    var_case = case_variance(stat, n, width=2 * tpa.shape[0] * tpa.shape[2])
    diff = _combine(float(per_seed.mean()), per_seed, var_case, n, noise=noise,
                    seed_var_scale=2.0, pooled=pooled)  # two runs differ by twice one's variance
    return _verdict(diff, float(sa.mean()), float(sb.mean()))


def _verdict(diff: Estimate, a: float, b: float) -> Comparison:
    from scipy.stats import t

    if diff.se == 0:
        note = ("no spread between seeds or cases: the noise could not be estimated",)
        return Comparison(diff, 1.0, NO_DIFFERENCE, None, a, b, note)
    stat = diff.value / diff.se
    p = float(2 * t.sf(abs(stat), diff.df))
    verdict = HELPS if diff.low > 0 else HURTS if diff.high < 0 else NO_DIFFERENCE
    return Comparison(diff, p, verdict, detectable(diff.se, diff.df), a, b)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for multiple comparisons (controls the
    family-wise error rate; scipy's `false_discovery_control` offers only BH/BY)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def detectable(se: float, df: float) -> float:
    """The smallest true effect a two-sided test at 5 % detects with 80 % power, given the
    standard error and degrees of freedom of the difference."""
    from scipy.stats import t

    return float(t.ppf(1 - ALPHA / 2, df) + t.ppf(POWER, df)) * se
