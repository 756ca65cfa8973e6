"""`python -m analysis.report sweeps/<name> [more] [--baseline KEY=VALUE ...] [--design N] [--allow-mixed] [--out DIR]`.

Writes into DIR (default: <first sweep>/report/) a Markdown and a LaTeX (booktabs) table of every variant
(test accuracy ± 95% CI over seeds, difference from the baseline with Welch's CI, parameters, MACs, training
throughput, seeds), the same numbers unrounded in variants.csv, the figures as PNG and PDF, and report.md: what ran
(data, model, recipe, design, seeds, hardware, commit, date), the table, and the figures. A study (one factor at
a time from a baseline) gets one block of rows per axis. Runs that differ in a key no sweep swept are refused
unless --allow-mixed asks for them to be pooled. A folder that several designs were swept into is reported for its
latest design (--design picks another, or all); report.md names every run folder it leaves out, and why. The report
is written whole into a staging folder beside DIR, then swapped in: a reader sees the old report or the new one.
"""

import glob
import math
import os
import re
import secrets
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ablations.config import ConfigError
from ablations.store import DONE
from analysis import plots, provenance, style
from analysis.design import Scope, axis_rows, scope, variant_label
from analysis.load import AnalysisError, history_gaps, load_history
from analysis.variants import NOT_DONE, summarise
from convmixer.arguments import OneLineParser, folder_path, run_cli

PROG = "python -m analysis.report"
CI_NOTE = "Accuracy: mean ± half-width of the 95% Student-t confidence interval over n seeds; n/a: one seed, no CI."
DIFF_NOTE = (
    "Δ: difference of mean test accuracy from the baseline (the same variant with the baseline's values), "
    "in percentage points, with Welch's 95% confidence interval."
)
PARETO_NOTE = (
    f"Pareto fronts rank only variants with at least {plots.PARETO_MIN_SEEDS} seeds (one seed is one draw of "
    "the seed noise); a point on the front is not better than its neighbours where their CIs overlap."
)
# The figures a report writes: the names a rerun into the same folder may find left over from an earlier report.
FIGURE_PATTERNS = ("accuracy_vs_*.png", "accuracy_vs_*.pdf", "training_curves*.png", "training_curves*.pdf")


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def accuracy_cell(mean: float, ci: float, n: int) -> str:
    if n == 0:
        return "–"
    return f"{100 * mean:.2f} ± " + ("n/a" if math.isnan(ci) else f"{100 * ci:.2f}")


def difference_cell(row: dict) -> str:
    if row["is_baseline"]:
        return "baseline"
    if math.isnan(row["diff"]):
        return "–"
    low, high = 100 * row["diff_low"], 100 * row["diff_high"]
    interval = "n/a" if math.isnan(low) else f"{_signed(low)}, {_signed(high)}"
    return f"{_signed(100 * row['diff'])} [{interval}]"


def seeds_cell(row: dict) -> str:
    others = [f"{row[f'n_{status}']} {status}" for status in NOT_DONE if row[f"n_{status}"]]
    return f"{row['n']} ({', '.join(others)})" if others else str(row["n"])


def count_cell(value: float, divisor: float) -> str:
    """Three significant digits, trailing zeros kept (1.00, 47.2, 115), so a column reads at one precision."""
    if math.isnan(value):
        return "–"
    scaled = value / divisor
    decimals = max(0, 2 - math.floor(math.log10(abs(scaled)))) if scaled else 0
    return f"{scaled:.{decimals}f}"


@dataclass(frozen=True)
class Table:
    """Formatted cells: a header, and blocks of rows, each under a title ("" for a table of one block)."""

    header: list[str]
    blocks: list[tuple[str, list[list[str]]]]
    n_keys: int  # the leading, left-aligned key columns


def _measures(variants: pd.DataFrame, cpu: bool) -> tuple[list[str], callable]:
    """The header of the measured columns, and a function from a variant to their cells."""
    params_divisor, params_unit = style.si_unit(variants["params"])
    macs_divisor, macs_unit = style.si_unit(variants["macs"])
    header = [
        "Test acc. (%)",
        "Δ vs baseline (pp) [95% CI]",
        f"Params ({params_unit})",
        f"MACs ({macs_unit})",
        "Train images/s" + (" (CPU, indicative)" if cpu else ""),
        "n seeds",
    ]

    def cells(row: dict) -> list[str]:
        throughput = row["train_images_per_s_mean"]
        return [
            accuracy_cell(row["test_acc_mean"], row["test_acc_ci"], row["n"]),
            difference_cell(row),
            count_cell(row["params"], params_divisor),
            count_cell(row["macs"], macs_divisor),
            "–" if math.isnan(throughput) else f"{throughput:,.0f}",
            seeds_cell(row),
        ]

    return header, cells


