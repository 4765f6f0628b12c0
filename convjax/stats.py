"""Statistics for comparing trained models: is a difference real, and how well is an
accuracy known, counting both sources of noise?

An accuracy measured on ``S`` seeds and ``N`` test images varies for two reasons: another
seed trains another network (seed noise), and another test set of the same size holds
other images (test-set noise). All seeds share the same test images, so the second part
does **not** shrink with more seeds: a test that looks at seed-to-seed variation alone
calls null differences "real" far too often when two architectures differ in *which*
images they get right (``python -m experiments.calibrate_stats`` measures it).

The tools work on the per-image outcomes, boolean ``[S, N]`` arrays (seed ``s``, test
image ``i``: did the model get it right?):

* :func:`compare`: is config A better than config B, worse, equivalent within a margin,
  or is the evidence inconclusive? An interval and a p-value for the accuracy
  difference, covering seeds and test images;
* :func:`accuracy_interval`: one config's accuracy with the same two noise sources;
* :func:`holm`: Holm's step-down adjustment of the p-values of a family of comparisons;
* :func:`mcnemar`: per seed, are the two models' disagreements lopsided? A detail, not a
  verdict (one p-value per seed cannot be vote-counted into one);
* :func:`mean_ci`: the t-interval of a mean over seeds, for any per-seed number;
* :func:`binomial_sd`: the standard deviation of one accuracy on ``n`` images.

**The method** (:func:`compare`, :func:`accuracy_interval`): a crossed two-way variance
decomposition. The outcome ``y[s, i]`` (a difference ``a - b`` in {-1, 0, 1}, or a
correct flag in {0, 1}) is modelled as ``mu + seed_s + image_i + residual_si`` with seeds
and images both random samples. The mean over the ``S x N`` table then has variance
``var_seed / S + var_image / N + var_residual / (S N)``; the two-way ANOVA mean squares
estimate the three components (a negative estimate is set to 0), and Satterthwaite's
formula gives the degrees of freedom of the t reference distribution. With image noise
negligible this is the paired t-test over seeds (``S - 1`` degrees of freedom); with seed
noise negligible it is the paired test over images. It was chosen by its calibration
(``python -m experiments.calibrate_stats``, 1,000 simulated null pairs per regime): a
false-positive rate of 4.3% when image noise dominates and 4.0% when seed noise does,
where the seed-only t-test gives 20% in the first regime, a paired test over images 80%
in the second, and a crossed bootstrap (seeds and images resampled) 13% in the second
(five seeds resampled, a normal reference). All sums
are exact integer counts, so a difference that is the same on every seed has exactly
zero seed variance (no float round-off posing as noise).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a = rng.random((5, 2000)) < 0.98          # 5 seeds x 2,000 test images
>>> r = compare(a, a)                         # a model against itself
>>> r.difference, r.verdict
(0.0, 'inconclusive')
>>> holm([0.01, 0.04, 0.03])
[0.03, 0.06, 0.06]
>>> mcnemar([1, 1, 0, 0, 1], [1, 0, 1, 1, 1])["only_b"]
2
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Sequence

import numpy as np
from scipy import stats as _st

__all__ = ["Comparison", "Interval", "compare", "accuracy_interval", "holm", "verdict",
           "min_detectable_difference", "mcnemar", "mean_ci", "binomial_sd", "VERDICTS"]

#: The four answers of :func:`compare`.
VERDICTS = ("a better", "b better", "equivalent", "inconclusive")


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


def _real(x) -> bool:
    """A real number (Python or NumPy), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _confidence(confidence, where: str) -> float:
    if not _real(confidence) or not 0 < confidence < 1:
        raise ValueError(f"{where}: confidence must be a number with 0 < confidence < 1 "
                         f"(e.g. 0.95), got {confidence!r}")
    return float(confidence)


