"""The report's tables: variants to formatted cells, then Markdown (the record, every column) and LaTeX (booktabs,
sized to fit a page: `table` for one column, `table*` for a two-column page; the columns an option).

A paper's table is read without the report beside it, so the LaTeX caption says in a few lines what is compared,
on which data and model, over how many seeds, and what ± and the brackets mean; the recipe stays in report.md.
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from analysis import provenance, style
from analysis.design import Scope, axis_rows
from analysis.variants import NOT_DONE

# The columns every table has; the wide LaTeX table adds those of options.OPTIONAL only when asked (`python -m
# analysis.report --columns`), "boot" with --bootstrap. table.tex must fit one column of a two-column paper (ICML,
# CVPR: about 3.25 in), so it gives the difference without its interval ("delta"): p_Holm and the mark say whether
# it holds, the wide table and table.md give the interval.
CORE = ("acc", "diff", "p", "params", "macs")
NARROW = ("acc", "delta", "p", "params", "macs")
COMPARING = {"diff", "delta", "p", "boot"}  # the columns of a comparison with the baseline
NARROW_ONLY = set(NARROW) - set(CORE)  # the other tables have the difference with its interval
SIGNIFICANCE = 0.05  # an effect is called one in words, and its row marked, when its Holm-adjusted p is below this
MARK = "*"  # after the p_Holm of a row whose difference holds
# What p_Holm adjusts: Welch's p (fixed seeds), or a seeds-auto design's sequential p (analysis.sequential).
P_RULES = {
    False: "Welch's p",
    True: "the sequential design's p (the least over its looks of Welch's p over the look's share of α)",
}


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def accuracy_cell(mean: float, ci: float, n: int) -> str:
    if n == 0:
        return "–"
    return f"{100 * mean:.2f} ± " + ("n/a" if math.isnan(ci) else f"{100 * ci:.2f}")


def interval_cell(low: float, high: float) -> str:
    return "n/a" if math.isnan(low) else f"{_signed(100 * low)}, {_signed(100 * high)}"


def difference_cell(row: dict, interval: bool = True) -> str:
    if row["is_baseline"]:
        return "baseline"
    if math.isnan(row["diff"]):
        return "–"
    return _signed(100 * row["diff"]) + (f" [{interval_cell(row['diff_low'], row['diff_high'])}]" if interval else "")


def holm_cell(row: dict) -> str:
    """The Holm-adjusted p, marked where the difference holds (below SIGNIFICANCE)."""
    if row["is_baseline"]:
        return ""
    return p_cell(row["p_holm"]) + (MARK if row["p_holm"] < SIGNIFICANCE else "")


def p_cell(p: float) -> str:
    """Two significant digits, and no false precision below 0.001."""
    if math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


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
class Column:
    """One measured column: its Markdown header, its LaTeX header (the paper's symbols), and its cell of a variant."""

    name: str
    markdown: str
    latex: str
    cell: Callable[[dict], str]


@dataclass(frozen=True)
class Table:
    """Formatted cells: a header, and blocks of rows, each under a title ("" for a table of one block).

    `latex_header` is the same header in LaTeX, `names` each column's name (the key columns' are their keys)."""

    header: list[str]
    blocks: list[tuple[str, list[list[str]]]]
    n_keys: int  # the leading, left-aligned key columns
    latex_header: list[str]
    names: list[str]

    def select(self, names: list[str]) -> "Table":
        """The key columns and the measured columns named, in the table's order."""
        keep = [i for i, name in enumerate(self.names) if i < self.n_keys or name in names]

        def pick(cells: list[str]) -> list[str]:
            return [cells[i] for i in keep]

        blocks = [(title, [pick(row) for row in rows]) for title, rows in self.blocks]
        return Table(pick(self.header), blocks, self.n_keys, pick(self.latex_header), pick(self.names))


def columns(variants: pd.DataFrame, cpu: bool) -> list[Column]:
    """The measured columns of these variants: the bootstrap interval only where the report computed it."""
    params_divisor, params_unit = style.si_unit(variants["params"])
    macs_divisor, macs_unit = style.si_unit(variants["macs"])
    made = [
        Column(
            "acc", "Test acc. (%)", "Acc. (%)", lambda r: accuracy_cell(r["test_acc_mean"], r["test_acc_ci"], r["n"])
        ),
        Column("diff", "Δ vs baseline (pp) [95% CI]", "Δ (pp) [95% CI]", difference_cell),
        Column("delta", "Δ vs baseline (pp)", "Δ (pp)", lambda r: difference_cell(r, interval=False)),
        Column("p", "p (Holm)", "p_Holm", holm_cell),
    ]
    if "diff_boot_low" in variants:
        made.append(
            Column(
                "boot",
                "Δ bootstrap 95% CI",
                "Δ boot. CI",
                lambda r: "" if r["is_baseline"] else f"[{interval_cell(r['diff_boot_low'], r['diff_boot_high'])}]",
            )
        )
    throughput = "Train images/s" + (" (CPU, indicative)" if cpu else "")
    return [
        *made,
        Column("params", f"Params ({params_unit})", f"Params ({params_unit})",
               lambda r: count_cell(r["params"], params_divisor)),
        Column("macs", f"MACs ({macs_unit})", f"MACs ({macs_unit})", lambda r: count_cell(r["macs"], macs_divisor)),
        Column(
            "throughput",
            throughput,
            "Img/s",
            lambda r: "–" if math.isnan(r["train_images_per_s_mean"]) else f"{r['train_images_per_s_mean']:,.0f}",
        ),
        Column("seeds", "n seeds", "n", seeds_cell),
    ]  # fmt: skip


def latex_header_cell(text: str) -> str:
    """A LaTeX header: a one-letter name is a symbol of the paper ($k$, $p$, $n$), set in math."""
    return f"${text}$" if len(text) == 1 else latex_escape(text)


def key_symbol(key: str) -> str:
    return latex_header_cell(style.short_key(key))


def _table(header: list[str], latex_header: list[str], keys: list[str], measured: list[Column], blocks) -> Table:
    return Table(
        [*header, *(c.markdown for c in measured)],
        blocks,
        len(keys),
        [*latex_header, *(latex_header_cell(c.latex) for c in measured)],
        [*keys, *(c.name for c in measured)],
    )


def table(variants: pd.DataFrame, keys: list[str], cpu: bool = False) -> Table:
    """Every variant, one row each, its keys in the first columns."""
    measured = columns(variants, cpu)
    # records keep each column's type (iterrows would upcast)
    rows = [[*(str(row[key]) for key in keys), *(c.cell(row) for c in measured)] for row in variants.to_dict("records")]
    return _table(list(keys), [key_symbol(key) for key in keys], keys, measured, [("", rows)])


def study_table(variants: pd.DataFrame, scope: Scope, cpu: bool = False) -> Table:
    """A paper's ablation table: per one-at-a-time axis, a block of the baseline and each change from it."""
    measured = columns(variants, cpu)
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
                *(c.cell(row) for c in measured),
            ]
            for row in rows.to_dict("records")
        ]
        blocks.append((style.key_label(key), block))
    return _table([*grid, "Variant"], [*map(key_symbol, grid), "Variant"], [*grid, "variant"], measured, blocks)


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
    "<": r"$<$",
    "p_Holm": r"$p_{\mathrm{Holm}}$",
    MARK: rf"$^{{{MARK}}}$",
}
LATEX_SPECIAL = re.compile("|".join(map(re.escape, LATEX)))