def table(variants: pd.DataFrame, keys: list[str], cpu: bool = False) -> Table:
    """Every variant, one row each, its keys in the first columns."""
    header, cells = _measures(variants, cpu)
    # records keep each column's type (iterrows would upcast)
    rows = [[*(str(row[key]) for key in keys), *cells(row)] for row in variants.to_dict("records")]
    return Table([*keys, *header], [("", rows)], len(keys))


def study_table(variants: pd.DataFrame, scope: Scope, cpu: bool = False) -> Table:
    """A paper's ablation table: per one-at-a-time axis, a block of the baseline and each change from it."""
    header, cells = _measures(variants, cpu)
    grid = scope.grid_keys
    blocks = []
    for key in scope.varied:
        rank = {value: i for i, value in enumerate(scope.levels(key))}
        rows = axis_rows(variants, key, scope.varied, scope.baseline)
        rows = rows.assign(rank=rows[key].map(rank)).sort_values([*grid, "rank"])
        block = [
            [
                *(str(row[other]) for other in grid),
                style.short_label({key: row[key]}) + (" (baseline)" if row[key] == scope.baseline.get(key) else ""),
                *cells(row),
            ]
            for row in rows.to_dict("records")
        ]
        blocks.append((style.key_label(key), block))
    return Table([*grid, "Variant", *header], blocks, len(grid) + 1)


def markdown_table(table: Table) -> str:
    """Key columns left-aligned, numbers right-aligned; a block's title is a bold row of its own."""
    header = table.header
    lines = [header, ["---" if i < table.n_keys else "---:" for i in range(len(header))]]
    for title, rows in table.blocks:
        if title:
            lines.append([f"**{title}**", *[""] * (len(header) - 1)])
        lines += rows
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"


# Characters LaTeX reads as commands in text mode, and the symbols of the tables and captions, as LaTeX writes them.
LATEX = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "≥": r"$\geq$",
    "α": r"$\alpha$",
    "–": "--",
}
LATEX_SPECIAL = re.compile("|".join(map(re.escape, LATEX)))


def latex_escape(text: str) -> str:
    """`text` as LaTeX typesets it: in one pass, so that the braces of one replacement are not escaped again."""
    text = LATEX_SPECIAL.sub(lambda match: LATEX[match.group()], text)
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", text)  # a minus sign, not a hyphen


