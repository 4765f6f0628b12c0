"""convjax.stats: the crossed two-way comparison against hand-computed cases, an
independent floating-point ANOVA and scipy's t-tests in its limits; Holm; McNemar; the
argument checks; and a small calibration run (the full one is
``python -m experiments.calibrate_stats``)."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sst

from convjax import stats
from experiments import calibrate_stats as cal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _float_anova(d):
    """The textbook two-way ANOVA without replication, in floats (means, not counts)."""
    d = np.asarray(d, np.float64)
    s, n = d.shape
    m, rm, cm = d.mean(), d.mean(1), d.mean(0)
    ms_s = n * np.sum((rm - m) ** 2) / (s - 1)
    ms_i = s * np.sum((cm - m) ** 2) / (n - 1)
    ms_r = np.sum((d - rm[:, None] - cm[None, :] + m) ** 2) / ((s - 1) * (n - 1))
    return ms_s, ms_i, ms_r


def test_compare_by_hand_two_seeds_two_images():
    # d = a - b = [[1, 0], [0, 0]]: mean 1/4; MS_seed = MS_image = MS_resid = 1/4, so
    # neither seed nor image component exceeds the residual: var = MS_resid / 4 = 1/16,
    # se = 1/4 = 25 points on 1 degree of freedom; t = 1 and P(|t_1| > 1) = 1/2.
    a = np.array([[1, 1], [0, 1]], bool)
    b = np.array([[0, 1], [0, 1]], bool)
    r = stats.compare(a, b)
    assert r.difference == 25.0 and r.se == pytest.approx(25.0, abs=1e-12)
    assert r.df == pytest.approx(1.0) and r.p_value == pytest.approx(0.5, abs=1e-12)
    t = sst.t.ppf(0.975, 1)  # 12.706
    assert (r.low, r.high) == pytest.approx((25 - 25 * t, 25 + 25 * t), abs=1e-9)
    assert r.verdict == "inconclusive" and (r.correct_a, r.correct_b) == (3, 2)


def test_compare_matches_a_float_anova_with_satterthwaite():
    rng = np.random.default_rng(3)
    # Seed shifts, and per-image difficulty that differs between a and b.
    pa = np.clip(rng.beta(2, 0.1, 3000)[None, :] - 0.01 * np.arange(5)[:, None], 0, 1)
    a = rng.random((5, 3000)) < pa
    b = rng.random((5, 3000)) < rng.beta(2, 0.1, 3000)
    r = stats.compare(a, b)
    ms_s, ms_i, ms_r = _float_anova(a.astype(int) - b)
    assert ms_s > ms_r and ms_i > ms_r  # both components kept in this case
    var = (ms_s + ms_i - ms_r) / a.size
    df = (ms_s + ms_i - ms_r) ** 2 / (ms_s ** 2 / 4 + ms_i ** 2 / 2999
                                      + ms_r ** 2 / (4 * 2999))
    assert r.se == pytest.approx(100 * math.sqrt(var), rel=1e-10)
    assert r.df == pytest.approx(df, rel=1e-10)
    d = 100 * (a.mean() - b.mean())
    assert r.difference == pytest.approx(d, abs=1e-12)
    assert r.p_value == pytest.approx(2 * sst.t.sf(abs(d) / r.se, df), rel=1e-9)


def test_compare_reduces_to_the_paired_t_tests_at_its_limits():
    rng = np.random.default_rng(0)
    # Seed noise only (every image alike within a seed): the paired t-test over seeds.
    acc = np.array([0.90, 0.93, 0.91, 0.95, 0.92])
    a = rng.random((5, 4000)) < acc[:, None]
    b = rng.random((5, 4000)) < 0.92
    r = stats.compare(a, b)
    if r.var_image == 0:
        ref = sst.ttest_rel(a.mean(1), b.mean(1))
        assert r.df == pytest.approx(4) and r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    else:  # pragma: no cover - the data above keep the seed component only
        pytest.fail(f"expected the image component truncated, got {r}")
    # Image noise only (the same outcome on every seed): the paired test over images.
    a1 = np.repeat(rng.random((1, 4000)) < 0.95, 5, axis=0)
    b1 = np.repeat(rng.random((1, 4000)) < 0.94, 5, axis=0)
    r = stats.compare(a1, b1)
    ref = sst.ttest_1samp(a1[0].astype(int) - b1[0], 0.0)
    assert r.var_seed == 0.0 and r.var_residual == 0.0
    assert r.df == pytest.approx(3999) and r.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_identical_per_seed_differences_have_exactly_zero_seed_variance():
    # The case where a float std of 3.3e-8 gave t = 68,493: per-seed correct counts
    # [9786, 9790, 9801, 9779, 9795] for b, and 10 more on every seed for a.
    counts = [9786, 9790, 9801, 9779, 9795]
    rng = np.random.default_rng(1)
    b = np.zeros((5, 10_000), bool)
    for s, k in enumerate(counts):
        b[s, rng.permutation(10_000)[:k]] = True
    a = b.copy()
    for s in range(5):
        wrong = np.flatnonzero(~a[s])
        a[s, rng.choice(wrong, 10, replace=False)] = True  # 10 other images per seed
    assert np.all(a.sum(1) - b.sum(1) == 10)
    r = stats.compare(a, b)
    assert r.seed_sd == 0.0 and r.var_seed == 0.0 and r.difference == pytest.approx(0.1)
    # The noise left is the test images': t is ordinary, the verdict comes from it.
    assert abs(r.difference / r.se) < 10 and r.se > 0.01
    assert stats.mean_ci([0.98] * 5)["std"] == 0.0


def test_constant_tables_give_no_noise_estimate():
    a = np.ones((3, 50), bool)
    r = stats.compare(a, a, margin=0.2)
    assert r.difference == 0.0 and r.se == 0.0 and math.isnan(r.p_value)
    assert math.isnan(r.low) and r.verdict == "inconclusive"
    r = stats.compare(a, ~a, margin=0.2)  # a constant difference: no noise estimate either
    assert r.difference == 100.0 and r.se == 0.0 and r.verdict == "inconclusive"
    assert math.isnan(stats.accuracy_interval(a).low)


def test_equivalence_is_two_one_sided_tests_at_the_same_level():
    rng = np.random.default_rng(5)
    a = rng.random((5, 10_000)) < 0.98
    b = a.copy()
    for s in range(5):  # b trades 30 images right for 30 wrong on every seed
        b[s, rng.choice(np.flatnonzero(a[s]), 30, replace=False)] = False
        b[s, rng.choice(np.flatnonzero(~a[s]), 30, replace=False)] = True
    r = stats.compare(a, b, margin=0.2)
    r90 = stats.compare(a, b, confidence=0.90)
    inside = -0.2 < r90.low and r90.high < 0.2  # TOST at 5% = the 90% interval inside
    assert inside and r.p_equivalence < 0.05 and r.verdict == "equivalent"
    assert stats.compare(a, b).verdict == "inconclusive"  # no margin: never equivalent
    narrow = stats.compare(a, b, margin=0.02)  # a margin below the noise: not shown
    assert narrow.p_equivalence > 0.05 and narrow.verdict == "inconclusive"
    # Holm-adjusted p-values re-judge the same comparison.
    assert r.with_p(0.5, 0.2).verdict == "inconclusive"
    assert r.with_p(0.001, 0.2).verdict == ("a better" if r.difference > 0 else "b better")


def test_accuracy_interval_by_hand_and_against_the_mean():
    c = np.zeros((2, 4), bool)
    c[:, :3] = True
    iv = stats.accuracy_interval(c)  # only image noise: the t-interval over 4 images
    ref = sst.t.interval(0.95, 3, loc=75.0, scale=100 * sst.sem([1, 1, 1, 0]))
    assert iv.mean == 75.0 and (iv.low, iv.high) == pytest.approx(ref, rel=1e-12)
    # Every seed gets the same images right: five seeds know the accuracy no better than
    # one, so the interval is the t-interval over the 10,000 images of one seed.
    rng = np.random.default_rng(2)
    row = rng.random(10_000) < 0.985
    iv = stats.accuracy_interval(np.repeat(row[None], 5, axis=0), confidence=0.99)
    ref = sst.t.interval(0.99, 9999, loc=100 * row.mean(), scale=100 * sst.sem(row))
    assert iv.mean == pytest.approx(100 * row.mean()) and iv.df == pytest.approx(9999)
    assert (iv.low, iv.high) == pytest.approx(ref, rel=1e-10)


def test_holm_adjusts_in_the_given_order():
    # Sorted 0.005, 0.01, 0.03, 0.04 -> 4x, 3x, 2x, 1x = 0.02, 0.03, 0.06, 0.04 -> running
    # max 0.02, 0.03, 0.06, 0.06.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0] and stats.holm([]) == []
    # Ties, in either order; adjusted never below raw and monotone in the raw order.
    assert stats.holm([0.01, 0.02, 0.01]) == pytest.approx([0.03, 0.03, 0.03])
    raw = np.random.default_rng(0).random(12) / 10
    adj = np.array(stats.holm(raw))
    assert np.all(adj >= raw) and np.all(np.diff(adj[np.argsort(raw)]) >= 0)
    assert stats.holm([0.02]) == [0.02]
    for bad in ([0.1, math.nan], [1.2], [-0.1]):
        with pytest.raises(ValueError, match=r"in \[0, 1\]"):
            stats.holm(bad)
    with pytest.raises(ValueError, match="1-D"):
        stats.holm([[0.1]])


def test_min_detectable_difference():
    # 80% power at alpha 0.05 with many degrees of freedom: (1.960 + 0.842) * se.
    assert stats.min_detectable_difference(0.1, 1e9) == pytest.approx(0.2802, abs=1e-4)
    # On 4 degrees of freedom: (t_{0.975, 4} + t_{0.8, 4}) * se = (2.7764 + 0.9410) * se.
    assert stats.min_detectable_difference(0.1, 4) == pytest.approx(0.37174, abs=1e-4)
    assert math.isnan(stats.min_detectable_difference(0.0, 4))


@pytest.mark.parametrize("args, kwargs, err, match", [
    ((np.ones((5, 10), bool), np.ones((5, 9), bool)), {}, ValueError, r"same shape.*\(5, 10\)"),
    ((np.ones(10, bool), np.ones(10, bool)), {}, ValueError, r"\[S, N\].*\(10,\)"),
    ((np.ones((1, 10), bool), np.ones((1, 10), bool)), {}, ValueError, "S >= 2 seeds.*S=1"),
    ((np.full((2, 10), 3), np.ones((2, 10), int)), {}, ValueError, "class indices"),
    ((np.ones((2, 10)), np.ones((2, 10))), {}, TypeError, "dtype float64"),
    ((np.ones((2, 10), bool),) * 2, {"confidence": 0}, ValueError, "0 < confidence < 1"),
    ((np.ones((2, 10), bool),) * 2, {"confidence": 1.5}, ValueError, "got 1.5"),
    ((np.ones((2, 10), bool),) * 2, {"margin": 0}, ValueError, "margin must be"),
    ((np.ones((2, 10), bool),) * 2, {"margin": math.nan}, ValueError, "margin must be"),
    ((np.ones((2, 10), bool),) * 2, {"margin": True}, ValueError, "margin must be"),
    ((np.ones((2, 1), bool),) * 2, {}, ValueError, r"N >= 2 test images.*N=1"),
])
def test_compare_refuses_bad_arguments(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        stats.compare(*args, **kwargs)


def test_other_functions_refuse_bad_arguments():
    for conf in (0, 1, 1.5, True):
        with pytest.raises(ValueError, match="confidence"):
            stats.mean_ci([0.9, 0.91], confidence=conf)
    with pytest.raises(ValueError, match="S >= 2 seeds"):
        stats.accuracy_interval(np.ones((1, 10), bool))
    with pytest.raises(ValueError, match="0 < confidence < 1"):
        stats.accuracy_interval(np.ones((2, 10), bool), confidence=95)
    # NumPy scalars are numbers too.
    r = stats.compare(np.ones((2, 10), bool), np.ones((2, 10), bool),
                      confidence=np.float32(0.9), margin=np.float32(0.2))
    assert r.confidence == pytest.approx(0.9) and r.margin == pytest.approx(0.2)
    with pytest.raises(ValueError, match="class indices"):
        stats.mcnemar(np.array([0, 3, 7]), np.array([0, 3, 1]))


def test_mean_ci_matches_scipy_t_interval():
    v = [0.9912, 0.9921, 0.9905, 0.9917, 0.9909]
    r = stats.mean_ci(v)
    lo, hi = sst.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=sst.sem(v))
    assert r["n"] == 5 and r["mean"] == pytest.approx(np.mean(v), abs=1e-15)
    assert r["std"] == pytest.approx(np.std(v, ddof=1), rel=1e-12)
    assert (r["low"], r["high"]) == pytest.approx((lo, hi), rel=1e-12)
    # By hand: 1, 2, 3: mean 2, std 1, t_{0.975, 2} = 4.302653, half-width 2.484138.
    assert stats.mean_ci([1.0, 2.0, 3.0])["half_width"] == pytest.approx(2.484138, abs=1e-6)
    one = stats.mean_ci([0.99])
    assert one["mean"] == 0.99 and math.isnan(one["half_width"])


def test_mcnemar_exact_by_hand_and_against_scipy():
    # 1 image only A gets right, 5 only B: p = 2 * P[Bin(6, 1/2) <= 1] = 2 * 7/64.
    a = np.array([1] * 10 + [1] + [0] * 5 + [0] * 4, bool)
    b = np.array([1] * 10 + [0] + [1] * 5 + [0] * 4, bool)
    r = stats.mcnemar(a, b)
    assert (r["only_a"], r["only_b"], r["n"]) == (1, 5, 20)
    assert r["p"] == pytest.approx(14 / 64, abs=1e-12)
    assert r["p"] == pytest.approx(sst.binomtest(1, 6, 0.5).pvalue, abs=1e-12)
    assert stats.mcnemar(a, a)["p"] == 1.0  # never disagree: nothing to test
    with pytest.raises(ValueError, match="one entry per test image"):
        stats.mcnemar(a, b[:5])


def test_binomial_sd_scale():
    # 99.2% on 10,000 images: about 0.09 points.
    assert 100 * stats.binomial_sd(0.992, 10_000) == pytest.approx(0.0891, abs=1e-4)


def test_small_calibration_false_positives_in_both_regimes():
    """100 null simulations per regime (200 cases; 5 seeds x 2,000 images): compare keeps
    its false-positive rate near 5% in both, where the seed-only t-test, blind to the
    test set's noise, does not when image noise dominates."""
    methods = ("two-way", "seed-only t")
    fp = {}
    for i, name in enumerate(("image", "seed")):
        r = cal.calibrate(cal.REGIMES[name], sims=100, seeds=5, images=2000, seed=10 + i,
                          methods=methods, power=False)
        fp[name] = {m: r["false_positives"][m] / 100 for m in methods}
    assert fp["image"]["two-way"] <= 0.10 and fp["seed"]["two-way"] <= 0.10, fp
    assert fp["image"]["seed-only t"] >= 2 * max(fp["image"]["two-way"], 0.05), fp


@pytest.mark.slow
def test_calibration_script_runs_and_prints_its_tables():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.calibrate_stats", "--sims=4", "--images=300",
         "--bootstrap=5"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for m in cal.METHODS:
        assert "| image | " in out.stdout and f"| {m} |" in out.stdout
    assert "| seed | " in out.stdout and "stats.compare on [5, 300] inputs:" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "experiments.calibrate_stats", "--sims=1"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode != 0 and "--sims must be >= 2, got 1" in bad.stderr
