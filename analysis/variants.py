"""From runs to variants: group the runs of each config over seeds, summarise them, and compare each with a baseline.

A variant is one value of every swept key (seed aside). Only runs with status "done" enter the statistics; runs
that diverged, failed or have not finished are counted per variant so that a table can say so.
"""

import math

import pandas as pd

from ablations.store import DONE, STATUSES
from analysis.design import variant_keys, variant_label
from analysis.load import done
from analysis.stats import Difference, mean_ci, welch

METRICS = ("test_acc", "train_images_per_s")  # measured per run: averaged over seeds
MODEL_COSTS = ("params", "macs", "flops")  # fixed by the config: the same for every seed
NOT_DONE = tuple(status for status in STATUSES if status != DONE)


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
        for cost in MODEL_COSTS:
            known = group[cost].dropna() if cost in group else []
            row[cost] = known.iloc[0] if len(known) else math.nan
        for status in NOT_DONE:
            row[f"n_{status}"] = int((group["status"] == status).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def compare(
    runs: pd.DataFrame, baseline: dict, keys: list[str] | None = None, metric: str = "test_acc", level: float = 0.95
) -> pd.DataFrame:
    """Each variant minus its baseline: the same variant with the `baseline` keys set to their values (Welch CI).

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
        at_reference = (finished[list(reference)] == pd.Series(reference)).all(axis=1) if reference else True
        selected = finished.loc[at_reference] if reference else finished
        if is_baseline:
            d = Difference(math.nan, math.nan, math.nan, math.nan, math.nan)
        else:
            d = welch(done(group)[metric], selected[metric], level)
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
        )
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame, baseline: dict, keys: list[str] | None = None, level: float = 0.95) -> pd.DataFrame:
    """aggregate() and compare() side by side: one row per variant, the numbers of the report's table."""
    keys = variant_keys(runs) if keys is None else list(keys)
    # Both list the variants in the same order (sorted by the keys), so they join side by side.
    differences = compare(runs, baseline, keys, level=level).drop(columns=keys)
    return pd.concat([aggregate(runs, keys, level), differences], axis=1)
