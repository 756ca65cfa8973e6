"""The report's figures, each a function from tidy tables to a Plot: a Figure in the toolkit's style, and its caption.

Accuracy is shown in percent as the mean over seeds with its 95% confidence interval, clipped to [0, 100]%: with
2 or 3 seeds a t interval is wide and would otherwise reach below 0%. With few seeds (SEED_POINTS_UP_TO or fewer)
every seed's own result is drawn beside the mean, so the reader sees the spread the interval summarises. The
Pareto front of accuracy against a cost is drawn only through variants with at least two seeds: a single seed's
accuracy is one draw of the seed noise, so it is shown but never ranked.

A figure carries no title: each function returns the figure with its caption (what it shows, the model and the
data, n and what the bars are), which the report writes under the image in report.md, as a paper would.
"""

import textwrap
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib import transforms
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox
from numpy.typing import ArrayLike

from analysis import style
from analysis.stats import mean_ci, pareto_front

# Costs against which accuracy is plotted: column of the aggregate table, whether more is better, axis label.
COSTS = {
    "macs": ("macs", False, "MACs per image ({unit})"),
    "params": ("params", False, "Parameters ({unit})"),
    "throughput": ("train_images_per_s_mean", True, "Training throughput (images/s)"),
}
SEED_POINTS_UP_TO = 5  # with at most this many seeds per variant, each seed's result is drawn too
PARETO_MIN_SEEDS = 2  # a variant needs this many seeds to be ranked on the Pareto front
MUTED = "0.35"  # the grey of points that are shown but not ranked, and of label leader lines
# The least span of an accuracy axis, in percentage points: a 1 pp difference between two single seeds must not fill
# the height of a figure and look like an effect.
MIN_ACCURACY_SPAN = 10.0


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _wide_range(values: ArrayLike) -> bool:
    """Whether positive values span enough orders of magnitude to read better on a log axis."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return len(values) > 1 and values.min() > 0 and values.max() / values.min() >= 16


def clipped_error(y: ArrayLike, ci: ArrayLike, low: float = 0.0, high: float = 100.0) -> np.ndarray:
    """The 2xN (below, above) error-bar lengths of mean ± ci, cut where they would leave [low, high]."""
    y = np.asarray(y, dtype=float)
    ci = np.nan_to_num(np.asarray(ci, dtype=float))  # no CI (one seed): no bar
    return np.vstack([np.clip(np.minimum(ci, y - low), 0, None), np.clip(np.minimum(ci, high - y), 0, None)])


class Plot(NamedTuple):
    """A figure and its caption (the text report.md puts under it)."""

    figure: Figure
    caption: str


def seed_note(n: pd.Series) -> str:
    """How many seeds, and what the bars and points are: the end of a caption."""
    low, high = int(n.min()), int(n.max())
    seeds = f"n = {low}" if low == high else f"n = {low}-{high}"
    if high == 1:
        return "one run: no CI" if len(n) == 1 else f"{seeds} seed per variant: no CI"
    note = f"mean ± 95% CI (clipped to 0-100%), {seeds} seeds"
    return note + (", dots: each seed" if high <= SEED_POINTS_UP_TO else "")


def caption(what: str, source: str, note: str) -> str:
    """`what` the figure shows, then the model and data (`source`, so that it can be cited alone), then `note`."""
    return " ".join(_sentence(part) for part in (what, source, note) if part)


def _sentence(text: str) -> str:
    """A capital and a full stop; a sentence that opens with a symbol (`n = 3 seeds`) keeps its case."""
    symbol = text.split(" ")[1:2] == ["="]
    return f"{text if symbol else text[0].upper() + text[1:]}."


def _lower_first(text: str) -> str:
    """`Kernel size` -> `kernel size` inside a sentence; `MACs` stays as it is."""
    return text if text[1:2].isupper() else text[:1].lower() + text[1:]


def _legend_below(fig: Figure, handles: list, labels: list[str]) -> None:
    """The legend under the axes, in as many columns as fit the figure's width: beside the axes, it took a third of
    a one-column figure."""
    for ncols in range(min(len(labels), 6), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncols=ncols)
        if ncols == 1 or legend.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width:
            return
        legend.remove()


def keep_accuracy_span(ax) -> None:
    """Widen the y axis to at least MIN_ACCURACY_SPAN points around its data, within 0-100%."""
    low, high = ax.get_ylim()
    if high - low >= MIN_ACCURACY_SPAN:
        return
    low = min(max(0.0, (low + high - MIN_ACCURACY_SPAN) / 2), 100.0 - MIN_ACCURACY_SPAN)
    ax.set_ylim(low, low + MIN_ACCURACY_SPAN)


def _series(agg: pd.DataFrame, others: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(legend label, rows) for each combination of the keys that are not on the x axis."""
    if not others:
        return [("", agg)]
    groups = agg.groupby(others, sort=True)
    return [(style.short_label(dict(zip(others, values, strict=True))), rows) for values, rows in groups]


