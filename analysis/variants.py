"""From runs to variants: group the runs of each config over seeds, summarise them, and compare each with a baseline.

A variant is one value of every swept key (seed aside). Only runs with status "done" enter the statistics; runs
that diverged, failed or have not finished are counted per variant so that a table can say so. The comparisons of
one report are one family: their p-values are Holm-adjusted together.
"""

import math

import pandas as pd

from ablations.store import DONE, STATUSES
from analysis.design import variant_keys, variant_label
from analysis.load import done
from analysis.stats import Difference, bootstrap_difference, holm, mean_ci, noise_floor, welch

METRICS = ("test_acc", "train_images_per_s")  # measured per run: averaged over seeds
MODEL_COSTS = ("params", "macs", "flops")  # fixed by the config: the same for every seed
NOT_DONE = tuple(status for status in STATUSES if status != DONE)
FULL_TEST_SET = {"cifar10": 10_000, "cifar100": 10_000}  # the test images of a dataset read whole (test_subset 0)


def test_images(config: dict) -> int:
    """How many images a run was tested on, 0 where the config does not say (a folder read whole)."""
    return int(config["test_subset"] or FULL_TEST_SET.get(config["dataset"], 0))


def _groups(runs: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(values, runs) per variant, sorted by the key values; one group of everything when no key varies."""
    if not keys:
        return [((), runs)]
    return list(runs.groupby(keys, sort=True, dropna=False))


def aggregate(runs: pd.DataFrame, keys: list[str] | None = None, level: float = 0.95) -> pd.DataFrame:
    """One row per variant: the keys, n (done seeds), mean/sd/CI half-width of each metric, costs, not-done counts."""
    keys = variant_keys(runs) if keys is None else list(keys)
    rows = []
    for values, group in _groups(runs, keys):
        finished = done(group)
        row = dict(zip(keys, values, strict=True))
        row["n"] = len(finished)
        for metric in METRICS:
            estimate = mean_ci(finished[metric] if metric in finished else [], level)
            row |= {f"{metric}_mean": estimate.mean, f"{metric}_sd": estimate.sd, f"{metric}_ci": estimate.ci}
        tested = {test_images(config) for config in group[["dataset", "test_subset"]].to_dict("records")}
        row["n_test"] = tested.pop() if len(tested) == 1 else 0
        row["test_acc_noise"] = noise_floor(row["test_acc_mean"], row["n_test"])
        for cost in MODEL_COSTS:
            known = group[cost].dropna() if cost in group else []
            row[cost] = known.iloc[0] if len(known) else math.nan
        for status in NOT_DONE:
            row[f"n_{status}"] = int((group["status"] == status).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def compare(
    runs: pd.DataFrame,
    baseline: dict,
    keys: list[str] | None = None,
    metric: str = "test_acc",
    level: float = 0.95,
    bootstrap: bool = False,
) -> pd.DataFrame:
    """Each variant minus its baseline: the same variant with the `baseline` keys set to their values (Welch CI
    and p; p_holm, Holm-adjusted over every comparison of the frame; with `bootstrap`, a percentile bootstrap CI).

    With baseline {"kernel_size": 9} and kernel_size x patch_size swept, every variant is compared with the
    kernel_size=9 run of the same patch_size; the baseline rows themselves get is_baseline=True and no difference.
    """
    keys = variant_keys(runs) if keys is None else list(keys)
    finished = done(runs)
    rows = []
    for values, group in _groups(runs, keys):
        variant = dict(zip(keys, values, strict=True))
        reference = variant | baseline
        is_baseline = reference == variant
        at_reference = (finished[list(reference)] == pd.Series(reference)).all(axis=1)
        selected = finished.loc[at_reference] if reference else finished
        own = done(group)[metric]
        if is_baseline:
            d = Difference(math.nan, math.nan, math.nan, math.nan, math.nan)
        else:
            d = welch(own, selected[metric], level)
        extra = {}
        if bootstrap:
            low, high = (math.nan, math.nan) if is_baseline else bootstrap_difference(own, selected[metric], level)
            extra = {"diff_boot_low": low, "diff_boot_high": high}
        rows.append(
            variant
            | {
                "baseline": variant_label(reference),
                "is_baseline": is_baseline,
                "diff": d.diff,
                "diff_low": d.low,
                "diff_high": d.high,
                "df": d.df,
                "p": d.p,
                "n_baseline": len(selected),
            }
            | extra
        )
    frame = pd.DataFrame(rows)
    frame.insert(frame.columns.get_loc("p") + 1, "p_holm", holm(frame["p"]))
    return frame


def summarise(
    runs: pd.DataFrame, baseline: dict, keys: list[str] | None = None, level: float = 0.95, bootstrap: bool = False
) -> pd.DataFrame:
    """aggregate() and compare() side by side: one row per variant, the numbers of the report's table."""
    keys = variant_keys(runs) if keys is None else list(keys)
    # Both list the variants in the same order (sorted by the keys), so they join side by side.
    differences = compare(runs, baseline, keys, level=level, bootstrap=bootstrap).drop(columns=keys)
    return pd.concat([aggregate(runs, keys, level), differences], axis=1)
