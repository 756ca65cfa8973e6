"""What the analysis commands need before they import pandas, scipy or matplotlib (over a second on a small CPU),
so that their --help and usage errors answer at once: the error they report, and the values their options accept."""


class AnalysisError(ValueError):
    """Input the analysis cannot use; the message is one line naming the bad value and what is accepted."""


# Inches: the text width of one column and of a whole page of a two-column paper (IEEE, ACM, NeurIPS-like).
WIDTHS = {"one": 3.3, "two": 6.9}
OPTIONAL = ("throughput", "seeds")  # the columns table-wide.tex adds on request (--columns)
