"""The error of the analysis commands: what they report, in one line, for input they cannot use. Its own module,
imported before pandas, scipy or matplotlib (over a second on a small CPU), so that --help and usage errors answer
at once and an export loads no plotting stack to report one."""


class AnalysisError(ValueError):
    """Input the analysis cannot use; the message is one line naming the bad value and what is accepted."""