def _seeds_of(row: dict, runs: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """The test accuracies (%) of the finished runs of one variant."""
    mask = np.ones(len(runs), dtype=bool)
    for key in keys:
        mask &= (runs[key] == row[key]).to_numpy()
    return 100 * runs.loc[mask, "test_acc"].to_numpy(float)


def _draw_seeds(ax, transform, xs: ArrayLike, rows: pd.DataFrame, runs: pd.DataFrame, keys: list[str], look: dict):
    if not 1 < rows["n"].max() <= SEED_POINTS_UP_TO:  # one seed is the mean itself
        return
    for x, row in zip(xs, rows.to_dict("records"), strict=True):
        seeds = _seeds_of(row, runs, keys)
        ax.plot(np.full(len(seeds), x), seeds, linestyle="none", marker=look["marker"], markersize=3,
                mfc="none", mec=look["color"], alpha=0.8, transform=transform)  # fmt: skip


def accuracy_vs_key(
    agg: pd.DataFrame,
    runs: pd.DataFrame,
    key: str,
    keys: list[str],
    levels: list | None = None,
    baseline=None,
    source: str = "",
    width: str = "one",
) -> Plot:
    """Test accuracy against one swept key, one line per value of the other `keys`; `runs`: the finished runs.

    `levels`: the key's values in the order to show them (default: sorted); the `baseline` value's tick says so.
    `source` (provenance.figure_source) names the model and the data in the caption; `width`: "one" or "two"
    columns of a paper. Values that are words (residual, norm) have no order between them, so their points are not
    joined by lines.
    """
    with style.context():
        fig = style.figure(width)
        ax = fig.add_subplot()
        numeric = _is_numeric(agg[key])
        present = set(agg[key])
        levels = [value for value in levels if value in present] if levels is not None else sorted(present)
        others = [other for other in keys if other != key]
        series = _series(agg, others)
        for i, (label, rows) in enumerate(series):
            rows = rows.sort_values(key)
            x = rows[key].to_numpy(float) if numeric else np.array([levels.index(value) for value in rows[key]], float)
            # Nudge each series sideways by a few points so that error bars at the same x do not hide each other;
            # its seeds sit 3 points to the right of its mean.
            shift = 5.0 * (i - (len(series) - 1) / 2)
            nudge = transforms.offset_copy(ax.transData, fig=fig, x=shift, units="points")
            y = 100 * rows["test_acc_mean"].to_numpy(float)
            error = clipped_error(y, 100 * rows["test_acc_ci"].to_numpy(float))
            look = style.series_style(i) | ({} if numeric else {"linestyle": "none"})
            ax.errorbar(x, y, yerr=error, label=label or None, transform=nudge, **look)
            _draw_seeds(ax, transforms.offset_copy(nudge, fig=fig, x=3.0, units="points"), x, rows, runs, keys, look)
            # Artists with their own transform do not widen the axes' limits by themselves.
            ax.update_datalim(np.column_stack([np.concatenate([x, x]), np.concatenate([y - error[0], y + error[1]])]))
        if numeric and _wide_range(levels):
            ax.set_xscale("log")
        names = [f"{value:g}" if numeric else str(value) for value in levels]
        marked = zip(names, levels, strict=True)
        names = [name + ("\n(baseline)" if value == baseline else "") for name, value in marked]
        ax.set_xticks(levels if numeric else range(len(levels)), names)
        ax.minorticks_off()
        ax.margins(x=0.08)
        ax.autoscale_view()
        keep_accuracy_span(ax)
        ax.set_xlabel(style.key_label(key))
        ax.set_ylabel("Test accuracy (%)")
        if len(series) > 1:
            _legend_below(fig, *ax.get_legend_handles_labels())
        what = f"test accuracy against {_lower_first(style.key_label(key))}"
        if others:
            what += f", one {'line' if numeric else 'colour'} per {', '.join(map(style.short_key, others))}"
        return Plot(fig, caption(what, source, seed_note(agg["n"])))


def ranked_front(x: ArrayLike, y: ArrayLike, n: ArrayLike, higher_cost_is_better: bool) -> np.ndarray:
    """The Pareto front among the variants with at least PARETO_MIN_SEEDS seeds; others are never on it."""
    ranked = np.asarray(n) >= PARETO_MIN_SEEDS
    y = np.where(ranked, np.asarray(y, dtype=float), np.nan)  # NaN points are never on the front
    return pareto_front(x, y, higher_cost_is_better=higher_cost_is_better)


# Where a point's label may go, nearest first: its direction from the point (degrees; level with it first, so that the
# point's vertical error bar does not cross it) at each distance (points). Beyond the first distance, a thin leader
# line joins the label to its point.
LABEL_ANGLES = (0, 180, 90, 270, 30, 330, 150, 210, 60, 300, 120, 240)
LABEL_DISTANCES = (5, 12, 20, 30, 45, 60)


def _free(box: Bbox, inside: Bbox, taken: list[Bbox]) -> bool:
    within = inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
    return within and not any(box.overlaps(other) for other in taken)


def place_labels(ax, x: ArrayLike, y: ArrayLike, texts: list[str | None], fontsize: float) -> list[str]:
    """Name each point (x, y) with its text (None: no label), in this order, at the nearest place where it covers no
    other label and no point, inside the axes; returns the texts that found no such place (left out).

    It measures the labels as drawn, so it runs last, once the figure's layout is final; the layout is then frozen,
    or a new layout pass would move the axes under labels placed for the old one."""
    fig = ax.figure
    fig.get_layout_engine().execute(fig)  # the layout alone, cheaper than a whole draw
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    points = ax.transData.transform(np.column_stack([x, y]))
    radius = fig.dpi / 72 * 4  # a marker's half-width, in pixels, with a margin
    taken = [Bbox.from_extents(px - radius, py - radius, px + radius, py + radius) for px, py in points]
    inside = ax.get_window_extent(renderer)
    labels = [(xi, yi, text) for xi, yi, text in zip(x, y, texts, strict=True) if text is not None]
    return [text for xi, yi, text in labels if not _place(ax, xi, yi, text, fontsize, renderer, inside, taken)]


def _place(ax, x: float, y: float, text: str, fontsize: float, renderer, inside: Bbox, taken: list[Bbox]) -> bool:
    """Add the first free label of `text` for the point (x, y), its box to `taken`; False if none is free."""
    for distance in LABEL_DISTANCES:
        for label in _candidates(ax, x, y, text, distance, fontsize):
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer)  # the text alone: an annotation's own box has its leader
            if _free(box, inside, taken):
                taken.append(box)
                return True
            label.remove()
    return False


