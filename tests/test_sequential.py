"""analysis/sequential.py: its stages, its vectorised Welch test and Holm adjustment against analysis.stats, and,
by simulation (several thousand studies each), the design's proof: under no difference the family-wise error rate
stays at or below 5 %, and under the committed CPU study's effects it decides nearly what the fixed design at
--max-seeds decides, with fewer runs. Then the design read off a sweep: the stage it is in and the next runs."""

import math

import numpy as np
import pytest

from analysis import sequential
from analysis.stats import holm, welch

STUDIES = 4000
SIMULATION_ERROR = 3 * math.sqrt(0.05 * 0.95 / STUDIES)  # three standard errors of a 5 % rate


def test_stages_double_from_three_to_the_maximum_and_refuse_fewer_than_three():
    assert sequential.looks(10) == [3, 6, 10]
    assert sequential.looks(6) == [3, 6]
    assert sequential.looks(3) == [3]
    assert sum(sequential.spending([3, 6, 10])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="--max-seeds 2 is not accepted"):
        sequential.looks(2)


def test_the_vectorised_welch_and_holm_give_the_numbers_of_analysis_stats():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (5, 4)), rng.normal(0.8, 2, (5, 6))
    p, low, high = sequential.welch_arrays(a, b, 0.95)
    for i in range(5):
        d = welch(a[i], b[i])
        assert (p[i], low[i], high[i]) == pytest.approx((d.p, d.low, d.high))
    assert sequential.holm_rows(p[None])[0] == pytest.approx(holm(p))


@pytest.mark.parametrize("comparisons", [1, 10])
@pytest.mark.parametrize("max_seeds", [6, 10])
def test_under_no_difference_the_family_wise_error_rate_is_at_most_five_percent(comparisons, max_seeds):
    table = sequential.simulate((0.0,) * comparisons, 0.87, max_seeds, STUDIES, seed=comparisons)
    assert table["sequential"]["fwer"] <= 0.05 + SIMULATION_ERROR


def test_testing_each_look_at_the_full_alpha_would_exceed_five_percent():
    """The split over looks is what holds the rate: the same walk spending alpha whole at each look does not."""
    rng = np.random.default_rng(2)
    variant, baseline = rng.normal(0, 1, (2, STUDIES, 1, 10))
    rejected = np.zeros(STUDIES, bool)
    for n in sequential.looks(10):
        p, _, _ = sequential.welch_arrays(variant[..., :n], baseline[..., :n], 0.95)
        rejected |= p[:, 0] < 0.05
    assert rejected.mean() > 0.05 + SIMULATION_ERROR


@pytest.mark.parametrize("max_seeds", [6, 10])
def test_under_the_study_effects_it_decides_nearly_what_the_fixed_design_does_with_fewer_runs(max_seeds):
    table = sequential.simulate(sequential.STUDY_EFFECTS, sequential.STUDY_SD, max_seeds, STUDIES)
    fixed, adaptive = table["fixed"], table["sequential"]
    assert adaptive["power"] >= fixed["power"] - 0.05
    assert adaptive["runs"] < fixed["runs"]
    assert adaptive["fwer"] <= 0.05 + SIMULATION_ERROR


def comparisons(variant: np.ndarray, baseline: np.ndarray) -> sequential.Comparisons:
    labels = [f"k={i}" for i in range(variant.shape[1])]
    values = [{"kernel_size": i} for i in range(variant.shape[1])]
    return sequential.Comparisons(labels, values, [{"kernel_size": 5}] * len(labels), variant, baseline)


def test_a_sweep_is_at_the_first_stage_whose_seeds_an_open_comparison_lacks():
    rng = np.random.default_rng(3)
    baseline = np.full((1, 2, 10), np.nan)
    baseline[..., :3] = rng.normal(0, 0.5, 3)
    variant = np.full((1, 2, 10), np.nan)
    variant[0, 0, :3] = rng.normal(-30, 0.5, 3)  # decided at once
    variant[0, 1, :3] = rng.normal(0, 0.5, 3)  # open
    found = comparisons(variant, baseline)
    state = sequential.walk(found.variant, found.baseline, 10)
    assert state.stage == 2 and state.decided_at[0].tolist() == [1, 0]
    runs = sequential.next_runs(found, state)
    assert sorted((values["kernel_size"], seed) for values, seed in runs) == [(1, s) for s in (3, 4, 5)] + [
        (5, s) for s in (3, 4, 5)
    ]
    lines = sequential.state_lines(found, state, 1.0)
    assert lines[0].startswith("- k=0: decided at stage 1") and "gets seeds up to 6 at stage 2" in lines[1]


def test_a_comparison_whose_interval_lies_inside_the_resolve_stops_bounded():
    baseline = np.tile(np.array([0.0, 0.1, -0.1, 0.05, -0.05, 0.0]), (1, 1, 1))
    found = comparisons(baseline + 0.01, baseline)
    state = sequential.walk(found.variant, found.baseline, 6, resolve=1.0)
    assert state.bounded_at[0].tolist() == [1] and state.stage == 3
    assert sequential.next_runs(found, state) == []
    assert "bounded at stage 1" in sequential.state_lines(found, state, 1.0)[0]


def test_the_command_plans_the_committed_study_s_second_stage(capsys):
    assert sequential.cli(["results/cifar10-cpu", "--max-seeds", "6"]) == 0
    out = capsys.readouterr().out
    assert "- norm=layer: decided at stage 1" in out and "- patch_size=4: decided at stage 1" in out
    assert "Next: stage 2, 27 runs" in out  # 8 open variants and the baseline, seeds 3-5


def test_the_command_refuses_a_maximum_below_the_first_stage(capsys):
    assert sequential.cli(["results/cifar10-cpu", "--max-seeds", "2"]) == 2
    assert "--max-seeds 2 is not accepted: expected an integer >= 3" in capsys.readouterr().err


@pytest.mark.slow  # eight simulations of 4,000 studies: about 2 s
def test_docs_hold_the_simulation_table_the_command_prints(repo_root):
    docs = (repo_root / "docs" / "analysis.md").read_text()
    assert "\n".join(sequential.simulation_table()) in docs