def latex_escape(text: str) -> str:
    """`text` as LaTeX typesets it: in one pass, so that the braces of one replacement are not escaped again."""
    text = LATEX_SPECIAL.sub(lambda match: LATEX[match.group()], text)
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", text)  # a minus sign, not a hyphen


def latex_cells(table: Table) -> list[str]:
    """The table's rows in LaTeX: in a study a block's title names the key, so a row names only the value."""
    body = []
    for i, (title, rows) in enumerate(table.blocks):
        if title:
            body += [r"\midrule"] if i else []
            body.append(rf"\multicolumn{{{len(table.header)}}}{{l}}{{\textit{{{latex_escape(title)}}}}} \\")
        for cells in rows:
            if title:  # "k=5 (baseline)" -> "5": the Δ column says which row is the baseline
                label = cells[table.n_keys - 1].removesuffix(" (baseline)")
                cells = [*cells[: table.n_keys - 1], label.partition("=")[2] or label, *cells[table.n_keys :]]
            body.append(" & ".join(map(latex_escape, cells)) + r" \\")
    return body


def latex_caption(text: str) -> str:
    """A caption in LaTeX: its `$...$` spans (the paper's symbols, `$k$`, `$n = 3$`) kept as math, the rest escaped."""
    return "".join(part if part.startswith("$") else latex_escape(part) for part in re.split(r"(\$[^$]+\$)", text))


def header_rows(header: list[str]) -> list[list[str]]:
    """The header in two rows, names over units ("Params" over "(k)"): a column is as wide as its widest cell, and
    a name with its unit on one line is wider than the numbers under it."""
    split = [cell.partition(" (") for cell in header]
    units = [f"({rest}" if gap else "" for _, gap, rest in split]
    return [[name for name, _, _ in split], *([units] if any(units) else [])]