def _candidates(ax, x: float, y: float, text: str, distance: float, fontsize: float):
    """The labels at one distance around a point, each added to the axes in turn (a rejected one is removed)."""
    leader = {"arrowprops": {"arrowstyle": "-", "color": MUTED, "linewidth": 0.5, "shrinkA": 0, "shrinkB": 3}}
    # A light backing keeps a label legible where an error bar or the front's line passes behind it.
    backing = {"boxstyle": "square,pad=0.05", "facecolor": "white", "edgecolor": "none", "alpha": 0.75}
    for angle in LABEL_ANGLES:
        dx, dy = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        # The side of the label that faces the point sits at the offset.
        ha = "left" if dx > 0.1 else "right" if dx < -0.1 else "center"
        va = "bottom" if dy > 0.1 else "top" if dy < -0.1 else "center"
        yield ax.annotate(
            text, (x, y), xytext=(dx * distance, dy * distance), textcoords="offset points", fontsize=fontsize,
            ha=ha, va=va, bbox=backing, **(leader if distance > LABEL_DISTANCES[0] else {}),
        )  # fmt: skip


def accuracy_vs_cost(
    agg: pd.DataFrame,
    runs: pd.DataFrame,
    cost: str,
    keys: list[str],
    labels: list[str],
    hardware: str = "",
    source: str = "",
    width: str = "one",
) -> Plot:
    """Test accuracy against a cost (one of COSTS), the Pareto front dashed, each point named by its `labels`.

    `hardware` names what measured the throughput (shown under its axis); `source` names the model and the data in
    the caption; `width`: "one" or "two" columns of a paper. The legend sits under the plot: its hollow marker for an
    unranked point would read as one more point inside.
    """
    column, higher_is_better, label = COSTS[cost]
    scale, unit = style.si_unit(agg[column]) if cost in ("macs", "params") else (1.0, "")
    x = agg[column].to_numpy(float) / scale
    y = 100 * agg["test_acc_mean"].to_numpy(float)
    n = agg["n"].to_numpy()
    front = ranked_front(x, y, n, higher_is_better)
    unranked = n < PARETO_MIN_SEEDS
    with style.context():
        fig = style.figure(width)
        ax = fig.add_subplot()
        colour = style.OKABE_ITO[0]
        ax.errorbar(x, y, yerr=clipped_error(y, 100 * agg["test_acc_ci"]), fmt="none", ecolor=colour, elinewidth=1)
        _draw_seeds(ax, ax.transData, x, agg, runs, keys, {"color": colour, "marker": "."})
        dominated = ~front & ~unranked
        if dominated.any():
            ax.plot(x[dominated], y[dominated], "o", mfc="white", mec=colour, label="dominated")
        if unranked.any():
            ax.plot(x[unranked], y[unranked], "o", mfc="white", mec=MUTED, label="one seed: not ranked")
        if front.any():
            order = np.argsort(x[front])
            front_label = f"Pareto front (n ≥ {PARETO_MIN_SEEDS})"
            ax.plot(x[front][order], y[front][order], "o--", color=colour, label=front_label)
        if _wide_range(x):
            ax.set_xscale("log")
        axis_label = label.format(unit=unit)
        hardware = textwrap.fill(hardware, 50 if width == "one" else 110)
        ax.set_xlabel(f"{axis_label}\n{hardware}" if cost == "throughput" and hardware else axis_label)
        ax.set_ylabel("Test accuracy (%)")
        keep_accuracy_span(ax)
        # Below the axes and their label: inside, its hollow marker read as one more point; to the right, the
        # points' labels ran into it.
        _legend_below(fig, *ax.get_legend_handles_labels())
        # Beyond a handful of points, labels would crowd the plot: then only the front is named, front first.
        named = front if len(agg) > 8 else np.ones_like(front)
        texts = [text if name else None for text, name in zip(labels, named, strict=True)]
        order = np.lexsort((x, ~front))
        left_out = place_labels(ax, x[order], y[order], [texts[i] for i in order], style.MIN_FONT_SIZE)
        what = f"test accuracy against {_lower_first(axis_label)}" + (", Pareto front dashed" if front.any() else "")
        note = seed_note(agg["n"]) + (f"; no room to name {', '.join(left_out)}" if left_out else "")
        return Plot(fig, caption(what, source, note))


