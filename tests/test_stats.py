"""Deciding at the noise floor (`nas_attn.stats`): per-case counts that recompute the reported
score exactly, intervals and the paired test against hand-worked examples and scipy.stats, the
three verdicts, Holm's correction, the noise record and the race logic."""
import itertools
import json
import math
import re

import numpy as np
import pytest
from scipy import stats as ss

from nas_attn.stats.compare import (
    CASES_ONLY,
    HELPS,
    HURTS,
    NO_DIFFERENCE,
    NOISE_CHECK,
    SeedNoise,
    case_variance,
    compare,
    estimate,
    holm,
)
from nas_attn.stats.counts import CaseCounts
from nas_attn.inference.metrics import MetricAccumulator


def counts(rows, names=None):
    """CaseCounts from [(tp, fp, fn), ...] per case, one class; or per case a list of such
    triples, one per class."""
    rows = [r if isinstance(r[0], (list, tuple)) else [r] for r in rows]
    arr = np.asarray(rows, np.int64)  # (cases, classes, 3)
    names = names or [f"c{i}" for i in range(len(rows))]
    return CaseCounts(tuple(names), arr[..., 0], arr[..., 1], arr[..., 2])


def random_runs(rng, seeds, cases=12, classes=4, quality=0.8, seed_sd=0.0, case_sd=0.0):
    """Runs of one model: per case and class a reference size and a quality (the share of the
    reference found), with a per-seed offset and per-case offsets."""
    ref = rng.integers(0, 60, (cases, classes)) * (rng.random((cases, classes)) < 0.6)
    case_off = rng.normal(0, case_sd, (cases, 1))
    out = []
    for _ in range(seeds):
        q = np.clip(quality + rng.normal(0, seed_sd) + case_off + rng.normal(0, 0.02, ref.shape),
                    0, 1)
        tp = np.round(ref * q).astype(np.int64)
        fn = ref - tp
        fp = np.round((ref - tp) * 0.7).astype(np.int64)
        out.append(CaseCounts(tuple(f"c{i}" for i in range(cases)), tp, fp, fn))
    return out


# ----- counts --------------------------------------------------------------------------------
def test_recomputed_pooled_dice_equals_the_reported_score():
    rng = np.random.default_rng(0)
    acc = MetricAccumulator(5)
    for i in range(7):
        gt = rng.integers(0, 5, (9, 11)) * (rng.random((9, 11)) < 0.4)
        pred = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, 5, gt.shape), gt)
        acc.add(pred, gt, name=f"img{i}")
    res = acc.result()
    back = CaseCounts.from_dict(json.loads(json.dumps(res["cases"])))
    assert back.names == tuple(f"img{i}" for i in range(7))
    assert back.pooled() == res["dice"]  # exactly, not approximately
    assert back.per_class() == pytest.approx([v for v in res["dice_per_class"]])
    # a subset is scored like a split of only those images
    sub = MetricAccumulator(5)
    rng = np.random.default_rng(0)
    kept = []
    for i in range(7):
        gt = rng.integers(0, 5, (9, 11)) * (rng.random((9, 11)) < 0.4)
        pred = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, 5, gt.shape), gt)
        if i % 2 == 0:
            sub.add(pred, gt)
            kept.append(f"img{i}")
    assert back.subset(kept).pooled() == pytest.approx(sub.result()["dice"], abs=0)


def test_an_empty_prediction_scores_zero_from_the_counts_too():
    # every case has foreground, nothing predicted: TP 0, FP 0, FN > 0
    c = counts([(0, 0, 5), (0, 0, 3)])
    assert c.pooled() == 0.0
    w = np.array([[2, 0], [0, 2], [1, 1]])
    assert np.all(c.pooled(w) == 0.0)
    # nothing in the reference and nothing predicted anywhere: 1, as the metric says
    assert counts([(0, 0, 0)]).pooled() == 1.0


