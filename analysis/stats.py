"""Statistics over seeds: mean, standard deviation, Student-t confidence intervals, Welch's test, Holm's
adjustment, bootstrap intervals, the test set's binomial noise floor, seeds needed for a power, Pareto fronts.

The distributions and tests come from scipy.stats and statsmodels; this module decides what a table needs from
them: NaNs dropped, no interval from one seed, and an exact difference when every seed agrees.
"""

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


def _observed(values: ArrayLike) -> np.ndarray:
    """The values as floats, NaNs (runs without that measurement) dropped."""
    x = np.asarray(values, dtype=float)
    return x[~np.isnan(x)]


@dataclass(frozen=True)
class Estimate:
    """Mean over n seeds, sample standard deviation (n-1), and the half-width of the two-sided CI (NaN when n < 2)."""

    mean: float
    sd: float
    ci: float
    n: int


def mean_ci(values: ArrayLike, level: float = 0.95) -> Estimate:
    """Mean and Student-t confidence interval of independent samples; NaNs are dropped first."""
    x = _observed(values)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    if n == 1:
        return Estimate(float(x[0]), math.nan, math.nan, 1)
    sd = float(np.std(x, ddof=1))
    return Estimate(float(x.mean()), sd, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n), n)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its Welch confidence interval [low, high], Welch-Satterthwaite df and two-sided p."""

    diff: float
    low: float
    high: float
    df: float
    p: float


def welch(a: ArrayLike, b: ArrayLike, level: float = 0.95) -> Difference:
    """Welch's unequal-variance t interval for mean(a) - mean(b); NaN interval when either side has n < 2."""
    ea, eb = mean_ci(a, level), mean_ci(b, level)
    diff = ea.mean - eb.mean
    if ea.n < 2 or eb.n < 2:
        return Difference(diff, math.nan, math.nan, math.nan, math.nan)
    if ea.sd == 0.0 and eb.sd == 0.0:  # every seed gave the same number on both sides: the difference is exact
        return Difference(diff, diff, diff, math.inf, 1.0 if diff == 0 else 0.0)
    test = stats.ttest_ind(_observed(a), _observed(b), equal_var=False)
    interval = test.confidence_interval(level)
    return Difference(diff, float(interval.low), float(interval.high), float(test.df), float(test.pvalue))


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (one study's comparisons); NaNs stay NaN, outside it."""
    from statsmodels.stats.multitest import multipletests  # statsmodels takes a second to import: only when used

    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, math.nan)
    known = ~np.isnan(p)
    if known.any():
        adjusted[known] = multipletests(p[known], method="holm")[1]
    return adjusted


def bootstrap_difference(a: ArrayLike, b: ArrayLike, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b), each side resampled on its own; NaNs with n < 2 a side.

    Seeded, so that a report rerun writes the same numbers."""
    x, y = _observed(a), _observed(b)
    if len(x) < 2 or len(y) < 2:
        return math.nan, math.nan

    def difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    result = stats.bootstrap(
        (x, y), difference, confidence_level=level, n_resamples=9999, method="percentile", rng=seed
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def noise_floor(accuracy: float, n_test: int) -> float:
    """The binomial standard error of an accuracy measured on n_test images, sqrt(p(1-p)/n): a difference
    smaller than this is within what one test set alone can resolve."""
    if not n_test or math.isnan(accuracy):
        return math.nan
    return math.sqrt(accuracy * (1 - accuracy) / n_test)


def seeds_needed(delta: float, sd: float, power: float = 0.8, alpha: float = 0.05) -> float:
    """Seeds per variant for a two-sided two-sample t-test to detect a true difference `delta` at `power`, the
    seeds' spread being `sd` (same unit as delta); the real-valued solution: round it up. NaN without a spread."""
    from statsmodels.stats.power import TTestIndPower

    if math.isnan(sd) or sd <= 0 or delta <= 0:
        return math.nan
    return float(TTestIndPower().solve_power(effect_size=delta / sd, power=power, alpha=alpha, ratio=1.0))


def pooled_sd(values: list[ArrayLike]) -> float:
    """The within-group standard deviation pooled over groups (each weighted by n - 1); NaN with no group of 2."""
    groups = [x for x in map(_observed, values) if len(x) >= 2]
    dof = sum(len(x) - 1 for x in groups)
    if not dof:
        return math.nan
    return math.sqrt(sum(float(np.var(x, ddof=1)) * (len(x) - 1) for x in groups) / dof)


def pareto_front(cost: ArrayLike, accuracy: ArrayLike, higher_cost_is_better: bool = False) -> np.ndarray:
    """Mask of the points no other point beats: at least as accurate and at least as cheap, strictly better in one.

    For throughput, more is better: pass `higher_cost_is_better=True`. NaN points are never on the front.
    """
    c = np.asarray(cost, dtype=float) * (-1.0 if higher_cost_is_better else 1.0)
    a = np.asarray(accuracy, dtype=float)
    valid = ~(np.isnan(c) | np.isnan(a))
    on_front = valid.copy()
    for i in np.flatnonzero(valid):
        no_worse = valid & (c <= c[i]) & (a >= a[i])
        strictly_better = (c < c[i]) | (a > a[i])
        on_front[i] = not np.any(no_worse & strictly_better)
    return on_front