def _mean_band(values: pd.DataFrame) -> pd.DataFrame:
    """Per epoch (rows) over seeds (columns): mean and CI half-width."""
    estimates = [mean_ci(row) for row in values.to_numpy()]
    return pd.DataFrame({"mean": [e.mean for e in estimates], "ci": [e.ci for e in estimates]}, index=values.index)


# Metric, scale to the plotted unit, axis label, and the range a band may not leave.
CURVE_PANELS = [("test_acc", 100, "Test accuracy (%)", (0.0, 100.0)), ("train_loss", 1, "Training loss", (0.0, None))]


def curves_note(n: pd.Series, left_out: int) -> str:
    """How many seeds a curve averages and what its band and thin lines are; the runs left out, if any."""
    n_min, n_max = int(n.min()), int(n.max())
    if n_max == 1:
        note = "one run: no band" if len(n) == 1 else "one seed per variant: no band"
    else:
        thin = ", thin: each seed" if n_max <= SEED_POINTS_UP_TO else ""
        seeds = f"n = {n_min}" if n_min == n_max else f"n = {n_min}-{n_max}"
        note = f"mean over {seeds} seeds, band: 95% CI (clipped){thin}"
    if left_out:
        note += f"; {left_out} run{'s' if left_out > 1 else ''} left out (history.json missing, short or long)"
    return note


