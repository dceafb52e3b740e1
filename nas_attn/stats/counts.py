"""Per-case counts: the true positives, false positives and false negatives of every case
(image or volume) and foreground class, from which the pooled Dice of the split, of any subset
of its cases or of any resample of them is recomputed exactly.

`nas_attn.inference.metrics` is the one definition of the score; it fills a `CaseCounts` as it
adds images, and its reported `dice` equals `CaseCounts.pooled()` to the last bit (the same sums,
the same float operations): `tests/test_stats.py` checks it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import NasAttnError


def pooled_from_sums(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Pooled Dice from summed counts of shape (..., K): per class 2·TP / (2·TP + FP + FN),
    NaN where a class is in neither the reference nor the prediction; then the mean over the
    classes scored, 1.0 where none is (nothing anywhere: perfect agreement). Shape (...)."""
    tp = np.asarray(tp, dtype=np.float64)
    ref = tp + np.asarray(fn, dtype=np.float64)
    prd = tp + np.asarray(fp, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(ref + prd > 0, 2.0 * tp / (ref + prd), np.nan)
    scored = ~np.isnan(dice)
    n = scored.sum(axis=-1)
    total = np.where(scored, dice, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), 1.0)


@dataclass(frozen=True, eq=False)
class CaseCounts:
    """`tp`, `fp`, `fn`: int64 arrays (cases, foreground classes) in the order of `names`."""

    names: tuple[str, ...]
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    def __post_init__(self):
        shapes = {np.shape(self.tp), np.shape(self.fp), np.shape(self.fn)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2 or \
                next(iter(shapes))[0] != len(self.names):
            raise NasAttnError(f"per-case counts: tp, fp and fn must be (cases, classes) arrays "
                               f"with one row per case name ({len(self.names)} names), got "
                               f"shapes {sorted(shapes)}")

    @classmethod
    def from_confusions(cls, names: Sequence[str], confusions: Sequence[np.ndarray],
                        classes: int) -> "CaseCounts":
        """From each case's (classes, classes) confusion matrix (rows: reference)."""
        k = classes - 1
        tp = np.zeros((len(confusions), k), np.int64)
        fp, fn = tp.copy(), tp.copy()
        for i, cm in enumerate(confusions):
            cm = np.asarray(cm, np.int64)
            d = np.diag(cm)[1:]
            tp[i], fp[i], fn[i] = d, cm.sum(0)[1:] - d, cm.sum(1)[1:] - d
        return cls(tuple(str(n) for n in names), tp, fp, fn)

    @property
    def cases(self) -> int:
        return len(self.names)

    @property
    def classes(self) -> int:
        """Foreground classes (the columns)."""
        return int(np.shape(self.tp)[1])

    def pooled(self, weights: np.ndarray | None = None) -> float | np.ndarray:
        """The pooled Dice of the split; with `weights` (cases,) or (replicates, cases), e.g.
        how often each case is drawn in a bootstrap resample, one score per row."""
        if weights is None:
            return float(pooled_from_sums(self.tp.sum(0), self.fp.sum(0), self.fn.sum(0)))
        w = np.asarray(weights, dtype=np.float64)
        return pooled_from_sums(w @ self.tp, w @ self.fp, w @ self.fn)

    def per_class(self) -> list[float | None]:
        """The pooled Dice of each foreground class (None where absent from both)."""
        tp, fp, fn = (self.tp.sum(0).astype(np.float64), self.fp.sum(0), self.fn.sum(0))
        den = 2 * tp + fp + fn
        return [None if d == 0 else float(2 * t / d) for t, d in zip(tp, den)]

    def per_case(self) -> np.ndarray:
        """Each case's own Dice (mean over the classes in its reference or prediction; NaN
        when it has none): what the per-case picture plots, never what decides."""
        tp = self.tp.astype(np.float64)
        den = 2 * tp + self.fp + self.fn
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(den > 0, 2 * tp / den, np.nan)
        scored = ~np.isnan(d)
        n = scored.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.where(scored, d, 0).sum(1) / np.maximum(n, 1), np.nan)

    def subset(self, names: Sequence[str]) -> "CaseCounts":
        """These cases, in this order (a name not held raises)."""
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise NasAttnError(f"per-case counts have no case {missing[0]!r} "
                               f"({len(missing)} missing)")
        idx = [index[n] for n in names]
        return CaseCounts(tuple(names), self.tp[idx], self.fp[idx], self.fn[idx])

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "tp": self.tp.tolist(), "fp": self.fp.tolist(),
                "fn": self.fn.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CaseCounts":
        try:
            names = tuple(str(n) for n in d["names"])
            arrays = [np.asarray(d[k], dtype=np.int64).reshape(len(names), -1)
                      for k in ("tp", "fp", "fn")]
        except (KeyError, TypeError, ValueError) as e:
            raise NasAttnError(f"per-case counts are damaged or of another format: {e}") from None
        return cls(names, *arrays)


def stack_seeds(runs: Sequence[CaseCounts]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seeds, cases, classes) arrays of tp, fp, fn, the cases aligned on the first run's
    names (every run must hold the same cases)."""
    if not runs:
        raise NasAttnError("no runs to compare (no per-case counts recorded)")
    names = runs[0].names
    aligned = [r if r.names == names else r.subset(names) for r in runs]
    if any(r.cases != len(names) for r in runs):
        raise NasAttnError("the runs were scored on different cases; a paired comparison needs "
                           "the same cases")
    return tuple(np.stack([getattr(r, k) for r in aligned]) for k in ("tp", "fp", "fn"))


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
