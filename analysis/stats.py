"""Statistics over seeds: mean, standard deviation, Student-t confidence intervals, Welch's test, Pareto fronts.

The t distribution is computed here from the regularised incomplete beta function (a continued fraction, as in
Numerical Recipes) rather than taken from scipy, so the toolkit needs no extra dependency; tests pin it to tables.
"""

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


def _beta_continued_fraction(a: float, b: float, x: float, max_iter: int = 500, eps: float = 1e-15) -> float:
    """Continued fraction of the incomplete beta function, evaluated with the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, max_iter + 1):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        for coefficient in (even, odd):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coefficient / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return fraction


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the CDF of a Beta(a, b) variable at x."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The fraction converges fast only below the mean; above it, use I_x(a, b) = 1 - I_{1-x}(b, a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (real, > 0) degrees of freedom."""
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, found by bisection on t_cdf (monotone, so bisection cannot fail)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    low, high = -1.0, 1.0
    while t_cdf(low, df) > p:
        low *= 2.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, abs(middle)):
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Estimate:
    """Mean over n seeds, sample standard deviation (n-1), and the half-width of the two-sided CI (NaN when n < 2)."""

    mean: float
    sd: float
    ci: float
    n: int


def mean_ci(values: ArrayLike, level: float = 0.95) -> Estimate:
    """Mean and Student-t confidence interval of independent samples; NaNs are dropped first."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    if n == 1:
        return Estimate(float(x[0]), math.nan, math.nan, 1)
    sd = float(np.std(x, ddof=1))
    return Estimate(float(x.mean()), sd, t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n), n)


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
    va, vb = ea.sd**2 / ea.n, eb.sd**2 / eb.n
    se = math.sqrt(va + vb)
    if se == 0.0:  # every seed gave the same number on both sides: the difference is exact
        return Difference(diff, diff, diff, math.inf, 1.0 if diff == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (ea.n - 1) + vb**2 / (eb.n - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    p = 2.0 * (1.0 - t_cdf(abs(diff) / se, df))
    return Difference(diff, diff - half, diff + half, df, p)


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
