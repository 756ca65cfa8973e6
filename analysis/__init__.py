"""Analysis of ablation sweeps: load the result store into pandas, average over seeds, compare, plot and report.

The notebook's API, importable from here (notebooks/explore_sweep.ipynb shows each step on a real sweep):

    runs, history = load_runs([sweep]), load_history([sweep])    # one row per run; per-epoch records, long form
    finished = done(runs)                                         # the runs with status done
    chosen = scope([sweep], [])                                   # swept keys, baseline, a study's axes
    variants = summarise(runs, chosen.baseline, chosen.keys)      # aggregate() and compare() side by side
    markdown_table(table(variants, chosen.keys))                  # study_table(variants, chosen) for a study
    figure_set(variants, history, chosen)                         # the report's figures and captions by file stem

Modules, each importing only those above it: errors (AnalysisError) and options (the values the commands' options
accept), both needed before pandas, load (the store into pandas), design (what is compared), stats (seed statistics,
with scipy and statsmodels), variants (runs to variants), provenance (what ran, in words), style and plots (the
figures), tables (Markdown and LaTeX tables, the effects in words), seeds (the seed planner, `python -m
analysis.seeds`), build (what a report holds, the figure set, writing it whole), report (the `python -m
analysis.report` command, which imports build once its command line is parsed), export/ (the store as Parquet,
TensorBoard, W&B or MLflow, `python -m analysis.export`; its own module map).
"""

import importlib
from typing import Any

# Every name loads on first use: `python -m analysis.report --help` imports this package first, and pandas, scipy
# and matplotlib take over a second to import; the command imports them once its command line is parsed.
_FROM = {
    "ablations.design": ("Design",),
    "analysis.build": ("figure_set", "build_report"),
    "analysis.design": ("Scope", "axis_rows", "read_design", "scope", "variant_keys", "variant_label"),
    "analysis.errors": ("AnalysisError",),
    "analysis.provenance": ("data_text",),
    "analysis.stats": ("holm", "mean_ci", "pareto_front", "seeds_needed", "welch"),
    "analysis.tables": ("latex_table", "markdown_table", "study_table", "table"),
    "analysis.variants": ("aggregate", "compare", "summarise"),
}  # and analysis.load: the names of __all__ not listed here (a status word is spelt in ablations.store alone)
_HOME = {name: module for module, names in _FROM.items() for name in names}
_MODULES = ("provenance", "style")  # exported as modules

__all__ = [
    "AnalysisError",
    "Design",
    "Scope",
    "aggregate",
    "axis_rows",
    "build_report",
    "compare",
    "data_text",
    "done",
    "figure_set",
    "holm",
    "latex_table",
    "load_history",
    "load_runs",
    "markdown_table",
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
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"analysis.{name}")
    if name in __all__:
        return getattr(importlib.import_module(_HOME.get(name, "analysis.load")), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