def _flags(x, name: str, where: str) -> np.ndarray:
    """A boolean ``[S, N]`` array of correct/wrong flags (bool, or integers 0/1)."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{where}: {name} must be [S, N] (seeds x test images), got "
                         f"shape {a.shape}")
    if a.dtype != bool:
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{where}: {name} must hold correct/wrong flags (bool, or "
                            f"integers 0/1), got dtype {a.dtype}")
        bad = a[(a != 0) & (a != 1)]
        if bad.size:
            raise ValueError(f"{where}: {name} must hold correct/wrong flags (0/1), got "
                             f"the value {bad.flat[0]} (class indices? pass predictions "
                             f"== labels)")
        a = a.astype(bool)
    return a


# --------------------------------------------------------------------------------------
# The crossed two-way variance decomposition
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Decomposition:
    mean: float          # the mean of the table (a fraction)
    var: float           # estimated variance of that mean
    df: float            # Satterthwaite degrees of freedom (nan when var == 0)
    var_seed: float      # variance components, per cell
    var_image: float
    var_residual: float


def _decompose(y: np.ndarray) -> _Decomposition:
    """Two-way random-effects ANOVA of an ``[S, N]`` table of values in {-1, 0, 1} (one
    per cell, ``S, N >= 2``), in exact integer arithmetic up to the final divisions."""
    s, n = y.shape
    rows = y.sum(axis=1, dtype=np.int64)      # per seed
    cols = y.sum(axis=0, dtype=np.int64)      # per image
    total = int(rows.sum())
    sq = int(np.count_nonzero(y))             # sum of y^2: |y| <= 1
    r2 = int(np.sum(rows * rows))
    c2 = int(np.sum(cols * cols))
    # Sums of squares times S*N, as integers: exact, and exactly 0 when a factor is flat.
    ss_seed = s * r2 - total * total
    ss_image = n * c2 - total * total
    ss_resid = s * n * sq - s * r2 - n * c2 + total * total
    sn = s * n
    ms_seed = ss_seed / (sn * (s - 1))
    ms_image = ss_image / (sn * (n - 1))
    ms_resid = ss_resid / (sn * (s - 1) * (n - 1))
    # var(mean) = var_seed/S + var_image/N + var_resid/(SN). E[ms_seed] = var_resid +
    # N var_seed, E[ms_image] = var_resid + S var_image, E[ms_resid] = var_resid. With a
    # component truncated at 0 the estimate is a sum of mean squares (the comparisons are
    # done on the integers, so a tie is a tie):
    keep_seed = ss_seed * (n - 1) > ss_resid
    keep_image = ss_image * (s - 1) > ss_resid
    dfs = {"seed": s - 1, "image": n - 1, "resid": (s - 1) * (n - 1)}
    ms = {"seed": ms_seed, "image": ms_image, "resid": ms_resid}
    if keep_seed and keep_image:
        coef = {"seed": 1.0, "image": 1.0, "resid": -1.0}
    elif keep_seed:
        coef = {"seed": 1.0}
    elif keep_image:
        coef = {"image": 1.0}
    else:
        coef = {"resid": 1.0}
    num = sum(c * ms[k] for k, c in coef.items())
    var = max(num, 0.0) / sn
    den = sum((c * ms[k]) ** 2 / dfs[k] for k, c in coef.items())
    df = num * num / den if var > 0 and den > 0 else math.nan
    return _Decomposition(
        mean=total / sn, var=var, df=df,
        var_seed=max(ms_seed - ms_resid, 0.0) / n,
        var_image=max(ms_image - ms_resid, 0.0) / s,
        var_residual=ms_resid)


# --------------------------------------------------------------------------------------
# compare, accuracy_interval
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found. Differences and intervals are in accuracy points
    (percent of test images): ``+0.41`` means a gets 0.41% more of the images right.

    Attributes:
      difference: accuracy of a minus accuracy of b, over all seeds and images.
      low, high: the two-sided ``confidence`` interval of the difference (seeds and test
        images both sampled); NaN when the noise cannot be estimated.
      se: its standard error; ``df``: its Satterthwaite degrees of freedom.
      p_value: two-sided p of "difference != 0" from the t reference.
      p_equivalence: the two one-sided tests' p (the larger of the two) of ``|difference|
        < margin``; NaN without a margin.
      verdict: ``"a better"``, ``"b better"``, ``"equivalent"`` or ``"inconclusive"``.
      seeds, images: ``S``, ``N``; ``correct_a``, ``correct_b``: images got right,
        summed over seeds.
      seed_sd: standard deviation over seeds of the per-seed difference (points; the
        noise a seed-only test sees). ``var_seed``, ``var_image``, ``var_residual``: the
        variance components of one cell's difference (fractions squared).
      confidence, margin: as given.
    """

    difference: float
    low: float
    high: float
    se: float
    df: float
    p_value: float
    p_equivalence: float
    verdict: str
    seeds: int
    images: int
    correct_a: int
    correct_b: int
    seed_sd: float
    var_seed: float
    var_image: float
    var_residual: float
    confidence: float
    margin: float | None

    def with_p(self, p_value: float, p_equivalence: float | None = None) -> "Comparison":
        """The same comparison judged at other p-values (Holm-adjusted ones, say): the
        verdict is recomputed; the interval is left as it is."""
        p_eq = self.p_equivalence if p_equivalence is None else float(p_equivalence)
        return dataclasses.replace(
            self, p_value=float(p_value), p_equivalence=p_eq,
            verdict=verdict(self.difference, p_value, p_eq, self.confidence))

    def mde(self, power: float = 0.8, alpha: float | None = None) -> float:
        """:func:`min_detectable_difference` at this comparison's standard error."""
        return min_detectable_difference(self.se, self.df, power=power,
                                         alpha=1 - self.confidence if alpha is None
                                         else alpha)


