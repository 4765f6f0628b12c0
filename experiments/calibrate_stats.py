r"""Calibration of :func:`convjax.stats.compare`: how often does it call a null difference
real, how often does it find a true one, and how often does it show equivalence?

    python -m experiments.calibrate_stats              # 1,000 simulations per cell
    python -m experiments.calibrate_stats --sims=200 --images=2000   # a quick look

Each simulation draws a fresh test set and trains nothing: it draws the per-image outcomes
of two configs, a and b, on ``--seeds`` seeds and ``--images`` test images, from

    P(config c, seed s gets image i right) = sigmoid(mu_c + z_i + u_ci + v_cs)

with ``z_i`` the image's difficulty (shared by both configs), ``u_ci`` the config's own
image effect (fixed over seeds: which images this architecture finds easy), ``v_cs`` a
per-seed shift, and a coin flip per (seed, image) on top. Two regimes:

* ``image``: image noise dominant (no seed shift): the seed standard deviation of the
  difference is about 0.1 points;
* ``seed``: seed noise dominant: about 1 point.

Under the null, a and b have the same distribution (the true population difference is
0, yet on one test set they differ in which images they get right); under the
alternative, ``mu_a`` is raised so that the population accuracy of a is 0.5 points
higher (found by bisection on 2 million draws). Four ways of judging each simulated
pair, all at the 5% level:

* ``two-way``: :func:`convjax.stats.compare` (seeds and images, Satterthwaite t);
* ``seed-only t``: the paired t-test over the per-seed accuracy differences;
* ``image-only t``: the paired t-test over the per-image mean differences (seeds pooled);
* ``crossed bootstrap``: seeds and images resampled independently (``--bootstrap``
  draws), its standard error with a normal reference.

Printed per regime and method: the false-positive rate ("a better" or "b better" under
the null), the power at a true ``--effect``-point difference (0.5), the equivalence rate
at a true 0 with a ``--margin``-point margin (0.5), each with its Monte Carlo 95%
interval; and the coverage of :func:`convjax.stats.accuracy_interval` (and of the
seed-only t-interval) for config b's population accuracy. The target: a false-positive rate at most 7.5% in both regimes.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from scipy import stats as st

#: The methods compared, in the order printed.
METHODS = ("two-way", "seed-only t", "image-only t", "crossed bootstrap")


@dataclasses.dataclass(frozen=True)
class Regime:
    """The generative model's scales (logits). ``base`` sets the accuracy (about 99%)."""

    name: str
    difficulty: float  # s.d. of z_i
    config_image: float  # s.d. of u_ci
    seed_shift: float  # s.d. of v_cs
    base: float = 9.5


# Accuracy about 98.6% and 98.2%; seed s.d. of the difference about 0.1 and 1 point.
REGIMES = {
    "image": Regime("image", difficulty=3.0, config_image=2.5, seed_shift=0.0),
    "seed": Regime("seed", difficulty=2.5, config_image=1.0, seed_shift=0.7, base=7.0),
}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def population_accuracy(regime: Regime, shift: float = 0.0, draws: int = 2_000_000,
                        seed: int = 12345) -> float:
    """The expected accuracy over images and seeds of a config with ``mu = base +
    shift`` (Monte Carlo, common random numbers: the same draws for every shift)."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(0, regime.difficulty, draws) + rng.normal(0, regime.config_image, draws)
         + rng.normal(0, regime.seed_shift, draws))
    return float(np.mean(_sigmoid(regime.base + shift + x)))


def shift_for(regime: Regime, points: float) -> float:
    """The logit shift of ``mu_a`` that raises the population accuracy by ``points``."""
    if not 0 < points:
        raise ValueError(f"shift_for: points must be > 0, got {points!r}")
    target = population_accuracy(regime) + points / 100
    lo, hi = 0.0, 3.0
    if population_accuracy(regime, hi) < target:
        raise ValueError(f"shift_for: a {points}-point gain is out of reach in the "
                         f"{regime.name} regime (its accuracy is "
                         f"{100 * population_accuracy(regime):.2f}%)")
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if population_accuracy(regime, mid) < target else (lo, mid)
    return (lo + hi) / 2


def simulate(rng: np.random.Generator, regime: Regime, seeds: int, images: int,
             shift_a: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One fresh test set: ``(correct_a, correct_b)``, bool ``[seeds, images]``."""
    z = rng.normal(0, regime.difficulty, images)
    out = []
    for shift in (shift_a, 0.0):
        u = rng.normal(0, regime.config_image, images)
        v = rng.normal(0, regime.seed_shift, seeds)
        p = _sigmoid(regime.base + shift + z[None, :] + u[None, :] + v[:, None])
        out.append(rng.random((seeds, images)) < p)
    return out[0], out[1]