def test_weights_give_the_score_of_a_resample():
    c = counts([[(3, 1, 0), (0, 0, 0)], [(1, 2, 2), (4, 0, 1)], [(0, 0, 0), (2, 2, 2)]])
    # drawing case 0 twice and case 2 once is the split [c0, c0, c2]
    want = CaseCounts(("a", "b", "c"), *(np.stack([getattr(c, k)[i] for i in (0, 0, 2)])
                                         for k in ("tp", "fp", "fn"))).pooled()
    assert c.pooled(np.array([2, 0, 1])) == pytest.approx(want)


# ----- the bootstrap over cases against a hand-worked example -----------------------------------
def test_case_bootstrap_variance_matches_the_exact_bootstrap_distribution():
    # two cases of one class: a perfect one (Dice 1) and a miss (TP 0, FP 1, FN 1).
    # Resamples: {0,0} (1/4) -> 1, {1,1} (1/4) -> 0, {0,1} (1/2) -> 2/(2+1+1) = 0.5.
    # Mean 0.5, variance 1/4 * 0.25 + 1/4 * 0.25 = 0.125.
    c = counts([(1, 0, 0), (0, 1, 1)])
    v = case_variance(lambda idx: c.pooled(_weights(idx, 2)), 2)
    assert v == pytest.approx(0.125, rel=0.06)


def _weights(idx, n):
    idx = np.asarray(idx)
    return np.stack([np.bincount(row, minlength=n) for row in idx.reshape(-1, idx.shape[-1])]
                    ).reshape(*idx.shape[:-1], n)


def test_case_bootstrap_of_a_difference_matches_exact_enumeration():
    a = counts([(5, 1, 0), (2, 3, 1), (0, 0, 4)])
    b = counts([(4, 0, 1), (3, 1, 0), (1, 2, 3)])
    exact = [a.pooled(_weights([i], 3)[0]) - b.pooled(_weights([i], 3)[0])
             for i in itertools.product(range(3), repeat=3)]
    want = float(np.var(exact))
    got = compare([a], [b]).diff.var_case
    assert got == pytest.approx(want, rel=0.08)
    assert compare([a], [b]).diff.value == pytest.approx(a.pooled() - b.pooled())