def latex_table(table: Table, caption: str, notes: str = "") -> str:
    """A booktabs table: `caption` (what ran) in the caption, `notes` (how to read the numbers) in small type
    under the table, so that the caption stays a caption."""
    header = table.header
    body = []
    for i, (title, rows) in enumerate(table.blocks):
        if title:
            body += [r"\midrule"] if i else []
            body.append(rf"\multicolumn{{{len(header)}}}{{l}}{{\textit{{{latex_escape(title)}}}}} \\")
        body += [" & ".join(map(latex_escape, cells)) + r" \\" for cells in rows]
    lines = [
        r"% Needs \usepackage{booktabs}. Written by python -m analysis.report.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        r"\begin{tabular}{" + "l" * table.n_keys + "r" * (len(header) - table.n_keys) + "}",
        r"\toprule",
        " & ".join(map(latex_escape, header)) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        *([r"\par\smallskip", rf"{{\footnotesize {latex_escape(notes)}\par}}"] if notes else []),
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


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


def figure_set(variants: pd.DataFrame, history: pd.DataFrame, scope: Scope) -> dict[str, Figure]:
    """The report's figures by file stem: accuracy against each swept key (in a study: along its axis), against
    each cost, and the training curves (in a study: one figure per axis, or every variant would share one).

    Each names the model and the data; the curves leave out the done runs whose history does not match the run,
    and say so."""
    made = {}
    done = scope.done
    source = provenance.figure_source(done)
    for key in scope.keys:
        on_axis = axis_rows(variants, key, scope.varied, scope.baseline)
        runs_on_axis = axis_rows(done, key, scope.varied, scope.baseline)
        series_keys = [key, *(other for other in scope.grid_keys if other != key)]
        made[f"accuracy_vs_{key}"] = plots.accuracy_vs_key(
            on_axis, runs_on_axis, key, series_keys, scope.levels(key), scope.baseline.get(key), source
        )
    measured = variants[variants["n"] > 0]
    hardware = provenance.throughput_label(scope.runs)
    for cost in plots.COSTS:
        labels = point_labels(measured, scope)
        made[f"accuracy_vs_{cost}"] = plots.accuracy_vs_cost(measured, done, cost, scope.keys, labels, hardware, source)
    gaps = history_gaps(done, history)
    with_history = done[~done["run_id"].isin(gaps)]
    done_history = history[history["run_id"].isin(with_history["run_id"])]
    for key in scope.varied or [None]:
        runs = axis_rows(with_history, key, scope.varied, scope.baseline) if key else with_history
        left_out = len(axis_rows(done, key, scope.varied, scope.baseline) if key else done) - len(runs)
        curve_keys = [key, *scope.grid_keys] if key else scope.keys
        stem = f"training_curves_{key}" if key else "training_curves"
        made[stem] = plots.training_curves(done_history, runs, curve_keys, source, left_out)
    return made


def gaps_text(scope: Scope, gaps: dict[str, str]) -> str:
    """The done runs the training curves leave out, each with its variant, seed and why."""
    rows = scope.runs.set_index("run_id")
    return "; ".join(
        f"{run_id} ({variant_label({key: rows.at[run_id, key] for key in scope.keys})}, seed {rows.at[run_id, 'seed']}"
        f": {why})"
        for run_id, why in gaps.items()
    )


def index(sweeps: list[Path], scope: Scope, table_md: str, notes: str, files: list[str], gaps: dict[str, str]) -> str:
    """report.md: what ran, the table, the figures and the list of `files` (names inside the report folder)."""
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
        "## Figures",
        "",
        *(f"![{Path(name).stem}]({name})\n" for name in files if name.endswith(".png")),
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


def write_files(folder: Path, texts: dict[str, str], figures: dict[str, Figure]) -> None:
    """Every report file into `folder`, the staging folder: a failed write leaves nothing half-done in `out`."""
    for name, text in texts.items():
        (folder / name).write_text(text)
    for stem, figure in figures.items():
        style.save(figure, folder / stem)


def link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # no bytes to write: the staging folder lies on the same file system
    except OSError:
        shutil.copy2(source, target)


def keep_users_files(target: Path, staging: Path) -> None:
    """Put into `staging` every file of the report folder `target` that a report does not write (the user's notes),
    so that the swap keeps them; the figures an earlier report wrote and this one does not (a key no longer swept)
    are left behind with the old folder."""
    for path in target.iterdir():
        kept = staging / path.name
        if kept.exists() or any(path.match(pattern) for pattern in FIGURE_PATTERNS):
            continue
        if path.is_symlink():
            os.symlink(os.readlink(path), kept)
        elif path.is_dir():
            shutil.copytree(path, kept, symlinks=True, copy_function=link_or_copy)
        else:
            link_or_copy(str(path), str(kept))


def failure(error: BaseException) -> str:
    """Why a write failed, in a few words: the OSError behind it (on a full disk matplotlib's PDF writer raises an
    AttributeError of its own while it cleans up after the ENOSPC), else the error itself."""
    cause = error
    while cause is not None and not (isinstance(cause, OSError) and cause.strerror):
        cause = cause.__cause__ or cause.__context__
    return cause.strerror if cause is not None else f"{type(error).__name__}: {error}"


def staged(target: Path, out: Path, texts: dict[str, str], figures: dict[str, Figure]) -> Path:
    """A new folder beside the report folder `target` (`out` resolved) holding the whole new report and the user's
    files of the old one. If anything fails while it is written (a full disk), AnalysisError names `out`, and
    nothing is left behind."""
    staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        staging.mkdir()
        os.chmod(staging, stat.S_IMODE(target.stat().st_mode))  # the swap keeps the report folder's permissions
        write_files(staging, texts, figures)
        keep_users_files(target, staging)
        return staging
    except Exception as error:  # any failure to write, not only OSError: see failure()
        shutil.rmtree(staging, ignore_errors=True)
        raise AnalysisError(f"cannot write the report into {out} ({failure(error)}); nothing there changed") from None


def publish(staging: Path, target: Path) -> None:
    """Swap the finished `staging` folder in for the report folder `target` with two renames (on one file system:
    no data to write), so that a reader sees the old report or the new one, never a mix of both. A kill between
    the renames leaves the old report set aside as .<name>.old-*, which the next report puts back (`recover`)."""
    old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover(target: Path) -> None:
    """Clear what a killed report left beside the report folder `target`: a report set aside by a publish killed
    between its two renames is put back (when no report took its place), and the staging folders and set-aside
    reports of earlier kills are removed."""
    name = glob.escape(target.name)
    olds = sorted(target.parent.glob(f".{name}.old-*"))
    if olds and not target.exists():
        os.replace(olds.pop(), target)
    for leftover in [*olds, *target.parent.glob(f".{name}.*.tmp")]:
        shutil.rmtree(leftover, ignore_errors=True)


def check_out(out: Path, target: Path, sweeps: list[Path]) -> None:
    """AnalysisError unless `out` can be the report's own folder: a report replaces the whole folder (`publish`),
    so it must not hold a sweep it reads, or the current folder."""
    for inside in [*(Path(sweep).resolve() for sweep in sweeps), Path.cwd().resolve()]:
        if inside.is_relative_to(target):
            raise AnalysisError(
                f"--out {str(out)!r} is not accepted: it holds {inside}, and a report replaces its whole folder; "
                "choose a folder of its own (default: <first sweep>/report)"
            )


def build_report(
    sweeps: list[Path],
    baseline_items: list[str],
    out: Path | None = None,
    allow_mixed: bool = False,
    design: str = "latest",
) -> Path:
    """Write every report file; returns the index path. Raises AnalysisError/ConfigError on input it cannot use,
    and AnalysisError naming `out` when it cannot be written (a full disk): `out` is then as it was before."""
    out = Path(out) if out is not None else Path(sweeps[0]) / "report"
    target = out.resolve()  # a link to the report folder stays a link: the folder it points to is swapped
    check_out(out, target, sweeps)
    chosen = scope(sweeps, baseline_items, allow_mixed, design)
    variants = summarise(chosen.runs, chosen.baseline, chosen.keys)
    cpu = provenance.measured_on_cpu(chosen.runs)
    made = study_table(variants, chosen, cpu) if chosen.varied else table(variants, chosen.keys, cpu)
    table_md = markdown_table(made)
    caption = provenance.caption(chosen.runs, chosen.designs, chosen.keys)
    notes = f"{CI_NOTE} {DIFF_NOTE} {provenance.throughput_note(chosen.runs)} {PARETO_NOTE}"
    # The histories of the done runs only, the curves' (before the first write: a damaged one leaves `out` as it was).
    history = load_history(sweeps, set(chosen.done["run_id"]))
    figures = figure_set(variants, history, chosen)
    texts = {
        "table.md": f"{table_md}\n{caption}\n\n{notes}\n",
        "table.tex": latex_table(made, caption, notes),
        "variants.csv": variants.to_csv(index=False),
    }
    files = [*texts, *(f"{stem}.{ext}" for stem in figures for ext in style.FORMATS)]
    gaps = history_gaps(chosen.done, history)
    texts["report.md"] = index(sweeps, chosen, table_md, f"{caption}\n\n{notes}", files, gaps)
    recover(target)
    existed = target.is_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AnalysisError(f"--out {str(out)!r} is not accepted: cannot create it ({error.strerror})") from None
    try:
        staging = staged(target, out, texts, figures)
    except AnalysisError:
        if not existed:
            target.rmdir()  # created above, still empty: a failed report leaves no folder behind
        raise
    try:
        publish(staging, target)
    except OSError as error:  # a folder that cannot be renamed (a mount point, say)
        shutil.rmtree(staging, ignore_errors=True)
        raise AnalysisError(f"cannot write the report into {out} ({error.strerror}); nothing there changed") from None
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description="Tables (Markdown, LaTeX) and figures (PNG, PDF) of sweeps.")
    parser.add_argument("sweeps", nargs="+", type=folder_path, help="sweep folders, e.g. sweeps/smoke-kernel_size")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="compare every variant with the same variant at KEY=VALUE (repeatable); "
        "default: a study's baseline, else each swept key at its RunConfig default",
    )
    parser.add_argument(
        "--allow-mixed",
        action="store_true",
        help="pool sweeps whose runs differ in keys none of them swept, or that ran on different GPU kinds "
        "(refused by default: unrelated sweeps)",
    )
    parser.add_argument(
        "--design",
        default="latest",
        metavar="N",
        help="which design of a folder that several were swept into: latest (default), all, or its number (1: the "
        "first); report.md names the runs it leaves out",
    )
    parser.add_argument("--out", type=folder_path, help="output folder (default: <first sweep>/report)")
    args = parser.parse_args(argv)
    path = build_report(args.sweeps, args.baseline, args.out, args.allow_mixed, args.design)
    print(f"wrote {path.parent}: report.md, tables and figures")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (AnalysisError, ConfigError, OSError))


if __name__ == "__main__":
    sys.exit(cli())