def _t_test(values: np.ndarray) -> tuple[float, float, float]:
    """``(mean, se, df)`` of a one-sample t-test (in the values' unit)."""
    n = values.size
    sd = float(np.std(values, ddof=1)) if np.any(values != values[0]) else 0.0
    return float(values.mean()), sd / math.sqrt(n), n - 1


def _bootstrap_se(d: np.ndarray, rng: np.random.Generator, draws: int) -> float:
    """Standard error of the table's mean under the crossed (seeds x images) bootstrap."""
    s, n = d.shape
    ws = rng.multinomial(s, np.full(s, 1 / s), size=draws).astype(np.float64)  # [B, S]
    wi = rng.poisson(1.0, size=(draws, n)).astype(np.float64)                  # [B, N]
    num = np.einsum("bs,sb->b", ws, d.astype(np.float64) @ wi.T)
    den = ws.sum(1) * wi.sum(1)
    return float(np.std(num / den, ddof=1))


def judge(method: str, a: np.ndarray, b: np.ndarray, *, margin: float, alpha: float = 0.05,
          rng: np.random.Generator | None = None, bootstrap: int = 200) -> tuple[str, bool]:
    """``(verdict of "difference != 0", equivalent within margin?)`` for one method."""
    from convjax import stats

    if method == "two-way":
        r = stats.compare(a, b, confidence=1 - alpha, margin=margin)
        return r.verdict, r.verdict == "equivalent"
    d = a.astype(np.int8) - b.astype(np.int8)
    if method == "seed-only t":
        mean, se, df = _t_test(100 * d.mean(axis=1))
    elif method == "image-only t":
        mean, se, df = _t_test(100 * d.mean(axis=0))
    elif method == "crossed bootstrap":
        mean, se, df = 100 * float(d.mean()), 100 * _bootstrap_se(d, rng, bootstrap), math.inf
    else:
        raise ValueError(f"judge: unknown method {method!r}; one of {METHODS}")
    if not se > 0:
        return "inconclusive", False
    p = 2 * st.t.sf(abs(mean) / se, df)
    p_eq = max(st.t.sf((mean + margin) / se, df), st.t.cdf((mean - margin) / se, df))
    if p < alpha:
        return ("a better" if mean > 0 else "b better"), False
    return ("equivalent" if p_eq < alpha else "inconclusive"), p_eq < alpha


def rate_ci(k: int, n: int) -> tuple[float, float]:
    """Wilson 95% interval of a rate ``k / n`` (Monte Carlo error of a simulated rate)."""
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def calibrate(regime: Regime, *, sims: int, seeds: int, images: int, seed: int,
              methods=METHODS, margin: float = 0.5, effect: float = 0.5,
              bootstrap: int = 200, power: bool = True) -> dict:
    """Simulate ``sims`` null pairs (and, with ``power``, ``sims`` pairs at a true
    ``effect``-point difference) and count each method's verdicts.

    Returns ``{"false_positives": {method: k}, "equivalent": {method: k}, "detected":
    {method: k}, "covered": {"two-way": k, "seed-only t": k}, "seed_sd": median seed
    s.d. of the null differences (points), "sims": sims}``.
    """
    from convjax import stats

    rng = np.random.default_rng(seed)
    truth = population_accuracy(regime) * 100
    out = {"false_positives": dict.fromkeys(methods, 0), "equivalent": dict.fromkeys(methods, 0),
           "detected": dict.fromkeys(methods, 0), "covered": {"two-way": 0, "seed-only t": 0},
           "sims": sims}
    seed_sds = []
    for _ in range(sims):
        a, b = simulate(rng, regime, seeds, images)
        seed_sds.append(100 * np.std(a.mean(1) - b.mean(1), ddof=1))
        for m in methods:
            v, eq = judge(m, a, b, margin=margin, rng=rng, bootstrap=bootstrap)
            out["false_positives"][m] += v in ("a better", "b better")
            out["equivalent"][m] += eq
        iv = stats.accuracy_interval(b)
        out["covered"]["two-way"] += bool(iv.low <= truth <= iv.high)
        ci = stats.mean_ci(100 * b.mean(axis=1))
        out["covered"]["seed-only t"] += bool(ci["low"] <= truth <= ci["high"])
    if power:
        shift = shift_for(regime, effect)
        for _ in range(sims):
            a, b = simulate(rng, regime, seeds, images, shift_a=shift)
            for m in methods:
                out["detected"][m] += judge(m, a, b, margin=margin, rng=rng,
                                            bootstrap=bootstrap)[0] == "a better"
    out["seed_sd"] = float(np.median(seed_sds))
    return out


