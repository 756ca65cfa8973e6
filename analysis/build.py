"""What a report holds and how it is written: the tables, notes and figures of `python -m analysis.report` (its
command line is analysis/report.py), report.md, and `build_report`, which writes them whole into a staging folder
beside the report folder, then swaps it in, so that a reader sees the old report or the new one.
"""

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from ablations import atomic
from ablations.store import DONE
from analysis import plots, provenance, seeds, sequential, style, tables
from analysis.design import Scope, axis_rows, scope, variant_label
from analysis.errors import AnalysisError
from analysis.load import history_gaps, load_history
from analysis.variants import NOT_DONE, summarise

CI_NOTE = "Accuracy: mean ± half-width of the 95% Student-t confidence interval over n seeds; n/a: one seed, no CI."
DIFF_NOTE = (
    "Δ: difference of mean test accuracy from the baseline (the same variant with the baseline's values), "
    "in percentage points, with Welch's 95% confidence interval. p (Holm): Welch's two-sided p-value, "
    f"Holm-adjusted over every comparison of the table; a difference is called an effect only when it is below "
    f"{tables.SIGNIFICANCE}, and its p is marked {tables.MARK} (the unadjusted intervals may exclude 0 where it is "
    "not)."
)
BOOTSTRAP_NOTE = (
    "Δ bootstrap 95% CI: percentile bootstrap of the difference of means, each side's seeds resampled "
    "(9,999 resamples, seeded); with 3 seeds a side it is narrower than Welch's and not to be trusted alone."
)
PARETO_NOTE = (
    f"Pareto fronts rank only variants with at least {plots.PARETO_MIN_SEEDS} seeds (one seed is one draw of "
    "the seed noise); a point on the front is not better than its neighbours where their CIs overlap."
)
# The figures a report writes: the names a rerun into the same folder may find left over from an earlier report.
FIGURE_PATTERNS = ("accuracy_vs_*.png", "accuracy_vs_*.pdf", "training_curves*.png", "training_curves*.pdf")


def point_labels(variants: pd.DataFrame, scope: Scope) -> list[str]:
    """How each variant is named beside its point: in a study, by what it changes from the baseline."""
    labels = []
    for row in variants.to_dict("records"):
        if scope.varied:
            changed = {key: row[key] for key in scope.varied if row[key] != scope.baseline.get(key)}
            values = {key: row[key] for key in scope.grid_keys} | changed
        else:
            values = {key: row[key] for key in scope.keys}
        labels.append(style.short_label(values) or "baseline")
    return labels


def figure_set(
    variants: pd.DataFrame, history: pd.DataFrame, scope: Scope, width: str = "one"
) -> dict[str, plots.Plot]:
    """The report's figures with their captions by file stem, `width` one or two columns of a paper: accuracy
    against each swept key (in a study: along its axis), against each cost, and the training curves (in a study:
    one figure per axis, or every variant would share one).

    Each caption names the model and the data; the curves leave out the done runs whose history does not match the
    run, and say so."""
    made = {}
    done = scope.done
    source = provenance.figure_source(done)
    for key in scope.keys:
        on_axis = axis_rows(variants, key, scope.varied, scope.baseline)
        if (on_axis["n"] > 0).sum() < 2:  # one measured value of the key: a single point, not a trend
            continue
        runs_on_axis = axis_rows(done, key, scope.varied, scope.baseline)
        series_keys = [key, *(other for other in scope.grid_keys if other != key)]
        made[f"accuracy_vs_{key}"] = plots.accuracy_vs_key(
            on_axis, runs_on_axis, key, series_keys, scope.levels(key), scope.baseline.get(key), source, width
        )
    measured = variants[variants["n"] > 0]
    hardware = provenance.throughput_label(scope.runs)
    labels = point_labels(measured, scope)
    for cost in plots.COSTS if len(measured) > 1 else ():  # one variant is one point: no trade-off to draw
        made[f"accuracy_vs_{cost}"] = plots.accuracy_vs_cost(
            measured, done, cost, scope.keys, labels, hardware, source, width
        )
    gaps = history_gaps(done, history)
    with_history = done[~done["run_id"].isin(gaps)]
    done_history = history[history["run_id"].isin(with_history["run_id"])]
    if done_history["epoch"].nunique() < 2:  # a curve of one epoch is a point: the table holds it
        return made
    for key in scope.varied or [None]:
        runs = axis_rows(with_history, key, scope.varied, scope.baseline) if key else with_history
        left_out = len(axis_rows(done, key, scope.varied, scope.baseline) if key else done) - len(runs)
        curve_keys = [key, *scope.grid_keys] if key else scope.keys
        stem = f"training_curves_{key}" if key else "training_curves"
        made[stem] = plots.training_curves(done_history, runs, curve_keys, source, left_out, width)
    return made


def gaps_text(scope: Scope, gaps: dict[str, str]) -> str:
    """The done runs the training curves leave out, each with its variant, seed and why."""
    rows = scope.runs.set_index("run_id")
    return "; ".join(
        f"{run_id} ({variant_label({key: rows.at[run_id, key] for key in scope.keys})}, seed {rows.at[run_id, 'seed']}"
        f": {why})"
        for run_id, why in gaps.items()
    )


