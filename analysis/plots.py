"""The report's figures, each a function from tidy tables to a matplotlib Figure drawn in the toolkit's style.

Accuracy is shown in percent with 95% confidence intervals over seeds (no bar where a variant has one seed);
the Pareto front of accuracy against a cost is drawn as a dashed line through the variants no other one beats.
"""

import numpy as np
import pandas as pd
from matplotlib import transforms
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike

from analysis import style
from analysis.stats import mean_ci, pareto_front
from analysis.variants import variant_label

# Costs against which accuracy is plotted: column of the aggregate table, whether more is better, axis label.
COSTS = {
    "macs": ("macs", False, "MACs per image ({unit})"),
    "params": ("params", False, "Parameters (M)"),
    "throughput": ("train_images_per_s_mean", True, "Training throughput (images/s)"),
}


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _wide_range(values: ArrayLike) -> bool:
    """Whether positive values span enough orders of magnitude to read better on a log axis."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return len(values) > 1 and values.min() > 0 and values.max() / values.min() >= 16


def _seed_note(n: pd.Series) -> str:
    low, high = int(n.min()), int(n.max())
    seeds = f"n = {low}" if low == high else f"n = {low}-{high}"
    return f"mean ± 95% CI over seeds ({seeds})" + ("; one seed: no CI" if low == 1 else "")


def _series(agg: pd.DataFrame, others: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) for each combination of the keys that are not on the x axis."""
    if not others:
        return [("", agg)]
    groups = agg.groupby(others, sort=True)
    return [(variant_label(dict(zip(others, values, strict=True))), rows) for values, rows in groups]


def accuracy_vs_key(agg: pd.DataFrame, key: str, keys: list[str]) -> Figure:
    """Test accuracy against one swept key, one line per value of the other swept keys."""
    with style.context():
        fig = Figure()
        ax = fig.add_subplot()
        numeric = _is_numeric(agg[key])
        levels = sorted(agg[key].unique())
        series = _series(agg, [other for other in keys if other != key])
        for i, (label, rows) in enumerate(series):
            rows = rows.sort_values(key)
            x = rows[key].to_numpy(float) if numeric else [levels.index(value) for value in rows[key]]
            # Nudge each series sideways by a few points so that error bars at the same x do not hide each other.
            nudge = transforms.offset_copy(ax.transData, fig=fig, x=3.0 * (i - (len(series) - 1) / 2), units="points")
            y, ci = 100 * rows["test_acc_mean"].to_numpy(float), 100 * rows["test_acc_ci"].fillna(0).to_numpy(float)
            ax.errorbar(x, y, yerr=ci, label=label or None, transform=nudge, **style.series_style(i))
            # Artists with their own transform do not widen the axes' limits by themselves.
            ax.update_datalim(np.column_stack([np.concatenate([x, x]), np.concatenate([y - ci, y + ci])]))
        if numeric and _wide_range(levels):
            ax.set_xscale("log")
        ax.set_xticks(
            levels if numeric else range(len(levels)), [f"{value:g}" if numeric else str(value) for value in levels]
        )
        ax.minorticks_off()
        ax.autoscale_view()
        ax.set_xlabel(style.key_label(key))
        ax.set_ylabel("Test accuracy (%)")
        ax.set_title(_seed_note(agg["n"]), loc="left", color="0.35")
        if len(series) > 1:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return fig


def accuracy_vs_cost(agg: pd.DataFrame, cost: str, keys: list[str]) -> Figure:
    """Test accuracy against a cost (one of COSTS), the Pareto front dashed, points labelled with their keys."""
    column, higher_is_better, label = COSTS[cost]
    scale, unit = style.macs_unit(agg["macs"]) if cost == "macs" else (1e6 if cost == "params" else 1.0, "")
    x = agg[column].to_numpy(float) / scale
    y = 100 * agg["test_acc_mean"].to_numpy(float)
    front = pareto_front(x, y, higher_cost_is_better=higher_is_better)
    with style.context():
        fig = Figure()
        ax = fig.add_subplot()
        colour = style.OKABE_ITO[0]
        ax.errorbar(x, y, yerr=100 * agg["test_acc_ci"], fmt="none", ecolor=colour, elinewidth=1)
        ax.plot(x[~front], y[~front], "o", mfc="white", mec=colour, label="dominated")
        order = np.argsort(x[front])
        ax.plot(x[front][order], y[front][order], "o--", color=colour, label="Pareto front")
        # Beyond a handful of points, labels would cover each other: then only the front is named.
        labelled = front if len(agg) > 8 else np.ones_like(front)
        for xi, yi, values in zip(x[labelled], y[labelled], agg[keys][labelled].to_dict("records"), strict=True):
            ax.annotate(style.short_label(values), (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=7)
        if _wide_range(x):
            ax.set_xscale("log")
        ax.set_xlabel(label.format(unit=unit))
        ax.set_ylabel("Test accuracy (%)")
        ax.set_title(_seed_note(agg["n"]), loc="left", color="0.35")
        ax.legend(loc="best")
        return fig


def _mean_band(values: pd.DataFrame) -> pd.DataFrame:
    """Per epoch (rows) over seeds (columns): mean and CI half-width."""
    estimates = [mean_ci(row) for row in values.to_numpy()]
    return pd.DataFrame({"mean": [e.mean for e in estimates], "ci": [e.ci for e in estimates]}, index=values.index)


def training_curves(history: pd.DataFrame, runs: pd.DataFrame, keys: list[str]) -> Figure:
    """Test accuracy and training loss per epoch, mean over seeds with a 95% CI band, one line per variant."""
    panels = [("test_acc", 100, "Test accuracy (%)"), ("train_loss", 1, "Training loss")]
    joined = history.merge(runs[["run_id", *keys]], on="run_id")
    with style.context():
        fig = Figure(figsize=(2 * style.WIDTH, style.HEIGHT))
        axes = fig.subplots(1, 2)
        variants = list(joined.groupby(keys, sort=True)) if keys else [((), joined)]
        for i, (values, rows) in enumerate(variants):
            label = variant_label(dict(zip(keys, values, strict=True)))
            for ax, (metric, factor, _) in zip(axes, panels, strict=True):
                per_seed = rows[rows["metric"] == metric].pivot_table("value", "epoch", "run_id")
                band = _mean_band(per_seed * factor)
                look = style.series_style(i)
                ax.plot(band.index, band["mean"], label=label, markevery=max(1, len(band) // 8), **look)
                ax.fill_between(
                    band.index,
                    band["mean"] - band["ci"],
                    band["mean"] + band["ci"],
                    color=look["color"],
                    alpha=0.2,
                    linewidth=0,
                )
        for ax, (_, _, ylabel) in zip(axes, panels, strict=True):
            ax.set_xlabel("Epoch")
            ax.set_ylabel(ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].set_title("mean over seeds, band: 95% CI", loc="left", color="0.35")
        if len(variants) > 1:
            axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        return fig
