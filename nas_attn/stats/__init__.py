"""How sure a score is and how decisions are made (docs/score.md, docs/decisions.md).
numpy and scipy only: no torch, no optuna.

- `counts`   `CaseCounts`: TP, FP, FN per case and class, from which the pooled Dice of any
             subset or resample of the cases is recomputed exactly.
- `compare`  `estimate` (a score with its 95 % interval over cases and seeds) and `compare`
             (the one paired comparison: difference, interval, p-value, verdict helps / hurts /
             no detectable difference with the smallest detectable effect); `holm`.
- `noise`    `NoiseRecord`: the plain UNet under several seeds; the noise floor of a data set,
             the smallest detectable gain, the seeds needed; stored per data set.
- `race`     `Race`: finalize's elimination race (what to train next, what to drop).
- `picture`  the per-case differences of two models as a PNG.
"""
