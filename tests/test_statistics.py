"""analysis/stats.py's Holm adjustment, bootstrap, noise floor and seed planner, each checked against a computation
of its own here (scipy's noncentral t, statsmodels' Welch test, Holm's steps by hand), and the seed planner's
command."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.weightstats import ttest_ind

from analysis import seeds, tables
from analysis.stats import bootstrap_difference, holm, noise_floor, pooled_sd, seeds_needed, welch
from analysis.variants import compare


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm's step-down: the i-th smallest p times (m - i), made monotone, capped at 1."""
    order = np.argsort(p)
    adjusted, running = np.empty(len(p)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


@pytest.mark.slow
def test_holm_matches_the_step_down_by_hand_and_leaves_nan_out_of_the_family():
    p = [0.01, 0.04, 0.03, 0.005, 0.2]
    assert holm(p) == pytest.approx(holm_by_hand(p))
    with_gap = holm([0.01, math.nan, 0.04])
    assert math.isnan(with_gap[1]) and with_gap[[0, 2]] == pytest.approx(holm_by_hand([0.01, 0.04]))
    assert np.isnan(holm([math.nan])).all()  # nothing to adjust


def test_welch_p_matches_statsmodels():
    a, b = [0.61, 0.58, 0.63], [0.55, 0.57, 0.50, 0.52]
    _, p, df = ttest_ind(a, b, usevar="unequal")
    d = welch(a, b)
    assert d.p == pytest.approx(p) and d.df == pytest.approx(df)


def test_compare_adjusts_every_comparison_of_the_table_together():
    accuracy = {3: [0.50, 0.52, 0.51], 5: [0.60, 0.61, 0.62], 7: [0.61, 0.60, 0.64], 9: [0.58, 0.66, 0.62]}
    runs = pd.DataFrame(
        [
            {"kernel_size": k, "seed": s, "status": "done", "test_acc": a}
            for k, v in accuracy.items()
            for s, a in enumerate(v)
        ]
    )
    table = compare(runs, {"kernel_size": 5}, ["kernel_size"]).set_index("kernel_size")
    raw = [stats.ttest_ind(accuracy[k], accuracy[5], equal_var=False).pvalue for k in (3, 7, 9)]
    assert table.loc[[3, 7, 9], "p_holm"].tolist() == pytest.approx(holm_by_hand(raw))
    assert math.isnan(table.loc[5, "p_holm"])


def test_an_effect_is_named_only_below_the_adjusted_threshold():
    variants = pd.DataFrame(
        {"is_baseline": [True, False, False], "diff": [math.nan, -0.04, 0.01], "p_holm": [math.nan, 0.01, 0.3]}
    )
    text = tables.effects_text(variants, ["k=5", "k=3", "k=7"])
    assert "k=3 -4.00 points" in text and "k=7" not in text and "over the 2 comparisons" in text


def test_the_noise_floor_is_the_binomial_standard_error_of_the_test_set():
    assert noise_floor(0.9, 10_000) == pytest.approx(stats.binom(10_000, 0.9).std() / 10_000)
    assert noise_floor(0.9, 10_000) == pytest.approx(0.003)  # the 0.3 points at 90 % on 10,000 images
    assert math.isnan(noise_floor(0.9, 0))


@pytest.mark.parametrize("delta, sd", [(0.5, 0.87), (1.0, 1.0), (2.0, 3.0)])
def test_seeds_needed_reach_the_power_by_the_noncentral_t(delta, sd):
    """At the planned n per side a two-sided t-test at alpha 0.05 rejects with probability 0.8 (scipy's nct)."""
    n = seeds_needed(delta, sd)
    df, shift = 2 * n - 2, delta / sd * math.sqrt(n / 2)
    critical = stats.t.ppf(0.975, df)
    power = stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)
    assert power == pytest.approx(0.8, abs=1e-6)
    assert math.isnan(seeds_needed(delta, math.nan))


def test_pooled_sd_weights_each_variant_by_its_degrees_of_freedom():
    groups = [[1.0, 2.0, 3.0], [2.0, 4.0], [5.0]]
    by_hand = math.sqrt((2 * np.var(groups[0], ddof=1) + 1 * np.var(groups[1], ddof=1)) / 3)
    assert pooled_sd(groups) == pytest.approx(by_hand)
    assert math.isnan(pooled_sd([[1.0], [2.0]]))


def test_the_bootstrap_interval_matches_resampling_by_hand():
    a, b = [0.61, 0.58, 0.63, 0.60], [0.55, 0.57, 0.50, 0.52]
    rng = np.random.default_rng(1)
    draws = rng.choice(a, (20_000, 4)).mean(axis=1) - rng.choice(b, (20_000, 4)).mean(axis=1)
    low, high = bootstrap_difference(a, b)
    assert (low, high) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])), abs=0.004)
    assert bootstrap_difference(a, b) == (low, high)  # seeded: a rerun writes the same numbers
    assert all(map(math.isnan, bootstrap_difference([0.5], b)))


def test_the_seed_planner_prints_a_plan_and_refuses_a_bad_delta(capsys):
    assert seeds.plan_lines(1.0, 4, (2.0,))[1] == f"- Δ = 2 points: {math.ceil(seeds_needed(2.0, 1.0))} seeds"
    assert "no variant has 2 seeds" in seeds.plan_lines(math.nan, 0, (1.0,))[0]
    assert seeds.cli(["results/cifar10-cpu", "--delta", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "python -m analysis.seeds: error: argument --delta: '0' is not accepted: expected a number of points > 0"
    )


@pytest.mark.slow  # a fresh interpreter imports torch
def test_the_seed_planner_runs_as_a_module_on_the_committed_study(repo_root):
    command = [sys.executable, "-m", "analysis.seeds", "results/cifar10-cpu", "--delta", "1"]
    done = subprocess.run(command, cwd=repo_root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("Seed-to-seed spread: sd ") and "- Δ = 1 points: " in done.stdout
