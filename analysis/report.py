"""`python -m analysis.report results/<sweep> [more sweeps] [--baseline KEY=VALUE ...] [--out DIR]`: tables and figures.

Writes into DIR (default: results/<first sweep>/report/) a Markdown and a LaTeX (booktabs) table of every variant
(test accuracy ± 95% CI over seeds, difference from the baseline, parameters, MACs, training throughput, seeds),
the same numbers unrounded in variants.csv, the figures as PNG and PDF, and report.md, an index of it all that
names the dataset and the hardware the runs were measured on.
"""

import argparse
import math
import re
import sys
from pathlib import Path

import pandas as pd

from ablations.atomic import write_text
from ablations.config import ConfigError
from analysis import plots, style
from analysis.load import AnalysisError, dataset_label, load_history, load_runs, variant_keys
from analysis.variants import NOT_DONE, default_baseline, parse_baseline, summarise, variant_label

CI_NOTE = "Accuracy: mean ± half-width of the 95% Student-t confidence interval over n seeds; n/a: one seed, no CI."
DIFF_NOTE = (
    "Δ: difference of mean test accuracy from the baseline (the same variant with the baseline's values), "
    "in percentage points, with Welch's 95% confidence interval."
)


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


def table(variants: pd.DataFrame, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table, every cell already formatted."""
    divisor, unit = style.macs_unit(variants["macs"])
    header = [
        *keys,
        "Test acc. (%)",
        "Δ vs baseline (pp) [95% CI]",
        "Params (M)",
        f"MACs ({unit})",
        "Train images/s",
        "n seeds",
    ]
    rows = [
        [
            *(str(row[key]) for key in keys),
            accuracy_cell(row["test_acc_mean"], row["test_acc_ci"], row["n"]),
            difference_cell(row),
            f"{row['params'] / 1e6:.3g}",
            f"{row['macs'] / divisor:.3g}",
            "–" if math.isnan(row["train_images_per_s_mean"]) else f"{row['train_images_per_s_mean']:,.0f}",
            seeds_cell(row),
        ]
        for row in variants.to_dict("records")  # records keep each column's type (iterrows would upcast)
    ]
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]], n_keys: int) -> str:
    """Key columns left-aligned, numbers right-aligned."""
    lines = [header, ["---" if i < n_keys else "---:" for i in range(len(header))], *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"


def latex_escape(text: str) -> str:
    for plain, latex in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("%", r"\%"),
        ("&", r"\&"),
        ("#", r"\#"),
        ("±", r"$\pm$"),
        ("Δ", r"$\Delta$"),
        ("–", "--"),
    ):
        text = text.replace(plain, latex)
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", text)  # a minus sign, not a hyphen


def latex_table(header: list[str], rows: list[list[str]], n_keys: int, caption: str) -> str:
    lines = [
        r"% Needs \usepackage{booktabs}. Written by python -m analysis.report.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        r"\begin{tabular}{" + "l" * n_keys + "r" * (len(header) - n_keys) + "}",
        r"\toprule",
        " & ".join(map(latex_escape, header)) + r" \\",
        r"\midrule",
        *(" & ".join(map(latex_escape, cells)) + r" \\" for cells in rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def figures(
    out: Path, variants: pd.DataFrame, history: pd.DataFrame, done: pd.DataFrame, keys: list[str]
) -> list[Path]:
    written = []
    for key in keys:
        written += style.save(plots.accuracy_vs_key(variants, key, keys), out / f"accuracy_vs_{key}")
    measured = variants[variants["n"] > 0]
    for cost in plots.COSTS:
        written += style.save(plots.accuracy_vs_cost(measured, cost, keys), out / f"accuracy_vs_{cost}")
    done_history = history[history["run_id"].isin(done["run_id"])]
    written += style.save(plots.training_curves(done_history, done, keys), out / "training_curves")
    return written


def index(
    sweeps: list[Path], runs: pd.DataFrame, keys: list[str], baseline: dict, table_md: str, files: list[Path], out: Path
) -> str:
    counts = runs["status"].value_counts()
    statuses = ", ".join(f"{counts.get(status, 0)} {status}" for status in ("done", *NOT_DONE))
    swept = "; ".join(f"{key} ∈ {{{', '.join(map(str, sorted(runs[key].unique())))}}}" for key in keys)
    lines = [
        f"# Report: {', '.join(sorted(runs['sweep'].unique()))}",
        "",
        f"- Sweeps: {', '.join(str(sweep) for sweep in sweeps)}",
        f"- Dataset: {dataset_label(runs)}",
        f"- Device: {'; '.join(sorted(runs['device'].dropna().unique()))}",
        f"- Runs: {statuses}",
        f"- Swept: {swept or 'nothing but the seed'}",
        f"- Baseline: {variant_label(baseline)}",
        "",
        table_md,
        CI_NOTE,
        DIFF_NOTE,
        "",
        "## Files",
        "",
        *(f"- [{path.relative_to(out)}]({path.relative_to(out)})" for path in files),
        "",
        *(f"![{path.stem}]({path.relative_to(out)})" for path in files if path.suffix == ".png"),
    ]
    return "\n".join(lines) + "\n"


def build_report(sweeps: list[Path], baseline_items: list[str], out: Path | None = None) -> Path:
    """Write every report file; returns the index path. Raises AnalysisError/ConfigError on input it cannot use."""
    out = Path(out) if out is not None else Path(sweeps[0]) / "report"
    runs = load_runs(sweeps)
    done = runs[runs["status"] == "done"]
    if done.empty:
        found = ", ".join(f"{n} {status}" for status, n in runs["status"].value_counts().items()) or "no runs"
        raise AnalysisError(f"no finished runs (status done) in {', '.join(map(str, sweeps))}: found {found}")
    keys = variant_keys(runs)
    baseline = parse_baseline(baseline_items, runs, keys) if baseline_items else default_baseline(runs, keys)
    variants = summarise(runs, baseline, keys)
    header, rows = table(variants, keys)
    table_md = markdown_table(header, rows, len(keys))
    history = load_history(sweeps)  # before the first write: a damaged history.json must leave `out` as it was
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AnalysisError(f"--out {str(out)!r} is not accepted: cannot create it ({error.strerror})") from None
    write_text(out / "table.md", f"{table_md}\nTest accuracy on {dataset_label(runs)}. {CI_NOTE}\n{DIFF_NOTE}\n")
    caption = f"Test accuracy on {dataset_label(runs)}. {CI_NOTE} {DIFF_NOTE}"
    write_text(out / "table.tex", latex_table(header, rows, len(keys), caption))
    write_text(out / "variants.csv", variants.to_csv(index=False))
    files = [out / "table.md", out / "table.tex", out / "variants.csv"]
    files += figures(out, variants, history, done, keys)
    write_text(out / "report.md", index(sweeps, runs, keys, baseline, table_md, files, out))
    return out / "report.md"


def folder(text: str) -> Path:
    if not text.strip():  # Path("") is ".": the report would land in the current folder
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted: expected a folder path")
    return Path(text)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like the rest of the toolkit's bad-input errors."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m analysis.report", description="Tables (Markdown, LaTeX) and figures (PNG, PDF) of sweeps."
    )
    parser.add_argument("sweeps", nargs="+", type=folder, help="sweep folders, e.g. results/kernel")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="compare every variant with the same variant at KEY=VALUE (repeatable); "
        "default: each swept key at its RunConfig default",
    )
    parser.add_argument("--out", type=folder, help="output folder (default: <first sweep>/report)")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.sweeps, args.baseline, args.out)
    except (AnalysisError, ConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path.parent}: report.md, tables and figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
