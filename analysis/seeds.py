"""`python -m analysis.seeds SWEEP [more] [--delta POINTS ...] [--power P] [--alpha A]`: how many seeds per variant
a difference of `--delta` points needs to be detected, from the seed-to-seed spread the sweep observed.

The spread is the within-variant standard deviation of test accuracy, pooled over every variant with 2 seeds or
more; the count solves a two-sided two-sample t-test's power (statsmodels.stats.power) for equal seeds per side, at
the level the report's rule gives one difference among its m comparisons: Holm's first step, alpha / m (the
conservative plan: a difference found first must pass it). report.md carries the same plan for 0.5, 1 and 2 points.
"""

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ablations.config import ConfigError
from analysis.errors import AnalysisError
from convmixer.arguments import OneLineParser, folder_path, run_cli

if TYPE_CHECKING:
    import pandas as pd

# pandas, scipy and statsmodels (over a second on a small CPU) are imported in the functions that compute, so that
# --help and usage errors answer at once.

PROG = "python -m analysis.seeds"
DELTAS = (0.5, 1.0, 2.0)  # points: report.md's plan


def plan_lines(
    sd: float,
    n_groups: int,
    deltas: tuple[float, ...],
    power: float = 0.8,
    alpha: float = 0.05,
    comparisons: int = 1,
) -> list[str]:
    """The plan in words: the spread it starts from, then one line per difference (in points), each at the level
    Holm over `comparisons` gives the first difference it finds (alpha / comparisons)."""
    from analysis.stats import seeds_needed

    if math.isnan(sd):
        return ["Seeds needed: no variant has 2 seeds, so there is no seed-to-seed spread to plan from."]
    level = alpha / max(comparisons, 1)
    rule = f"α = {alpha:g}" if comparisons <= 1 else f"α = {alpha:g} Holm over {comparisons} comparisons: {level:.2g}"
    lines = [
        f"Seed-to-seed spread: sd {sd:.2f} points (test accuracy, pooled over {n_groups} variants); seeds per "
        f"variant to detect a true difference Δ at {power:.0%} power (two-sided t-test, {rule}):"
    ]
    for delta in deltas:
        n = seeds_needed(delta, sd, power, level)
        lines.append(f"- Δ = {delta:g} points: {math.ceil(n) if not math.isnan(n) else 'n/a'} seeds")
    return lines


def spread(runs: "pd.DataFrame", keys: list[str]) -> tuple[float, int]:
    """The pooled within-variant sd of test accuracy in points, and how many variants it pools (2 seeds or more)."""
    from analysis.load import done
    from analysis.stats import pooled_sd

    finished = done(runs)
    groups = [group["test_acc"] * 100 for _, group in finished.groupby(keys)] if keys else [finished["test_acc"] * 100]
    return pooled_sd(groups), sum(len(group) >= 2 for group in groups)


def comparison_count(chosen) -> int:
    """How many comparisons the report makes of the scope (its Holm family): each variant with its baseline."""
    from analysis.sequential import FIRST_SEEDS, comparisons

    return len(comparisons(chosen, FIRST_SEEDS).labels)


def _number(text: str) -> float:
    """The number, or NaN (which every range check below refuses) where `text` is none."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def positive(text: str) -> float:
    value = _number(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted: expected a number of points > 0")
    return value


def fraction(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted: expected a number between 0 and 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description="Seeds per variant needed to detect a difference, from a sweep.")
    parser.add_argument("sweeps", nargs="+", type=folder_path, help="sweep folders, e.g. results/cifar10-cpu")
    parser.add_argument(
        "--delta", type=positive, action="append", metavar="POINTS", help="difference in points (repeatable)"
    )
    parser.add_argument("--power", type=fraction, default=0.8, help="the chance to detect it (default 0.8)")
    parser.add_argument("--alpha", type=fraction, default=0.05, help="two-sided significance level (default 0.05)")
    parser.add_argument("--design", default="latest", metavar="N", help="as in python -m analysis.report")
    args = parser.parse_args(argv)
    from analysis.design import scope

    chosen = scope(list(map(Path, args.sweeps)), [], design=args.design)
    sd, n_groups = spread(chosen.done, chosen.keys)
    deltas, family = tuple(args.delta or DELTAS), comparison_count(chosen)
    print("\n".join(plan_lines(sd, n_groups, deltas, args.power, args.alpha, family)))
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (AnalysisError, ConfigError, OSError))


if __name__ == "__main__":
    sys.exit(cli())
