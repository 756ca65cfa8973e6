"""What the analysis commands need before they import pandas, scipy or matplotlib (over a second on a small CPU),
so that their --help and usage errors answer at once: the error they report, and the values their options accept."""


class AnalysisError(ValueError):
    """Input the analysis cannot use; the message is one line naming the bad value and what is accepted."""