def verdict(difference: float, p_value: float, p_equivalence: float,
            confidence: float = 0.95) -> str:
    """The verdict at level ``alpha = 1 - confidence``: ``"a better"``/``"b better"``
    when ``p_value < alpha``; else ``"equivalent"`` when ``p_equivalence < alpha``; else
    ``"inconclusive"``. NaN p-values never reject."""
    alpha = 1 - _confidence(confidence, "stats.verdict")
    if p_value < alpha:  # NaN < alpha is False
        return "a better" if difference > 0 else "b better"
    if p_equivalence < alpha:
        return "equivalent"
    return "inconclusive"


def min_detectable_difference(se: float, df: float, power: float = 0.8,
                              alpha: float = 0.05) -> float:
    """The smallest true difference (same unit as ``se``) that a two-sided t-test at
    level ``alpha`` with standard error ``se`` and ``df`` degrees of freedom detects with
    probability ``power``, by the usual approximation ``(t_{1-alpha/2, df} + t_{power,
    df}) * se`` (the exact noncentral-t answer is 1.2% larger at 4 degrees of freedom,
    equal from about 20). NaN when ``se`` is NaN or 0 (no noise estimate)."""
    if not 0 < power < 1 or not 0 < alpha < 1:
        raise ValueError(f"stats.min_detectable_difference: need 0 < power < 1 and "
                         f"0 < alpha < 1, got power={power!r}, alpha={alpha!r}")
    if not se > 0 or not df > 0:
        return math.nan
    return float((_st.t.ppf(1 - alpha / 2, df) + _st.t.ppf(power, df)) * se)


