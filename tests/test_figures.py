"""The figures as a paper takes them: one or two columns wide, fonts of 7 pt or more at print size, no title inside
(the caption is report.md's), no label over another, colour-blind-safe colours, PDFs with embedded TrueType fonts.

Each check reads what was drawn (the text boxes after a draw, the saved files' sizes, the PDF's font dictionaries),
not the settings that should have made it so.
"""

import itertools
import re
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from analysis import build, load_history, plots, report, scope, style, summarise
from analysis.plots import COSTS

REPO = Path(__file__).resolve().parents[1]
SOURCE = "ConvMixer-8/1 on toy data"
# Okabe & Ito (2008), "Color Universal Design": the eight colours as they published them.
OKABE_ITO = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}


def crowded_variants(n: int = 3) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The committed study's crowd: five variants within 0.1 M MACs and 2 points of accuracy (the residual
    placements and the baseline), with a cheaper and a dearer one, all on the front's side of the plot."""
    rows = [
        ("p=4", 1.1e6, 0.534), ("k=3", 3.35e6, 0.557), ("residual=none", 4.10e6, 0.559),
        ("baseline", 4.12e6, 0.577), ("residual=pointwise", 4.13e6, 0.568), ("residual=block", 4.14e6, 0.565),
        ("residual=both", 4.16e6, 0.540), ("k=9", 6.9e6, 0.586),
    ]  # fmt: skip
    agg = pd.DataFrame(
        [{"variant": label, "macs": macs, "params": macs / 100, "train_images_per_s_mean": 1e9 / macs,
          "test_acc_mean": acc, "test_acc_ci": 0.01, "n": n} for label, macs, acc in rows]
    )  # fmt: skip
    runs = pd.DataFrame(
        [{"variant": label, "test_acc": acc + 0.004 * (i - 1), "run_id": f"{label}-{i}"}
         for label, _, acc in rows for i in range(n)]
    )  # fmt: skip
    return agg, runs, [label for label, _, _ in rows]


def kind_plot(kind: str, width: str) -> plots.Plot:
    """One figure of a kind (KINDS): a line per patch size against k, accuracy against a cost, training curves."""
    if kind in COSTS:
        agg, runs, labels = crowded_variants()
        return plots.accuracy_vs_cost(agg, runs, kind, ["variant"], labels, "measured on a CPU", SOURCE, width)
    keyed = pd.DataFrame(
        [{"kernel_size": k, "patch_size": p, "test_acc_mean": 0.5 + 0.01 * k - 0.02 * p, "test_acc_ci": 0.02, "n": 3}
         for k in (3, 5, 7, 9, 15) for p in (1, 2, 4)]
    )  # fmt: skip
    runs = keyed.rename(columns={"test_acc_mean": "test_acc"}).assign(run_id=[f"r{i}" for i in range(15)])
    if kind == "key":
        return plots.accuracy_vs_key(keyed, runs, "kernel_size", ["kernel_size", "patch_size"], None, 9, SOURCE, width)
    history = pd.DataFrame(
        [{"run_id": run_id, "epoch": epoch, "metric": metric, "value": value / epoch}
         for run_id in runs["run_id"] for epoch in range(1, 11)
         for metric, value in (("test_acc", 0.5), ("train_loss", 2.0))]
    )  # fmt: skip
    return plots.training_curves(history, runs, ["patch_size"], SOURCE, width=width)


KINDS = ["key", *COSTS, "curves"]


def texts_of(fig: Figure) -> list[Text]:
    """Every text with words that a reader sees, measured as drawn: tick labels of the ticks in view (an axis keeps
    the labels of others, undrawn), axis labels, titles, point labels, legends. Drawn in the style, as style.save
    draws it: the ticks are chosen at draw time, by the tick font size of that moment."""
    with style.context():
        fig.draw_without_rendering()
        texts = [*fig.texts, *(text for legend in fig.legends for text in legend.get_texts())]
        for ax in fig.axes:
            for axis, coordinate in ((ax.xaxis, 0), (ax.yaxis, 1)):
                low, high = sorted(axis.get_view_interval())
                texts += [label for label in axis.get_ticklabels() if low <= label.get_position()[coordinate] <= high]
            texts += [ax.xaxis.label, ax.yaxis.label, *ax.texts, ax.title, ax._left_title, ax._right_title]
            texts += ax.get_legend().get_texts() if ax.get_legend() else []
    return [text for text in texts if text.get_visible() and text.get_text().strip()]