def index(
    sweeps: list[Path],
    scope: Scope,
    table_md: str,
    notes: str,
    files: list[str],
    gaps: dict[str, str],
    plan: list[str],
    captions: dict[str, str],
) -> str:
    """report.md: what ran, the table, the seed plan, the figures with their `captions` (by file stem) and the list
    of `files` (names inside the report folder)."""
    runs = scope.runs
    counts = runs["status"].value_counts()
    statuses = ", ".join(f"{counts.get(status, 0)} {status}" for status in (DONE, *NOT_DONE))
    swept = "; ".join(f"{key} ∈ {{{', '.join(map(str, sorted(runs[key].unique())))}}}" for key in scope.keys)
    descriptions = [design.description for design in scope.designs.values() if design and design.description]
    setup = provenance.setup(runs, scope.designs, scope.keys)
    mixed = f"- Pooled with --allow-mixed although they differ in: {', '.join(scope.mixed)}" if scope.mixed else ""
    dropped = [f"- Left out: {line}" for line in left_out_lines(scope)]
    lines = [
        f"# Report: {', '.join(sorted(runs['sweep'].unique()))}",
        "",
        *(f"{text}\n" for text in descriptions),
        "## What ran",
        "",
        *(f"- {name}: {text}" for name, text in setup.items()),
        f"- Sweeps: {', '.join(str(sweep) for sweep in sweeps)}",
        f"- Runs: {statuses}",
        f"- Swept: {swept or 'nothing but the seed'}",
        f"- Baseline: {variant_label(scope.baseline)}",
        *([mixed] if mixed else []),
        *dropped,
        *([f"- Left out of the training curves: {gaps_text(scope, gaps)}"] if gaps else []),
        "",
        "## Results",
        "",
        table_md,
        notes,
        "",
        "## Seeds needed",
        "",
        *plan,
        "",
        "`python -m analysis.seeds <sweep> --delta POINTS` plans another difference.",
        "",
        "## Figures",
        "",
        *(f"![{stem}]({stem}.png)\n\n*{stem}*: {text}\n" for stem, text in captions.items()),
        "## Files",
        "",
        *(f"- [{name}]({name})" for name in files),
    ]
    return "\n".join(lines) + "\n"


def left_out_lines(scope: Scope) -> list[str]:
    """The run folders the report leaves out, one line per folder and reason, with their ids."""
    groups = scope.left_out.groupby(["sweep", "reason"], sort=True)["run_id"] if len(scope.left_out) else []
    return [
        f"{len(ids)} run{'s' if len(ids) > 1 else ''} of {sweep} {reason} (--design all includes them)"
        if reason == "of another design"
        else f"{len(ids)} run{'s' if len(ids) > 1 else ''} of {sweep} {reason} of its sweep.json (copied in?)"
        for (sweep, reason), ids in groups
    ]


def write_files(staging: Path, target: Path, texts: dict[str, str], figures: dict[str, plots.Plot]) -> None:
    """Every report file into `staging`, and the files of the report folder `target` that a report does not write
    (the user's notes): the figures an earlier report wrote and this one does not (a key no longer swept) are left
    behind with the old folder."""
    for name, text in texts.items():
        (staging / name).write_text(text)
    for stem, plot in figures.items():
        style.save(plot.figure, staging / stem)
    atomic.keep_files(target, staging, FIGURE_PATTERNS)


def check_out(out: Path, target: Path, sweeps: list[Path]) -> None:
    """AnalysisError unless `out` can be the report's own folder: a report replaces the whole folder,
    so it must not hold a sweep it reads, or the current folder."""
    for inside in [*(Path(sweep).resolve() for sweep in sweeps), Path.cwd().resolve()]:
        if inside.is_relative_to(target):
            raise AnalysisError(
                f"--out {str(out)!r} is not accepted: it holds {inside}, and a report replaces its whole folder; "
                "choose a folder of its own (default: <first sweep>/report)"
            )