def compare(correct_a, correct_b, *, confidence: float = 0.95,
            margin: float | None = None) -> Comparison:
    """Is config a more accurate than config b, less, equivalent within ``margin``, or
    can the data not tell?

    Args:
      correct_a, correct_b: ``[S, N]`` bool (or 0/1 integers): row ``s`` is seed ``s``,
        column ``i`` test image ``i``, the same seed and image in both (paired).
        ``S >= 2``: one seed cannot measure the seed noise.
      confidence: of the interval; the tests run at ``alpha = 1 - confidence``.
      margin: equivalence margin in points (> 0): ``"equivalent"`` when two one-sided
        tests at ``alpha`` show ``-margin < difference < margin`` (the ``1 - 2 alpha``
        interval lies inside the margin). None: never ``"equivalent"``.

    Returns:
      A :class:`Comparison`. Computed from integer counts: the difference is
      ``(correct_a - correct_b) / (S N)`` exactly, and the variance of ``a - b`` per
      cell is split into seed, image and residual components (module docstring). When
      the table of differences is constant (the models agree everywhere, say) the noise
      cannot be estimated: ``se`` is 0, the interval and p-values NaN, the verdict
      ``"inconclusive"``.

    >>> import numpy as np
    >>> b = np.zeros((3, 100), bool); b[:, :90] = True     # 90% on every seed
    >>> a = b.copy(); a[0, 90:95] = a[1, 92:97] = a[2, 95:] = True   # +5 images each
    >>> r = compare(a, b)
    >>> r.difference, round(r.p_value, 4), r.verdict
    (5.0, 0.0023, 'a better')
    """
    where = "stats.compare"
    conf = _confidence(confidence, where)
    if margin is not None and (not _real(margin) or not math.isfinite(margin)
                               or margin <= 0):
        raise ValueError(f"{where}: margin must be a finite number of points > 0 (e.g. "
                         f"0.2), or None, got {margin!r}")
    a = _flags(correct_a, "correct_a", where)
    b = _flags(correct_b, "correct_b", where)
    if a.shape != b.shape:
        raise ValueError(f"{where}: correct_a and correct_b must have the same shape [S, N] "
                         f"(paired by seed and test image), got {a.shape} and {b.shape}")
    s, n = a.shape
    if s < 2:
        raise ValueError(f"{where}: need S >= 2 seeds (rows) to measure the seed noise, got "
                         f"S={s} (shape {a.shape})")
    if n < 2:
        raise ValueError(f"{where}: need N >= 2 test images (columns), got N={n} (shape "
                         f"{a.shape})")
    d = a.astype(np.int8) - b.astype(np.int8)
    dec = _decompose(d)
    diff = 100 * dec.mean
    se = 100 * math.sqrt(dec.var)
    alpha = 1 - conf
    if se > 0:
        t_crit = float(_st.t.ppf(1 - alpha / 2, dec.df))
        low, high = diff - t_crit * se, diff + t_crit * se
        p = float(2 * _st.t.sf(abs(diff) / se, dec.df))
        if margin is not None:
            p_eq = float(max(_st.t.sf((diff + margin) / se, dec.df),
                             _st.t.cdf((diff - margin) / se, dec.df)))
        else:
            p_eq = math.nan
    else:
        low = high = p = p_eq = math.nan
    per_seed = d.sum(axis=1)
    return Comparison(
        difference=diff, low=low, high=high, se=se, df=dec.df, p_value=p,
        p_equivalence=p_eq, verdict=verdict(diff, p, p_eq, conf), seeds=s, images=n,
        correct_a=int(a.sum()), correct_b=int(b.sum()),
        seed_sd=float(100 * np.std(per_seed, ddof=1) / n),  # integer counts: 0 is exact
        var_seed=dec.var_seed, var_image=dec.var_image, var_residual=dec.var_residual,
        confidence=conf, margin=None if margin is None else float(margin))


@dataclasses.dataclass(frozen=True)
class Interval:
    """One config's accuracy (points) and its interval over seeds and test images."""

    mean: float
    low: float
    high: float
    se: float
    df: float
    seeds: int
    images: int
    confidence: float