def training_curves(
    history: pd.DataFrame,
    runs: pd.DataFrame,
    keys: list[str],
    source: str = "",
    left_out: int = 0,
    width: str = "one",
) -> Plot:
    """Test accuracy and training loss per epoch, mean over seeds with a 95% CI band, one line per variant.

    With SEED_POINTS_UP_TO seeds or fewer, each seed's curve is drawn thin beside the mean. `source` names the model
    and the data in the caption; `left_out` runs (done, but their history does not match the run) are said to be
    missing. One column wide, the two panels are stacked; two columns wide, they sit side by side.
    """
    joined = history.merge(runs[["run_id", *keys]], on="run_id")
    n = runs.groupby(keys)["run_id"].nunique() if keys else pd.Series([runs["run_id"].nunique()])
    with style.context():
        fig = style.figure(width, 2 * style.HEIGHT if width == "one" else style.HEIGHT + 0.2)
        axes = fig.subplots(2, 1, sharex=True) if width == "one" else fig.subplots(1, 2)
        variants = list(joined.groupby(keys, sort=True)) if keys else [((), joined)]
        for i, (values, rows) in enumerate(variants):
            label = style.short_label(dict(zip(keys, values, strict=True)))
            look = style.series_style(i)
            for ax, (metric, factor, _, (low, high)) in zip(axes, CURVE_PANELS, strict=True):
                per_seed = rows[rows["metric"] == metric].pivot_table("value", "epoch", "run_id") * factor
                band = _mean_band(per_seed)
                ax.plot(band.index, band["mean"], label=label, markevery=max(1, len(band) // 8), **look)
                if n.max() <= SEED_POINTS_UP_TO and per_seed.shape[1] > 1:
                    ax.plot(per_seed.index, per_seed.to_numpy(), color=look["color"], linewidth=0.6, alpha=0.45)
                below, above = (band["mean"] - band["ci"]).clip(low, high), (band["mean"] + band["ci"]).clip(low, high)
                ax.fill_between(band.index, below, above, color=look["color"], alpha=0.2, linewidth=0)
        for ax, (_, _, ylabel, _) in zip(axes, CURVE_PANELS, strict=True):
            ax.set_xlabel("Epoch" if ax is axes[-1] or width == "two" else "")
            ax.set_ylabel(ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(variants) > 1:
            _legend_below(fig, *axes[0].get_legend_handles_labels())
        what = "test accuracy and training loss per epoch" + (
            f", one line per {', '.join(map(style.short_key, keys))}" if len(variants) > 1 else ""
        )
        return Plot(fig, caption(what, source, curves_note(n, left_out)))