# ----- against scipy.stats on fixed data -------------------------------------------------------
def test_one_case_several_seeds_is_the_paired_t_test():
    """With a single case there is no case variance: the comparison is scipy's ttest_rel on the
    per-seed scores, its interval ttest_rel's confidence interval."""
    a = [counts([(t, 2, 3)]) for t in (40, 35, 44, 38)]
    b = [counts([(t, 2, 3)]) for t in (30, 33, 31, 36)]
    c = compare(a, b)
    sa = [r.pooled() for r in a]
    sb = [r.pooled() for r in b]
    ref = ss.ttest_rel(sa, sb)
    ci = ref.confidence_interval(0.95)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert (c.diff.low, c.diff.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert c.diff.df == 3 and c.diff.noise == "seeds"
    e = estimate(a)
    one = ss.ttest_1samp(sa, 0).confidence_interval(0.95)
    assert (e.low, e.high) == pytest.approx((one.low, one.high), rel=1e-9)


def test_one_seed_many_cases_is_a_bootstrap_t_interval_over_cases():
    rng = np.random.default_rng(3)
    (run,) = random_runs(rng, 1, cases=30, case_sd=0.1)
    e = estimate([run])
    assert e.noise == CASES_ONLY and e.df == pytest.approx(29) and e.var_seed == 0
    idx = np.arange(30)
    ref = ss.bootstrap((idx,), lambda i, axis=-1: run.pooled(_weights(i, 30)), n_resamples=4000,
                       vectorized=True, method="percentile", rng=np.random.default_rng(9))
    assert e.se == pytest.approx(ref.standard_error, rel=0.08)
    half = ss.t.ppf(0.975, 29) * e.se
    assert (e.low, e.high) == pytest.approx((e.value - half, e.value + half))


# ----- verdicts ---------------------------------------------------------------------------------
def test_the_three_verdicts():
    rng = np.random.default_rng(1)
    base = random_runs(np.random.default_rng(5), 4, quality=0.70, seed_sd=0.01)
    better = random_runs(np.random.default_rng(5), 4, quality=0.85, seed_sd=0.01)
    c = compare(better, base)
    assert c.verdict == HELPS and c.diff.low > 0 and c.p < 0.05
    assert re.search(r", p (= 0\.\d{3}|< 0\.001): helps$", c.text()), c.text()
    assert compare(base, better).verdict == HURTS
    same = random_runs(np.random.default_rng(6), 4, quality=0.70, seed_sd=0.03)
    c = compare(same, base)
    assert c.verdict == NO_DIFFERENCE and c.diff.low < 0 < c.diff.high
    assert c.mde is not None and c.mde > abs(c.diff.value) * 0 and c.mde > 0
    assert "could detect ±" in c.text()
    del rng


def test_a_gain_inside_the_seed_noise_is_not_called_helps():
    # +0.02 on average, but the seeds disagree by much more
    a = [counts([(t, 5, 5)] * 6) for t in (60, 30, 58)]
    b = [counts([(t, 5, 5)] * 6) for t in (50, 45, 30)]
    c = compare(a, b)
    assert c.diff.value > 0 and c.verdict == NO_DIFFERENCE


def test_one_seed_uses_the_noise_check_when_there_is_one():
    rng = np.random.default_rng(2)
    a = random_runs(rng, 1, quality=0.80)
    b = random_runs(rng, 1, quality=0.78)
    bare = compare(a, b)
    assert bare.diff.noise == CASES_ONLY and "training noise not counted" in bare.text()
    noisy = compare(a, b, noise=SeedNoise(var=0.02 ** 2, df=2))
    assert noisy.diff.noise == NOISE_CHECK
    assert noisy.diff.var_seed == pytest.approx(2 * 0.02 ** 2)
    assert noisy.diff.high - noisy.diff.low > bare.diff.high - bare.diff.low


def test_identical_runs_give_no_detectable_difference():
    a = random_runs(np.random.default_rng(4), 2)
    c = compare(a, a)
    assert c.diff.value == 0 and c.verdict == NO_DIFFERENCE


def test_holm_against_a_worked_example():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> kept monotone at 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([]) == []
    assert holm([0.4, 0.9]) == pytest.approx([0.8, 0.9])


def test_comparison_and_estimate_serialise():
    a = random_runs(np.random.default_rng(7), 2)
    b = random_runs(np.random.default_rng(8), 2)
    d = compare(a, b).to_dict()
    json.dumps(d)
    assert d["verdict"] in (HELPS, HURTS, NO_DIFFERENCE) and math.isfinite(d["diff"]["se"])


# ----- the race ---------------------------------------------------------------------------------
QUALITY = {"trial_0001": 0.86, "trial_0002": 0.55, "trial_0003": 0.84, "plain_at_trial_0001": 0.60,
           "plain_unet": 0.58, "a": 0.9, "p": 0.5}


def _entrants():
    from nas_attn.stats.race import Entrant

    return [Entrant("trial_0001", "", True, "plain_at_trial_0001"),
            Entrant("trial_0002", "", True, "plain_at_trial_0001"),
            Entrant("trial_0003", "", True, "plain_at_trial_0001"),
            Entrant("plain_at_trial_0001", "same-size plain", False, None),
            Entrant("plain_unet", "plain_unet", False, None)]


def _train(key, seed):
    """A training replaced by fixed per-case counts: deterministic per (key, seed)."""
    rng = np.random.default_rng([sorted(QUALITY).index(key), seed])
    q = QUALITY[key]
    ref = np.random.default_rng(11).integers(5, 60, (20, 3))  # the same cases for everyone
    qq = np.clip(q + rng.normal(0, 0.01) + rng.normal(0, 0.03, ref.shape), 0, 1)
    tp = np.round(ref * qq).astype(np.int64)
    return CaseCounts(tuple(f"c{i}" for i in range(20)), tp, (ref - tp) // 2, ref - tp)


def _run_race(race, stop_after=None):
    done = 0
    while True:
        plan = race.replay()
        if not plan.pending:
            return plan
        for key, seed in plan.pending:
            if stop_after is not None and done == stop_after:
                return None
            race.add(key, seed, _train(key, seed))
            done += 1


def test_race_drops_a_clearly_worse_candidate_and_keeps_the_plain_unet():
    from nas_attn.stats.race import Race

    race = Race(_entrants(), min_seeds=2, max_seeds=5)
    plan = _run_race(race)
    first = plan.rounds[0]
    assert first.best == "trial_0001" and first.seeds == 2
    assert "trial_0002" in first.dropped and "plain_unet" in first.dropped
    # the plain UNet of the best's size is never dropped, though clearly worse
    assert "plain_at_trial_0001" not in first.dropped and "plain_at_trial_0001" not in \
        first.comparisons
    assert first.comparisons["trial_0002"].verdict == "hurts"
    assert all(p >= first.comparisons[k].p for k, p in first.adjusted_p.items())
    assert "plain_at_trial_0001" in plan.survivors and "trial_0001" in plan.survivors
    assert plan.over in ("settled", "max_seeds", "budget")
    assert race.champion(plan) in ("trial_0001", "trial_0003")
    assert race.trainings() <= race.budget


def test_a_killed_race_resumes_from_its_last_finished_training():
    from nas_attn.stats.race import Race

    whole = _run_race(Race(_entrants()))
    for stop in (0, 3, 7, 11):
        partial = Race(_entrants())
        assert _run_race(partial, stop_after=stop) is None
        resumed = Race(_entrants())
        for key, runs in partial.runs.items():  # what the killed race had recorded
            for seed, c in runs.items():
                resumed.add(key, seed, c)
        plan = resumed.replay()
        assert set(plan.pending).isdisjoint(
            (k, s) for k, v in partial.runs.items() for s in v)
        final = _run_race(resumed)
        assert [r.to_dict() for r in final.rounds] == [r.to_dict() for r in whole.rounds]
        assert final.survivors == whole.survivors


def test_race_budget_and_settling():
    from nas_attn.stats.race import Entrant, Race

    with pytest.raises(ValueError, match="cannot train"):
        Race(_entrants(), budget=9)
    race = Race([Entrant("a", "", True, "p"), Entrant("p", "", False, None)])
    plan = _run_race(race)
    assert plan.over == "settled" and len(plan.rounds) == 1 and race.trainings() == 4


# ----- the noise record -------------------------------------------------------------------------
def test_noise_record_plans_seeds_and_round_trips(tmp_path):
    from nas_attn.stats.noise import NoiseRecord, load_record, save_record

    runs = random_runs(np.random.default_rng(12), 3, cases=15, seed_sd=0.02)
    rec = NoiseRecord(runs, [0, 1, 2], "ab" * 32, "somewhere", "2D d2 w8-16-32 | plain",
                      epochs=30)
    assert rec.run_sd == pytest.approx(np.std([r.pooled() for r in runs], ddof=1))
    assert rec.detectable(10) < rec.detectable(3) < rec.detectable(2)
    need = rec.seeds_needed(0.01)
    assert need is None or rec.detectable(need) <= 0.01 < rec.detectable(need - 1) or need == 2
    assert (rec.seeds_needed(0.005) or 10 ** 6) >= (need or 10 ** 6)
    assert rec.pair.verdict in (HELPS, HURTS, NO_DIFFERENCE)
    path = save_record(rec, tmp_path)
    back = load_record(tmp_path, "ab" * 32)
    assert path.exists() and back is not None and back.scores == rec.scores
    assert back.detectable(3) == pytest.approx(rec.detectable(3))
    assert load_record(tmp_path, "cd" * 32) is None
    with pytest.raises(Exception, match="at least 2 seeds"):
        NoiseRecord(runs[:1], [0], "x", "", "")