def latex_table(table: Table, caption: str, wide: bool = False) -> str:
    """A booktabs table in footnote type: `table` with narrow gaps, so that the core columns fit one column of a
    two-column paper (ICML, CVPR: about 3.25 in); `table*` (`wide`) across a two-column page, every optional column
    still within a one-column page's text."""
    environment = "table*" if wide else "table"
    columns = len(table.latex_header)
    lines = [
        r"% Needs \usepackage{booktabs}. Written by python -m analysis.report: table.tex for one column (of a one- or"
        r" two-column page), table-wide.tex (table*) across a two-column page.",
        rf"\begin{{{environment}}}[t]",
        r"\centering",
        r"\footnotesize",
        r"\setlength{\tabcolsep}{" + ("3pt" if wide else "2.5pt") + "}",
        rf"\caption{{{latex_caption(caption)}}}",
        r"\begin{tabular}{" + "l" * table.n_keys + "r" * (columns - table.n_keys) + "}",
        r"\toprule",
        *(" & ".join(cells) + r" \\" for cells in header_rows(table.latex_header)),
        r"\midrule",
        *latex_cells(table),
        r"\bottomrule",
        r"\end{tabular}",
        rf"\end{{{environment}}}",
    ]
    return "\n".join(lines) + "\n"


def sequential(variants: pd.DataFrame) -> bool:
    """Whether p_holm is a seeds-auto design's sequential p (analysis.sequential.with_design_p), not Welch's."""
    return variants.attrs.get("p_holm") == "sequential"


def effects_text(variants: pd.DataFrame, labels: list[str]) -> str:
    """The differences that hold after Holm's adjustment, in words, and how many comparisons do not."""
    compared = variants.assign(label=labels)[~variants["is_baseline"] & variants["p_holm"].notna()]
    holding = compared[compared["p_holm"] < SIGNIFICANCE]
    if variants["is_baseline"].all():
        return "Effects: none (one variant, nothing to compare)."
    if compared.empty:
        return "Effects: none tested (a comparison needs 2 seeds on each side)."
    named = [
        f"{row['label']} {_signed(100 * row['diff'])} points (p_Holm {p_cell(row['p_holm'])})"
        for row in holding.to_dict("records")
    ]
    held = "; ".join(named) if named else "none"
    rest = len(compared) - len(holding)
    noise = f" The other {rest} {'difference is' if rest == 1 else 'differences are'} not told apart from seed noise."
    rule = "the sequential design's Holm-adjusted p" if sequential(variants) else "Holm-adjusted p"
    return f"Effects ({rule} < {SIGNIFICANCE} over the {len(compared)} comparisons): {held}." + (noise if rest else "")


def caption(runs: pd.DataFrame, variants: pd.DataFrame, scope: Scope, names: list[str]) -> str:
    """A few lines: what is compared, on which data and model, n seeds, what ± and the brackets (and p) mean; the
    optional columns of `names` get a word each. The paper's symbols are in `$...$`, as the header writes them."""
    named = [_key_words(key) for key in scope.varied or scope.keys]
    compared = " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)
    how = " one at a time from the baseline" if scope.varied else ""
    varying = f", varying {compared}{how}" if named else ""
    n = provenance.seeds_text(runs, scope.keys).split(" per")[0]
    seeds = "one seed" if n == "1" else f"$n = {n}$ seeds" if " " not in n else f"{n} seeds"
    comparisons = int((~variants["is_baseline"] & variants["p_holm"].notna()).sum())
    differences = bool((~variants["is_baseline"]).any())
    interval = " [Welch 95% CI]" if "diff" in names else ""
    parts = [
        f"Test accuracy of {provenance.model_names(runs)} on {provenance.data_text(runs)}{varying}; {seeds}"
        + (" per variant." if named else "."),
        "Acc.: mean ± 95% CI over seeds." if n != "1" else "Acc.: one run, no interval.",
        f"Δ: points from the baseline{interval}." if differences else "",
        f"p_Holm: {P_RULES[sequential(variants)]}, Holm-adjusted over the {comparisons} comparisons; {MARK}: below "
        f"{SIGNIFICANCE}."
        if comparisons
        else "",
        "Δ boot. CI: percentile bootstrap over seeds." if "boot" in names else "",
        noise_text(variants),
        "Img/s: training throughput." if "throughput" in names else "",
    ]
    return " ".join(part for part in parts if part)


def _key_words(key: str) -> str:
    """ "kernel size $k$": a key's name in words, its symbol (where the paper has one) in math."""
    words = style.key_label(key).split(" (")[0]
    symbol = style.short_key(key)
    if len(symbol) == 1 and words.endswith(f" {symbol}"):
        words = f"{words[: -len(symbol)]}${symbol}$"
    return words[0].lower() + words[1:]


def noise_text(variants: pd.DataFrame) -> str:
    """The test set's binomial noise floor at the baseline's accuracy, in points; empty where the size is unknown."""
    rows = variants[variants["is_baseline"] & (variants["n_test"] > 0)]
    if rows.empty:
        return ""
    row = rows.iloc[0]
    return (
        f"Test-set noise floor: ±{100 * row['test_acc_noise']:.2f} points "
        f"(binomial SE at {100 * row['test_acc_mean']:.1f}% on {row['n_test']} images)."
    )