def box(text: Text):
    # An annotation's own box takes in its leader line; the words are what must not collide.
    return Text.get_window_extent(text)


def overlapping(fig: Figure) -> list[tuple[str, str]]:
    boxes = [(text.get_text(), box(text)) for text in texts_of(fig)]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def check_print_ready(plot: plots.Plot, width: str) -> None:
    """Width, fonts, no title, every text inside the figure and on its own."""
    fig = plot.figure
    assert fig.get_figwidth() == style.WIDTHS[width]
    texts = texts_of(fig)
    assert min(text.get_fontsize() for text in texts) >= style.MIN_FONT_SIZE
    assert all(not ax.get_title(loc=loc) for ax in fig.axes for loc in ("left", "center", "right"))
    assert fig.get_suptitle() == ""
    page = fig.bbox
    outside = [text.get_text() for text in texts if not (page.contains(*box(text).p0) and page.contains(*box(text).p1))]
    assert not outside, outside
    assert not overlapping(fig), overlapping(fig)
    assert plot.caption.startswith("Test accuracy")


@pytest.mark.parametrize("width", list(style.WIDTHS))
@pytest.mark.parametrize("kind", KINDS)
def test_figures_fit_a_column_with_fonts_of_7_pt_no_title_and_no_overlapping_label(kind, width):
    plot = kind_plot(kind, width)
    check_print_ready(plot, width)
    assert f". {SOURCE}. " in plot.caption


def test_crowded_point_labels_do_not_overlap_and_every_front_point_is_named():
    """In the committed study's accuracy_vs_macs, `k=3`, `residual=none` and `baseline` sat on each other."""
    agg, runs, labels = crowded_variants()
    fig, caption = plots.accuracy_vs_cost(agg, runs, "macs", ["variant"], labels)
    named = {text.get_text() for text in fig.axes[0].texts}
    front = plots.ranked_front(agg["macs"], agg["test_acc_mean"], agg["n"], higher_cost_is_better=False)
    assert {label for label, on in zip(labels, front, strict=True) if on} <= named
    assert "no room" not in caption and not overlapping(fig)


def test_a_label_with_no_free_place_is_left_out_and_the_caption_says_so():
    agg, runs, _ = crowded_variants()
    long = [f"a long label number {i} that fills the plot" for i in range(len(agg))]
    fig, caption = plots.accuracy_vs_cost(agg, runs, "macs", ["variant"], long)
    drawn = {text.get_text() for text in fig.axes[0].texts}
    missing = [label for label in long if label not in drawn]
    assert missing and f"no room to name {', '.join(missing)}" in caption
    assert not overlapping(fig)


@pytest.mark.slow
@pytest.mark.parametrize("width", list(style.WIDTHS))
def test_the_figure_width_is_the_print_width_in_the_saved_files(width, tmp_path):
    png, pdf = style.save(kind_plot("key", width).figure, tmp_path / width)
    with Image.open(png) as image:
        assert image.width == round(style.WIDTHS[width] * 300)  # savefig.dpi: no tight crop changed the size
    media_box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf.read_bytes())
    assert float(media_box[1]) == pytest.approx(style.WIDTHS[width] * 72)


def test_the_overlap_check_sees_two_labels_on_each_other():
    fig = style.figure()
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, "k=3")
    ax.annotate("baseline", (0.5, 0.5), xytext=(4, 2), textcoords="offset points")
    assert overlapping(fig) == [("k=3", "baseline")]


