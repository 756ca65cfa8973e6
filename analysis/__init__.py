"""Analysis of ablation sweeps: load the result store into pandas, average over seeds, compare, plot and report.

The notebook's API, importable from here (notebooks/explore_sweep.ipynb shows each step on a real sweep):

    runs, history = load_runs([sweep]), load_history([sweep])    # one row per run; per-epoch records, long form
    finished = done(runs)                                         # the runs with status done
    chosen = scope([sweep], [])                                   # swept keys, baseline, a study's axes
    variants = summarise(runs, chosen.baseline, chosen.keys)      # aggregate() and compare() side by side
    markdown_table(table(variants, chosen.keys))                  # study_table(variants, chosen) for a study
    figure_set(variants, history, chosen)                         # the report's figures and captions by file stem

Modules, each importing only those above it: options (what the commands need before pandas: AnalysisError and
the values their options accept), load (the store into pandas), design (what is compared), stats (seed statistics,
with scipy and statsmodels), variants (runs to variants), provenance (what ran, in words), style and plots (the
figures), tables (Markdown and LaTeX tables, the effects in words), seeds (the seed planner, `python -m
analysis.seeds`), report (what a report holds, the figure set and the `python -m analysis.report` command), export/
(the store as Parquet, TensorBoard, W&B or MLflow, `python -m analysis.export`; its own module map).
"""

import importlib
from typing import Any

from ablations.design import Design
from analysis import provenance, style
from analysis.design import Scope, axis_rows, read_design, scope, variant_keys, variant_label
from analysis.load import AnalysisError, done, load_history, load_runs
from analysis.provenance import data_text
from analysis.stats import holm, mean_ci, pareto_front, seeds_needed, welch
from analysis.tables import latex_table, markdown_table, study_table, table
from analysis.variants import aggregate, compare, summarise

# report.py also runs as `python -m analysis.report`: were it imported with the package, runpy would find it
# loaded already and warn (then run a second copy), so its names are imported on first use.
_FROM_REPORT = ("figure_set", "build_report")


def __getattr__(name: str) -> Any:
    if name in _FROM_REPORT:
        return getattr(importlib.import_module("analysis.report"), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


__all__ = [
    "AnalysisError",
    "Design",
    "Scope",
    "aggregate",
    "axis_rows",
    "compare",
    "data_text",
    "done",
    "holm",
    "latex_table",
    "markdown_table",
    "load_history",
    "load_runs",
    "mean_ci",
    "pareto_front",
    "provenance",
    "read_design",
    "scope",
    "seeds_needed",
    "study_table",
    "style",
    "summarise",
    "table",
    "variant_keys",
    "variant_label",
    "welch",
    *_FROM_REPORT,
]
