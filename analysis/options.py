"""The values the analysis commands' options accept, known before they import pandas, scipy or matplotlib, so that
their --help and usage errors answer at once."""

# Inches: the text width of one column and of a whole page of a two-column paper (IEEE, ACM, NeurIPS-like).
WIDTHS = {"one": 3.3, "two": 6.9}
OPTIONAL = ("throughput", "seeds")  # the columns table-wide.tex adds on request (--columns)
