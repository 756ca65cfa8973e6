"""The one figure style of the toolkit: Okabe-Ito colours (safe for colour-blind readers), a paper's column widths,
fonts of 7 pt or more at print size, PNG + PDF with embedded TrueType fonts.

Every plot in analysis.plots is made by `figure()` inside `context()` and written with `save()`, so figures from
the report and from the notebooks look the same and drop into a paper unscaled: a figure is saved at the size it
was drawn (no tight crop), so its fonts print at the size set here. Figures are built with matplotlib's
object-oriented API (a `Figure` on the Agg canvas), never pyplot, so no GUI backend or global state is involved.
"""

import contextlib
from pathlib import Path

import matplotlib
import pandas as pd
from cycler import cycler
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from analysis.options import WIDTHS

# Okabe & Ito (2008), ordered so that the first colours are the most distinct; yellow, weak on white, comes last.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
# A marker per colour, so that series stay apart in greyscale print too.
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
WIDTH, HEIGHT = WIDTHS["one"], 2.4  # one plot, one column wide
MIN_FONT_SIZE = 7  # points at print size: the least most venues accept

RC = {
    "figure.figsize": (WIDTH, HEIGHT),
    "figure.dpi": 100,
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": MIN_FONT_SIZE,
    "ytick.labelsize": MIN_FONT_SIZE,
    "legend.fontsize": MIN_FONT_SIZE,
    "legend.frameon": False,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d9d9d9",
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "savefig.dpi": 300,
    "savefig.bbox": "standard",  # the figure's own size, so that 7 pt is 7 pt in print; constrained layout fits it
    "pdf.fonttype": 42,  # embed TrueType, so text in the PDF stays text (journals ask for it)
}


# Axis and column names of the config keys, with their units; other keys are shown as they are spelled.
KEY_LABELS = {
    "dim": "Width h (channels)",
    "depth": "Depth d (mixer layers)",
    # The depthwise kernel slides over the grid of patches, so k=3 at p=4 spans 12 pixels.
    "kernel_size": "Kernel size k (cells of the patch grid)",
    "patch_size": "Patch size p (pixels)",
    "residual": "Residual connection",
    "norm": "Normalisation",
    "activation": "Activation",
    "image_size": "Image size (pixels)",
    "epochs": "Epochs",
    "batch_size": "Batch size (images)",
    "lr": "Peak learning rate",
    "weight_decay": "Weight decay",
    "label_smoothing": "Label smoothing",
    "scale": "Crop scale (min. area fraction)",
    "randaug_n": "RandAugment ops per image",
    "randaug_m": "RandAugment magnitude",
    "reprob": "Random-erasing probability",
    "train_subset": "Training images",
}
# Short names for legends and point labels (`k=3`), where a whole axis label does not fit; other keys keep their name.
KEY_SHORT = {"dim": "h", "depth": "d", "kernel_size": "k", "patch_size": "p", "train_subset": "train"}


def key_label(key: str) -> str:
    return KEY_LABELS.get(key, key)


def short_key(key: str) -> str:
    return KEY_SHORT.get(key, key)


def short_label(values: dict) -> str:
    """`k=3, residual=none`: the legend and point label of a variant."""
    return ", ".join(f"{short_key(key)}={value}" for key, value in values.items())


def si_unit(counts: ArrayLike) -> tuple[float, str]:
    """(divisor, prefix) that shows these counts (parameters, MACs) in k, M or G, whichever fits the largest one."""
    largest = pd.Series(counts, dtype=float).max()
    return next(((divisor, unit) for divisor, unit in ((1e9, "G"), (1e6, "M")) if largest >= divisor), (1e3, "k"))


def context() -> contextlib.AbstractContextManager:
    """Draw with the toolkit's style without touching the global matplotlib settings."""
    return matplotlib.rc_context(RC)


def figure(width: str = "one", height: float = HEIGHT) -> Figure:
    """An empty figure `width` ("one" or "two" columns) wide, under constrained layout (legends and labels fit inside
    it), on the Agg canvas, so that its labels can be measured before it is saved (plots.place_labels)."""
    if width not in WIDTHS:
        raise ValueError(f"figure width {width!r} is not accepted: expected one of {', '.join(WIDTHS)}")
    fig = Figure(figsize=(WIDTHS[width], height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


LINESTYLES = ["-", "--", ":", "-."]  # from the 9th series on, colours and markers repeat with another line style


def series_style(i: int) -> dict:
    """Colour, marker and line style of the i-th series of a plot."""
    n = len(OKABE_ITO)
    return {"color": OKABE_ITO[i % n], "marker": MARKERS[i % n], "linestyle": LINESTYLES[i // n % len(LINESTYLES)]}


FORMATS = ("png", "pdf")  # every figure is written in each
# A PDF records when it was made by default, so the same figure made again differed in every byte of its date: a
# report rerun on committed results showed every PDF as changed. Without the date, the same figure is the same file.
METADATA = {"png": {}, "pdf": {"CreationDate": None}}


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf (the same bytes for the same figure) and return the two paths."""
    paths = [Path(f"{stem}.{ext}") for ext in FORMATS]
    with context():
        for path, ext in zip(paths, FORMATS, strict=True):
            fig.savefig(path, metadata=METADATA[ext])
    return paths