def _fmt(k: int, n: int) -> str:
    lo, hi = rate_ci(k, n)
    return f"{100 * k / n:5.1f}% ({100 * lo:.1f}-{100 * hi:.1f})"


def main(argv) -> int:
    from absl import app, flags

    f = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name, v in (("sims", f.sims), ("seeds", f.seeds), ("images", f.images),
                    ("bootstrap", f.bootstrap)):
        if v < 2:
            raise app.UsageError(f"--{name} must be >= 2, got {v}")
    for name, v in (("margin", f.margin), ("effect", f.effect)):
        if not 0 < v < 100:
            raise app.UsageError(f"--{name} must be a number of points in (0, 100), got {v}")
    print(f"Calibration of convjax.stats.compare: {f.sims} simulations per regime and truth, "
          f"{f.seeds} seeds x {f.images:,} fresh test images each, level 5%, equivalence "
          f"margin {f.margin} points, true effect {f.effect} points, simulation seed "
          f"{f.seed}.\n")
    print(f"| regime | seed s.d. of the difference (median) | method | false positives "
          f"(true 0) | power (true +{f.effect:g}) | equivalent (true 0, margin {f.margin:g}) |")
    print("|---|---|---|---|---|---|")
    coverage = []
    for i, name in enumerate(f.regimes):
        if name not in REGIMES:
            raise app.UsageError(f"--regimes: unknown {name!r}; one of {list(REGIMES)}")
        t0 = time.perf_counter()
        r = calibrate(REGIMES[name], sims=f.sims, seeds=f.seeds, images=f.images,
                      seed=f.seed + i, margin=f.margin, effect=f.effect,
                      bootstrap=f.bootstrap)
        n = r["sims"]
        for m in METHODS:
            print(f"| {name} | {r['seed_sd']:.2f} points | {m} | "
                  f"{_fmt(r['false_positives'][m], n)} | {_fmt(r['detected'][m], n)} | "
                  f"{_fmt(r['equivalent'][m], n)} |")
        coverage.append((name, r, time.perf_counter() - t0))
    print("\nCoverage of config b's population accuracy by its 95% interval:\n")
    print("| regime | accuracy_interval (seeds + images) | seed-only t-interval | seconds |")
    print("|---|---|---|---|")
    for name, r, secs in coverage:
        n = r["sims"]
        print(f"| {name} | {_fmt(r['covered']['two-way'], n)} | "
              f"{_fmt(r['covered']['seed-only t'], n)} | {secs:.0f} |")
    print("\nRates in %, with their Monte Carlo 95% (Wilson) intervals in brackets.")
    print(f"\nstats.compare on [{f.seeds}, {f.images}] inputs: "
          f"{1e3 * time_compare(f.seeds, f.images):.2f} ms (median of 50 calls).")
    return 0


def time_compare(seeds: int = 5, images: int = 10_000, calls: int = 50) -> float:
    """Median seconds of one :func:`convjax.stats.compare` call on ``[seeds, images]``."""
    from convjax import stats

    rng = np.random.default_rng(0)
    a, b = rng.random((2, seeds, images)) < 0.98
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        stats.compare(a, b, margin=0.2)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _define_flags():
    from absl import flags

    flags.DEFINE_integer("sims", 1000, "Simulations per regime and truth (null, effect).")
    flags.DEFINE_integer("seeds", 5, "Seeds per simulated config.")
    flags.DEFINE_integer("images", 10_000, "Test images per simulated test set.")
    flags.DEFINE_integer("seed", 0, "Seed of the simulation.")
    flags.DEFINE_float("margin", 0.5, "Equivalence margin (points).")
    flags.DEFINE_float("effect", 0.5, "True difference for the power (points).")
    flags.DEFINE_integer("bootstrap", 200, "Draws of the crossed bootstrap.")
    flags.DEFINE_list("regimes", list(REGIMES), "Regimes to simulate.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