def contents(
    sweeps: list[Path], chosen: Scope, columns: Sequence[str], bootstrap: bool, figure_width: str = "one"
) -> tuple[dict[str, str], dict[str, plots.Plot]]:
    """Every report file's text by name, and the figures (`figure_width` one or two columns of a paper) with their
    captions by stem.

    table.tex holds the core columns (it must fit one column of a page), table-wide.tex adds the bootstrap CI (when
    computed) and those of `columns` (tables.OPTIONAL); table.md and report.md hold them all."""
    auto = sequential.standing(chosen)  # None unless the seeds are the sequential design's
    variants = sequential.with_design_p(
        summarise(chosen.runs, chosen.baseline, chosen.keys, bootstrap=bootstrap), chosen, auto
    )
    cpu = provenance.measured_on_cpu(chosen.runs)
    made = tables.study_table(variants, chosen, cpu) if chosen.varied else tables.table(variants, chosen.keys, cpu)
    compared = bool((~variants["is_baseline"]).any())
    kept = set(made.names) - (set() if compared else tables.COMPARING)  # one variant is compared with nothing

    def chosen_columns(names) -> tables.Table:
        return made.select([name for name in names if name in kept])

    table_md = tables.markdown_table(chosen_columns(name for name in made.names if name not in tables.NARROW_ONLY))
    caption = provenance.caption(chosen.runs, chosen.designs, chosen.keys)
    effects = tables.effects_text(variants, point_labels(variants, chosen))
    statistics = " ".join(part for part in (tables.noise_text(variants), effects) if part)
    narrow, wide = chosen_columns(tables.NARROW), chosen_columns([*tables.CORE, "boot", *columns])
    # The histories of the done runs only, the curves' (before the first write: a damaged one leaves `out` as it was).
    history = load_history(sweeps, set(chosen.done["run_id"]))
    figures = figure_set(variants, history, chosen, figure_width)
    # Each note only where the report has what it explains: one variant has no difference and draws no Pareto front.
    diff = f" {DIFF_NOTE}" if compared else ""
    extra = f" {BOOTSTRAP_NOTE}" if bootstrap else ""
    pareto = f" {PARETO_NOTE}" if any(f"accuracy_vs_{cost}" in figures for cost in plots.COSTS) else ""
    notes = f"{CI_NOTE}{diff}{extra} {provenance.throughput_note(chosen.runs)}{pareto}\n\n{statistics}"
    texts = {
        "table.md": f"{table_md}\n{caption}\n\n{notes}\n",
        "table.tex": tables.latex_table(narrow, tables.caption(chosen.runs, variants, chosen, narrow.names)),
        "table-wide.tex": tables.latex_table(wide, tables.caption(chosen.runs, variants, chosen, wide.names), True),
        "variants.csv": variants.to_csv(index=False),
    }
    files = [*texts, *(f"{stem}.{ext}" for stem in figures for ext in style.FORMATS)]
    gaps = history_gaps(chosen.done, history)
    plan = seeds.plan_lines(
        *seeds.spread(chosen.done, chosen.keys), seeds.DELTAS, comparisons=seeds.comparison_count(chosen)
    ) + sequential.report_lines(chosen, auto)
    captions = {stem: plot.caption for stem, plot in figures.items()}
    texts["report.md"] = index(sweeps, chosen, table_md, f"{caption}\n\n{notes}", files, gaps, plan, captions)
    return texts, figures


def build_report(
    sweeps: list[Path],
    baseline_items: list[str],
    out: Path | None = None,
    allow_mixed: bool = False,
    design: str = "latest",
    columns: Sequence[str] = (),
    bootstrap: bool = False,
    figure_width: str = "one",
) -> Path:
    """Write every report file; returns the index path. Raises AnalysisError/ConfigError on input it cannot use,
    and AnalysisError naming `out` when it cannot be written (a full disk): `out` is then as it was before.

    `columns` adds optional columns (tables.OPTIONAL) to table-wide.tex; `bootstrap` adds a bootstrap interval
    of each difference; `figure_width` draws the figures one or two columns of a paper wide."""
    out = Path(out) if out is not None else Path(sweeps[0]) / "report"
    target = out.resolve()  # a link to the report folder stays a link: the folder it points to is swapped
    check_out(out, target, sweeps)
    chosen = scope(sweeps, baseline_items, allow_mixed, design)
    with report_lock(target):
        return write_report(out, target, sweeps, chosen, (columns, bootstrap, figure_width))


@contextlib.contextmanager
def report_lock(target: Path) -> Iterator[None]:
    """One report writes into a folder at a time: a second waits for the first (saying so on stderr), then writes
    its own, so that neither removes the other's staging (atomic.recover_folder). The lock is an flock on the
    folder that holds `target` (the first that exists): `target` itself is swapped, and no lock file is left."""
    holder = next(folder for folder in target.parents if folder.exists())
    fd = os.open(holder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another report into {target} to end", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_report(out: Path, target: Path, sweeps: list[Path], chosen: Scope, options: tuple) -> Path:
    """build_report's writing, under its lock: every file whole, `out` as it was if anything fails."""
    atomic.recover_folder(target)  # a report a killed swap set aside is back before `existed` is decided
    existed = target.is_dir()
    try:  # before the tables and figures, so that an `out` that cannot be a folder is refused at once
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AnalysisError(f"--out {str(out)!r} is not accepted: cannot create it ({error.strerror})") from None
    try:
        texts, figures = contents(sweeps, chosen, *options)
        try:
            atomic.write_folder(target, lambda staging: write_files(staging, target, texts, figures))
        except Exception as error:  # any failure to write, not only OSError: see atomic.failure
            failed = f"cannot write the report into {out} ({atomic.failure(error)}); nothing there changed"
            raise AnalysisError(failed) from None
    except Exception:
        if not existed:
            target.rmdir()  # created above, still empty: a failed report leaves no folder behind
        raise
    return out / "report.md"