def test_a_figure_width_other_than_one_or_two_is_one_line(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert report.cli([str(sweep), "--figure-width", "3.3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"{report.PROG}: error: argument --figure-width: invalid choice: '3.3' (choose from 'one', 'two')\n"
    assert not out.exists()
    with pytest.raises(ValueError, match="figure width 'wide' is not accepted: expected one of one, two"):
        style.figure("wide")


@pytest.mark.slow
def test_the_report_writes_two_column_figures_with_their_captions_under_them(sweep, tmp_path):
    out = tmp_path / "out"
    assert report.main([str(sweep), "--figure-width", "two", "--out", str(out)]) == 0
    with Image.open(out / "accuracy_vs_macs.png") as image:
        assert image.width == round(style.WIDTHS["two"] * 300)
    index = (out / "report.md").read_text()
    blocks = index[index.index("## Figures") : index.index("## Files")].split("![")[1:]
    assert len(blocks) == 5
    source = "ConvMixer-8/1 on synthetic, subset: 128 train / 64 test images"
    for block in blocks:  # the image, then its caption: what it shows, the model and data, n and the bars
        stem = block[: block.index("]")]
        assert block.startswith(f"{stem}]({stem}.png)\n\n*{stem}*: Test accuracy"), block
        assert f". {source}. " in block and "n = 3" in block


def pdf_fonts(pdf: bytes) -> tuple[list[str], list[bytes]]:
    """The /Subtype of every font dictionary, and every font descriptor, of a PDF that matplotlib wrote (its objects
    are plain text; only the page streams are compressed)."""
    objects = re.findall(rb"\d+ 0 obj\s*(<<.*?>>)\s*endobj", pdf, flags=re.DOTALL)
    fonts = [re.search(rb"/Subtype\s*/(\w+)", o)[1].decode() for o in objects if re.search(rb"/Type\s*/Font\b", o)]
    descriptors = [o for o in objects if re.search(rb"/Type\s*/FontDescriptor", o)]
    return fonts, descriptors


@pytest.mark.slow
def test_pdfs_embed_truetype_fonts_not_type_3(tmp_path):
    """Journals refuse Type 3 fonts (bitmaps or outlines without hinting, text that cannot be searched)."""
    agg, runs, labels = crowded_variants()  # point labels, axis labels, and a legend with "≥"
    figure = plots.accuracy_vs_cost(agg, runs, "macs", ["variant"], labels).figure
    _, pdf = style.save(figure, tmp_path / "figure")
    fonts, descriptors = pdf_fonts(pdf.read_bytes())
    assert fonts and "Type3" not in fonts and set(fonts) <= {"Type0", "CIDFontType2", "TrueType"}, fonts
    assert descriptors and all(b"/FontFile2" in descriptor for descriptor in descriptors)


def test_series_are_drawn_in_the_eight_okabe_ito_colours():
    """tab10, matplotlib's default, puts red beside green: the pair a deuteranope cannot tell apart."""
    assert {colour.upper() for colour in style.OKABE_ITO} == OKABE_ITO
    agg = pd.DataFrame(
        [{"kernel_size": k, "dim": d, "test_acc_mean": 0.5, "test_acc_ci": 0.02, "n": 1}
         for k in (3, 5) for d in range(10)]
    )  # fmt: skip
    runs = agg.rename(columns={"test_acc_mean": "test_acc"})
    fig = plots.accuracy_vs_key(agg, runs, "kernel_size", ["kernel_size", "dim"]).figure
    assert {mcolors.to_hex(line.get_color()).upper() for line in fig.axes[0].lines} == OKABE_ITO


@pytest.mark.slow
@pytest.mark.parametrize("width", list(style.WIDTHS))
def test_the_committed_studys_figures_are_print_ready(width):
    """Every figure of results/cifar10-cpu (11 variants x 3 seeds, 4 axes), in both widths."""
    sweeps = [REPO / "results" / "cifar10-cpu"]
    chosen = scope(sweeps, [])
    variants = summarise(chosen.runs, chosen.baseline, chosen.keys)
    figures = build.figure_set(variants, load_history(sweeps), chosen, width)
    for stem, plot in figures.items():
        check_print_ready(plot, width)
        assert "no room" not in plot.caption, stem
    assert np.isin(["accuracy_vs_macs", "training_curves_residual"], list(figures)).all()


def test_a_caption_names_the_pareto_front_only_where_one_is_drawn():
    """With one seed per variant no variant is ranked, so there is no dashed front to speak of."""
    for n, promised in ((1, False), (2, True)):
        agg, runs, labels = crowded_variants(n)
        caption = plots.accuracy_vs_cost(agg, runs, "macs", ["variant"], labels).caption
        assert ("Pareto front dashed" in caption) == promised