def accuracy_interval(correct, *, confidence: float = 0.95) -> Interval:
    """One config's accuracy with an interval that covers both seed and test-set noise
    (the decomposition of :func:`compare` on the correct flags).

    Args:
      correct: ``[S, N]`` bool (or 0/1): seed ``s`` got test image ``i`` right.
        ``S >= 2``.

    Returns:
      :class:`Interval` in points; with an all-right or all-wrong table the noise cannot
      be estimated and ``low``/``high`` are NaN.

    >>> import numpy as np
    >>> c = np.zeros((2, 4), bool); c[:, :3] = True     # 3 of 4 images, both seeds
    >>> accuracy_interval(c).mean
    75.0
    """
    where = "stats.accuracy_interval"
    conf = _confidence(confidence, where)
    c = _flags(correct, "correct", where)
    s, n = c.shape
    if s < 2 or n < 2:
        raise ValueError(f"{where}: need S >= 2 seeds and N >= 2 test images, got shape "
                         f"{c.shape} (seeds x test images)")
    dec = _decompose(c)
    mean, se = 100 * dec.mean, 100 * math.sqrt(dec.var)
    if se > 0:
        half = float(_st.t.ppf(0.5 + conf / 2, dec.df)) * se
        low, high = mean - half, mean + half
    else:
        low = high = math.nan
    return Interval(mean=mean, low=low, high=high, se=se, df=dec.df, seeds=s, images=n,
                    confidence=conf)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the ``k``-th smallest of
    ``m`` becomes ``max_{j <= k} min(1, (m - j + 1) p_(j))``. Rejecting where the adjusted
    p is below ``alpha`` keeps the chance of any false rejection in the family at or below
    ``alpha`` (whatever the dependence between the tests).

    Args:
      p_values: ``[m]`` numbers in [0, 1], one per test run in the family (no NaN: a
        test that ran but gave no p-value, for want of a noise estimate, counts as
        ``1.0``, so the family size stays honest).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"stats.holm: p_values must be 1-D, got shape {p.shape}")
    if p.size and (np.any(np.isnan(p)) or np.any(p < 0) or np.any(p > 1)):
        raise ValueError(f"stats.holm: p_values must lie in [0, 1] (no NaN), got "
                         f"{p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled) if m else scaled
    return [float(v) for v in adjusted]


# --------------------------------------------------------------------------------------
# Per-seed tools
# --------------------------------------------------------------------------------------


def _vector(values: Sequence[float], name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"stats: {name} must be a non-empty 1-D sequence, got shape "
                         f"{v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"stats: {name} holds non-finite values: {v.tolist()}")
    return v


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean, sample standard deviation (ddof 1) and the t-interval of the mean of one
    number per seed (seed noise only: for test accuracy use :func:`accuracy_interval`,
    which also counts the test set's sampling noise).

    Args:
      values: ``[n]`` one number per seed.
      confidence: of the two-sided interval, ``0 < confidence < 1``.

    Returns:
      ``n``, ``mean``, ``std``, ``half_width`` (``t_{(1+confidence)/2, n-1} * std /
      sqrt(n)``), ``low``, ``high``; with one value, ``std`` and ``half_width`` are NaN
      (one seed says nothing about the seed noise); equal values give ``std`` exactly 0.
    """
    conf = _confidence(confidence, "stats.mean_ci")
    v = _vector(values, "values")
    n, mean = v.size, float(v.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "half_width": math.nan,
                "low": math.nan, "high": math.nan}
    if np.all(v == v[0]):
        mean, std = float(v[0]), 0.0  # no round-off posing as spread
    else:
        std = float(v.std(ddof=1))
    half = float(_st.t.ppf(0.5 + conf / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "half_width": half, "low": mean - half,
            "high": mean + half}


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """Exact McNemar test of two classifiers on the same images (one seed): are their
    disagreements lopsided?

    Among the images exactly one of the two gets right, a model no better than the other
    would own each such image with probability 1/2; the test asks whether ``only_a`` vs
    ``only_b`` is too uneven for that. It says nothing about images both get right or
    both wrong, nothing about other seeds, and its p-values over several seeds cannot be
    counted into a verdict: use :func:`compare` for that.

    Args:
      correct_a, correct_b: ``[n_images]`` correct/wrong flags (bool or 0/1; class
        indices are refused: pass ``predictions == labels``).

    Returns:
      ``only_a`` (images only A gets right), ``only_b``, ``n`` (images), and ``p``: the
      two-sided exact p-value, ``min(1, 2 * P[X <= min(only_a, only_b)])`` for ``X ~
      Binomial(only_a + only_b, 1/2)`` (1.0 when they never disagree).
    """
    a = np.asarray(correct_a)
    b = np.asarray(correct_b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"stats.mcnemar: correct_a and correct_b must be 1-D of one length "
                         f"(one entry per test image), got shapes {a.shape} and {b.shape}")
    a = _flags(a[None], "correct_a", "stats.mcnemar")[0]
    b = _flags(b[None], "correct_b", "stats.mcnemar")[0]
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    m = only_a + only_b
    p = 1.0 if m == 0 else min(1.0, 2.0 * float(_st.binom.cdf(min(only_a, only_b), m, 0.5)))
    return {"only_a": only_a, "only_b": only_b, "n": int(a.size), "p": p}


def binomial_sd(accuracy: float, n: int) -> float:
    """Standard deviation of an accuracy measured on ``n`` independent test images:
    ``sqrt(accuracy * (1 - accuracy) / n)`` (as a fraction)."""
    if not 0 <= accuracy <= 1 or n < 1:
        raise ValueError(f"stats.binomial_sd: need 0 <= accuracy <= 1 and n >= 1, got "
                         f"{accuracy!r} and {n!r}")
    return math.sqrt(accuracy * (1 - accuracy) / n)
