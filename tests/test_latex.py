"""Every committed table.tex fits one column of an `article`, one-column or two-column (ICML, CVPR: a column of
about 3.25 in; article's is 229.5 pt, narrower still), and its table-wide.tex (table*) either page: pdflatex compiles
each in both and its log holds no overfull box. Skipped where pdflatex is absent (.ci/run installs it)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from analysis import report

REPO = Path(__file__).resolve().parents[1]
TABLES = sorted(REPO.glob("results/*/report/table*.tex"))
DOCUMENT = (
    "\\documentclass[{options}]{{article}}\n\\usepackage{{booktabs}}\n"
    "\\begin{{document}}\n\\input{{{table}}}\n\\end{{document}}\n"
)


def compile_log(table: Path, options: str, folder: Path) -> str:
    (folder / "page.tex").write_text(DOCUMENT.format(options=options, table=table.as_posix()))
    command = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "page.tex"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)
    log = (folder / "page.log").read_text(errors="replace")
    assert result.returncode == 0, log[-2000:]
    return log


def overfull(log: str) -> list[str]:
    return [line for line in log.splitlines() if "Overfull \\hbox" in line]


@pytest.mark.slow  # pdflatex takes about a second a page
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (texlive-latex-base)")
@pytest.mark.parametrize("options", ["", "twocolumn"], ids=["one-column", "two-column"])
@pytest.mark.parametrize("table", TABLES, ids=lambda path: str(path.relative_to(REPO)))
def test_a_committed_table_compiles_without_an_overfull_box(table, options, tmp_path):
    assert overfull(compile_log(table, options, tmp_path)) == []


def test_every_committed_report_has_both_tables():
    reports = sorted(REPO.glob("results/*/report"))
    assert reports and all(
        (folder / "table.tex").exists() and (folder / "table-wide.tex").exists() for folder in reports
    )


@pytest.mark.slow  # writes a whole report, then compiles its tables
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (texlive-latex-base)")
def test_the_tables_with_every_optional_column_still_fit(sweep, tmp_path):
    out = tmp_path / "out"
    assert report.main([str(sweep), "--out", str(out), "--columns", "throughput,seeds", "--bootstrap"]) == 0
    wide = (out / "table-wide.tex").read_text()
    assert r"\begin{table*}" in wide and "Img/s" in wide and "boot. CI" in wide
    assert "Img/s" not in (out / "table.tex").read_text()  # table.tex keeps the columns that fit one column
    for table in (out / "table.tex", out / "table-wide.tex"):
        for options in ("", "twocolumn"):
            assert overfull(compile_log(table, options, tmp_path)) == [], (table.name, options)
