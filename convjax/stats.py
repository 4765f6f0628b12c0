"""Statistics for comparing trained models over seeds: is a difference larger than noise?

Three questions, three tools:

* how precisely is one config's accuracy known? :func:`mean_ci`, the t-interval of the
  mean over seeds;
* is config A better than config B? :func:`paired`, the t-interval (and paired t-test) of
  the per-seed differences: seed ``s`` of A and seed ``s`` of B share the data order, so
  pairing removes the part of the noise they have in common;
* on one seed, do A and B disagree on more test images than chance allows?
  :func:`mcnemar`, the exact McNemar test on the per-image correct/wrong outcomes.

:func:`binomial_sd` is the floor under all of this: the standard deviation of an accuracy
measured on ``n`` test images (``binomial_sd(0.992, 10_000)`` is 0.089 points).

>>> r = mean_ci([0.990, 0.992, 0.991])
>>> round(r["mean"], 6), round(r["half_width"], 6)
(0.991, 0.002484)
>>> mcnemar([1, 1, 0, 0, 1], [1, 0, 1, 1, 1])["only_b"]
2
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as _st

__all__ = ["mean_ci", "paired", "mcnemar", "binomial_sd"]


def _vector(values: Sequence[float], name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"stats: {name} must be a non-empty 1-D sequence, got shape "
                         f"{v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"stats: {name} holds non-finite values: {v.tolist()}")
    return v


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean, sample standard deviation (ddof 1) and the t-interval of the mean.

    Args:
      values: ``[n]`` one number per seed.
      confidence: of the two-sided interval.

    Returns:
      ``n``, ``mean``, ``std``, ``half_width`` (``t_{(1+confidence)/2, n-1} * std /
      sqrt(n)``), ``low``, ``high``; with one value, ``std`` and ``half_width`` are NaN
      (one seed says nothing about the seed noise).
    """
    v = _vector(values, "values")
    n, mean = v.size, float(v.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "half_width": math.nan,
                "low": math.nan, "high": math.nan}
    std = float(v.std(ddof=1))
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "half_width": half, "low": mean - half,
            "high": mean + half}


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """The per-seed differences ``a - b`` (same seed, same data order): their mean, the
    t-interval of the mean and the two-sided paired t-test.

    Args:
      a, b: ``[n]`` one number per seed, in the same seed order.

    Returns:
      :func:`mean_ci` of the differences plus ``t`` and ``p`` (NaN with one seed, or
      when every difference is the same), and ``excludes_zero``: the interval lies on
      one side of 0, i.e. the difference is larger than the seed noise (False with one
      seed, or when every difference is the same: the noise cannot be estimated).
    """
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"stats.paired: a and b need one value per seed each, got {a.size} "
                         f"and {b.size}")
    d = a - b
    out = mean_ci(d, confidence)
    if d.size >= 2 and out["std"] > 0:
        t = out["mean"] / (out["std"] / math.sqrt(d.size))
        out["t"], out["p"] = t, float(2 * _st.t.sf(abs(t), d.size - 1))
    else:
        out["t"], out["p"] = math.nan, math.nan
    # With identical differences the interval has width 0: no noise estimate, no verdict.
    out["excludes_zero"] = bool(d.size >= 2 and out["std"] > 0
                                and (out["low"] > 0 or out["high"] < 0))
    return out


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """Exact McNemar test of two classifiers on the same images.

    Args:
      correct_a, correct_b: ``[n_images]`` whether each model got each image right.

    Returns:
      ``only_a`` (images only A gets right), ``only_b``, ``n`` (images), and ``p``: the
      two-sided exact p-value, ``min(1, 2 * P[X <= min(only_a, only_b)])`` for ``X ~
      Binomial(only_a + only_b, 1/2)`` (1.0 when they never disagree). Images both get
      right, or both wrong, say nothing about which is better and do not enter.
    """
    a = np.asarray(correct_a).astype(bool)
    b = np.asarray(correct_b).astype(bool)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"stats.mcnemar: correct_a and correct_b must be 1-D of one length "
                         f"(one entry per test image), got shapes {a.shape} and {b.shape}")
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
