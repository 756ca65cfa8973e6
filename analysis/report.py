"""`python -m analysis.report sweeps/<name> [more] [--baseline KEY=VALUE ...] [--design N] [--allow-mixed] [--out DIR]
[--columns NAMES] [--bootstrap]`.

Writes into DIR (default: <first sweep>/report/) a Markdown table of every variant (test accuracy ± 95% CI over
seeds, difference from the baseline with Welch's CI and its Holm-adjusted p, parameters, MACs, training throughput,
seeds), the LaTeX (booktabs) tables that fit a page (table.tex, one column; table-wide.tex, table* across two;
--columns adds throughput and seeds, --bootstrap a bootstrap CI), the same numbers unrounded in variants.csv, the
figures as PNG and PDF, and report.md: what ran (data, model, recipe, design, seeds, hardware, commit, date), the
table, the effects that hold, the seeds a difference needs, and the figures. A study (one factor at
a time from a baseline) gets one block of rows per axis. Runs that differ in a key no sweep swept are refused
unless --allow-mixed asks for them to be pooled. A folder that several designs were swept into is reported for its
latest design (--design picks another, or all); report.md names every run folder it leaves out, and why. The report
is written whole into a staging folder beside DIR, then swapped in: a reader sees the old report or the new one.
The figures are one column of a paper wide (--figure-width two: a page), each with its caption in report.md.
"""

import argparse
import sys

from ablations.config import ConfigError
from analysis.errors import AnalysisError
from analysis.options import OPTIONAL, WIDTHS
from convmixer.arguments import OneLineParser, folder_path, run_cli

# pandas, scipy and matplotlib (over a second on a small CPU) are imported once the command line is parsed (main),
# so that --help and usage errors answer at once: this module imports only what the parser needs.
PROG = "python -m analysis.report"


def optional_columns(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in OPTIONAL]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"{unknown[0]!r} is not accepted: choose from {', '.join(OPTIONAL)} (comma-separated)"
        )
    return names


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
    parser.add_argument(
        "--figure-width",
        choices=list(WIDTHS),
        default="one",
        help="figures one column (3.3 in) or two columns (6.9 in) of a paper wide, fonts 7 pt or more (default: one)",
    )
    parser.add_argument("--out", type=folder_path, help="output folder (default: <first sweep>/report)")
    parser.add_argument(
        "--columns",
        type=optional_columns,
        default=[],
        metavar="NAMES",
        help=f"add columns to table-wide.tex, comma-separated: {', '.join(OPTIONAL)} (table.md has them all)",
    )
    parser.add_argument(
        "--bootstrap",
        action="store_true",
        help="add a percentile bootstrap 95%% CI of each difference (scipy.stats.bootstrap) beside Welch's",
    )
    args = parser.parse_args(argv)
    from analysis.build import build_report

    path = build_report(
        args.sweeps,
        args.baseline,
        args.out,
        args.allow_mixed,
        args.design,
        args.columns,
        args.bootstrap,
        args.figure_width,
    )
    print(f"wrote {path.parent}: report.md, tables and figures")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (AnalysisError, ConfigError, OSError))


if __name__ == "__main__":
    sys.exit(cli())
