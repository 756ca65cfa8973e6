"""The report checks what it reads and says what it could not use: damaged metrics, missing histories, what
precision ran, LaTeX that typesets as written, figures that name their data, and a full disk that leaves nothing
half-written (the cases of the reliability probe's D8/D9 and the newcomer review's F7/F8).

The runs are copies of a real sweep (the `sweep` fixture of conftest.py, tests/data/tiny-sweep: 2 kernel sizes x 3
seeds).
"""

import errno
import fcntl
import json
import math
import os
import threading
from pathlib import Path

import pandas as pd
import pytest

from ablations.store import HISTORY_FIELDS
from analysis import build, plots, provenance, report, style, tables
from analysis.design import scope
from analysis.errors import AnalysisError
from analysis.load import history_gaps, load_history, load_runs
from analysis.variants import summarise


def copy_sweep(sweep: Path, target: Path) -> Path:
    """A copy of the sweep's run folders (not its report), to damage."""
    for run_dir in (sweep / "runs").iterdir():
        (target / "runs" / run_dir.name).mkdir(parents=True)
        for file in run_dir.iterdir():
            (target / "runs" / run_dir.name / file.name).write_bytes(file.read_bytes())
    return target


def first_run(sweep: Path) -> Path:
    return sorted((sweep / "runs").iterdir())[0]


def edit_metrics(run_dir: Path, **values) -> None:
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) | values
    path.write_text(json.dumps({key: value for key, value in metrics.items() if value is not DELETE}))


DELETE = object()


# --- a done run's metrics -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"test_acc": None}, "test_acc=null is not accepted for a done run: expected a number in [0, 1]"),
        ({"test_acc": "0.9"}, 'test_acc="0.9" is not accepted for a done run: expected a number in [0, 1]'),
        ({"test_acc": 90.0}, "test_acc=90.0 is not accepted"),
        ({"test_acc": math.nan}, "test_acc=NaN is not accepted"),
        ({"test_acc": True}, "test_acc=true is not accepted"),
        ({"test_acc": DELETE}, "is not accepted: a done run needs 'test_acc'"),
        ({"params": 0}, "params=0 is not accepted for a done run: expected a positive integer"),
        ({"params": "6470"}, 'params="6470" is not accepted'),
        ({"macs": 1.5e6}, "macs=1500000.0 is not accepted for a done run: expected a positive integer"),
        ({"macs": None}, "macs=null is not accepted"),
        ({"flops": -1}, "flops=-1 is not accepted"),
        (
            {"train_images_per_s": "fast"},
            'train_images_per_s="fast" is not accepted for a done run: expected a positive number',
        ),
        ({"precision_used": "fp8"}, "precision_used=\"fp8\" is not accepted for a done run: expected 'fp32', 'bf16'"),
        ({"hardware": 7}, "hardware=7 is not accepted for a done run: expected a string"),
    ],
)
def test_a_done_run_with_a_bad_metric_is_one_line_naming_the_file(sweep, tmp_path, capsys, values, message):
    """A null accuracy used to be shown as nan, and the string "0.9" as 90.00."""
    damaged = copy_sweep(sweep, tmp_path / "damaged")
    edit_metrics(first_run(damaged), **values)
    out = tmp_path / "out"
    assert report.cli([str(damaged), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{report.PROG}: error: {first_run(damaged) / 'metrics.json'}")
    assert message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"kernel_size": "3"}, "kernel_size='3' is not accepted: expected an integer"),
        ({"lr": None}, "lr=None is not accepted"),
        ({"norm": "group"}, "norm='group' is not accepted"),
    ],
)
def test_a_run_whose_config_no_run_accepts_is_one_line_naming_the_file(sweep, tmp_path, capsys, values, message):
    """A hand-edited "kernel_size": "3" would have made a variant of its own beside kernel_size=3."""
    damaged = copy_sweep(sweep, tmp_path / "damaged")
    path = first_run(damaged) / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | values))
    assert report.cli([str(damaged), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{report.PROG}: error: {path}: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_optional_metrics_may_be_absent_or_null_and_unfinished_runs_are_not_checked(sweep, tmp_path):
    """Older runs lack keys such as precision_used; a run that did not end done has no accuracy to check."""
    older = copy_sweep(sweep, tmp_path / "older")
    run_dirs = sorted((older / "runs").iterdir())
    edit_metrics(run_dirs[0], precision_used=DELETE, flops=DELETE, hardware=None)
    edit_metrics(run_dirs[1], status="diverged", reason="train loss is nan in epoch 2", test_acc=None)
    runs = load_runs([older])
    assert runs.set_index("run_id").at[run_dirs[1].name, "status"] == "diverged"
    assert runs["test_acc"].dtype == float and runs["test_acc"].isna().sum() == 1


@pytest.mark.slow
def test_a_history_value_of_the_wrong_type_is_one_line_naming_the_file(sweep, tmp_path, capsys):
    """A string in history.json crashed the report in pandas, after the tables were made."""
    damaged = copy_sweep(sweep, tmp_path / "damaged")
    path = first_run(damaged) / "history.json"
    path.write_text(json.dumps([{**record, "test_acc": "0.9"} for record in json.loads(path.read_text())]))
    assert report.cli([str(damaged), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'{report.PROG}: error: {path} is not accepted: in its record 1, test_acc="0.9"')
    assert err.endswith(f"; delete its run folder {path.parent} to redo that run\n") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# --- a missing history ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_without_its_history_is_named_in_the_report_and_its_curve_left_out(sweep, tmp_path):
    """Its curve used to vanish from training_curves.png without a word."""
    damaged = copy_sweep(sweep, tmp_path / "damaged")
    gone, cut = sorted((damaged / "runs").iterdir())[:2]
    (gone / "history.json").unlink()
    (cut / "history.json").write_text(json.dumps(json.loads((cut / "history.json").read_text())[:1]))
    runs = load_runs([damaged])
    assert history_gaps(runs, load_history([damaged])) == {
        gone.name: "no history.json (missing or empty)",
        cut.name: "history.json has 1 of 2 epochs",
    }
    out = tmp_path / "out"
    assert report.main([str(damaged), "--out", str(out)]) == 0
    index = (out / "report.md").read_text()
    line = next(line for line in index.splitlines() if line.startswith("- Left out of the training curves: "))
    row = runs.set_index("run_id").loc[gone.name]
    assert f"{gone.name} (kernel_size={row['kernel_size']}, seed {row['seed']}: no history.json" in line
    assert f"{cut.name} (" in line and "history.json has 1 of 2 epochs" in line
    chosen = scope([damaged], [])
    variants = summarise(chosen.runs, chosen.baseline, chosen.keys)
    curves = build.figure_set(variants, load_history([damaged]), chosen)["training_curves"]
    assert "2 runs left out (history.json missing, short or long)" in curves.caption
    assert report.main([str(sweep), "--out", str(tmp_path / "whole")]) == 0
    assert "Left out" not in (tmp_path / "whole" / "report.md").read_text()


def test_a_history_longer_than_its_run_is_named_and_left_out(sweep, tmp_path):
    """A 254 MB history.json of 200,000 epochs for a 3-epoch run was drawn as its curve, without a word."""
    damaged = copy_sweep(sweep, tmp_path / "damaged")
    long = first_run(damaged)
    records = json.loads((long / "history.json").read_text())
    (long / "history.json").write_text(json.dumps(records + [{**records[-1], "epoch": n} for n in range(3, 9)]))
    gaps = history_gaps(load_runs([damaged]), load_history([damaged]))
    assert gaps == {long.name: "its history.json has 8 epochs, the run 2"}


def test_only_the_histories_asked_for_are_read(sweep, tmp_path):
    damaged = copy_sweep(sweep, tmp_path / "damaged")
    unread, *read = sorted((damaged / "runs").iterdir())
    (unread / "history.json").write_text("[{not json")
    history = load_history([damaged], {run_dir.name for run_dir in read})
    assert set(history["run_id"]) == {run_dir.name for run_dir in read}
    with pytest.raises(AnalysisError, match="history.json"):
        load_history([damaged])


# --- what ran: precision ----------------------------------------------------------------------------------------------


def test_precision_auto_reports_what_ran(sweep):
    """The caption said `precision auto` although every run recorded fp32."""
    runs = load_runs([sweep])
    assert set(runs["precision"]) == {"auto"} and set(runs["precision_used"]) == {"fp32"}  # a CPU runs fp32
    assert provenance.precision_text(runs) == "fp32 (precision auto)"
    assert provenance.precision_text(runs.assign(precision="fp32")) == "fp32"
    assert provenance.precision_text(runs.drop(columns="precision_used")) == "auto (what ran: not recorded)"
    mixed = runs.assign(precision_used=["bf16", *[None] * (len(runs) - 1)])
    assert provenance.precision_text(mixed) == "bf16 (precision auto) (some runs: not recorded)"
    assert "precision fp32 (precision auto)" in provenance.caption(runs, {}, ["kernel_size"])


# --- LaTeX ------------------------------------------------------------------------------------------------------------


def test_latex_escapes_braces_and_every_special_once():
    """table.tex wrote `k = {3, 7}`, which LaTeX typesets as "k = 3, 7"."""
    text = r"k = {3, 7} costs $5 ~ 2^3 \ 50% a_b & #1 ± -1.2 Δ ≥ α –"
    assert tables.latex_escape(text) == (
        r"k = \{3, 7\} costs \$5 \textasciitilde{} 2\textasciicircum{}3 \textbackslash{} 50\% a\_b \& \#1 "
        r"$\pm$ $-$1.2 $\Delta$ $\geq$ $\alpha$ --"
    )


@pytest.mark.slow
def test_the_latex_caption_keeps_its_braces_and_spells_every_symbol_in_latex(sweep):
    chosen = scope([sweep], [])
    made = tables.table(summarise(chosen.runs, chosen.baseline, chosen.keys), chosen.keys)
    latex = tables.latex_table(made, provenance.caption(chosen.runs, chosen.designs, chosen.keys))
    caption = next(line for line in latex.splitlines() if line.startswith(r"\caption{"))
    assert r"kernel size k = \{3, 5\}" in caption
    assert all(ord(char) < 128 for char in latex)  # every symbol spelled in LaTeX, none left for the font to miss


# --- figures ----------------------------------------------------------------------------------------------------------


def test_the_training_curves_draw_only_declared_history_fields():
    assert {metric for metric, *_ in plots.CURVE_PANELS} <= set(HISTORY_FIELDS)


@pytest.mark.slow
def test_every_figure_names_the_model_and_the_data(sweep):
    """Figures carried the n of seeds but not what was trained on what, so a pasted figure said nothing of it."""
    chosen = scope([sweep], [])
    variants = summarise(chosen.runs, chosen.baseline, chosen.keys)
    figures = build.figure_set(variants, load_history([sweep]), chosen)
    assert set(figures) == {f"accuracy_vs_{name}" for name in ("kernel_size", *plots.COSTS)} | {"training_curves"}
    source = "ConvMixer-8/1 on synthetic, subset: 128 train / 64 test images"
    assert provenance.figure_source(chosen.runs) == source
    for stem, (_, caption) in figures.items():
        assert f". {source}. " in caption and "n = 3" in caption, stem


def one_seed_variants(accuracies: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    agg = pd.DataFrame(
        {"kernel_size": [3, 5, 7][: len(accuracies)], "test_acc_mean": accuracies, "test_acc_ci": math.nan, "n": 1}
    )
    agg = agg.assign(macs=1e6 * agg["kernel_size"], params=1e3 * agg["kernel_size"], train_images_per_s_mean=100.0)
    return agg, agg.rename(columns={"test_acc_mean": "test_acc"})


def test_the_one_seed_legend_sits_under_the_plot():
    """Its hollow marker sat inside the axes, next to a point, and read as one more variant; to the right of the
    axes, the points' labels ran into it."""
    agg, runs = one_seed_variants([0.625, 0.3, 0.55])
    for cost in plots.COSTS:
        fig = plots.accuracy_vs_cost(agg, runs, cost, ["kernel_size"], ["k=3", "k=5", "k=7"]).figure
        fig.draw_without_rendering()
        (legend,), ax = fig.legends, fig.axes[0]
        assert "one seed: not ranked" in [text.get_text() for text in legend.get_texts()]
        axes_box = ax.get_tightbbox()  # the axes with their tick labels and axis label
        assert legend.get_window_extent().y1 <= axes_box.y0, cost


def test_a_small_single_seed_difference_does_not_fill_the_figure():
    """Two one-seed variants at 31.8% and 33.0% spanned the whole height of accuracy_vs_patch_size."""
    agg, runs = one_seed_variants([0.318, 0.330])
    for fig in (
        plots.accuracy_vs_key(agg, runs, "kernel_size", ["kernel_size"]).figure,
        plots.accuracy_vs_cost(agg, runs, "macs", ["kernel_size"], ["a", "b"]).figure,
    ):
        low, high = fig.axes[0].get_ylim()
        assert high - low >= plots.MIN_ACCURACY_SPAN and low <= 31.8 and high >= 33.0
    agg, runs = one_seed_variants([0.99, 0.995])  # near the top: the span stays within 0-100%
    low, high = plots.accuracy_vs_key(agg, runs, "kernel_size", ["kernel_size"]).figure.axes[0].get_ylim()
    assert (low, high) == (100 - plots.MIN_ACCURACY_SPAN, 100)
    agg, runs = one_seed_variants([0.2, 0.6])  # wide already: left alone
    low, high = plots.accuracy_vs_key(agg, runs, "kernel_size", ["kernel_size"]).figure.axes[0].get_ylim()
    assert high - low < 45 and low > 15


def test_the_same_figure_is_saved_as_the_same_files(tmp_path, monkeypatch):
    """A report rerun on committed results rewrote every PDF: each recorded the time it was made."""
    agg, runs = one_seed_variants([0.3, 0.5])
    figure = plots.accuracy_vs_key(agg, runs, "kernel_size", ["kernel_size"]).figure
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")  # the time matplotlib takes as now, when it is set
    first = [path.read_bytes() for path in style.save(figure, tmp_path / "first")]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "2000000000")  # years later
    again = [path.read_bytes() for path in style.save(figure, tmp_path / "again")]
    assert first == again


# --- a full disk ------------------------------------------------------------------------------------------------------


def fill_the_disk_after(monkeypatch: pytest.MonkeyPatch, figures: int) -> None:
    """Writing a figure fails with ENOSPC once `figures` figures are written, as on a full disk."""
    save, written = style.save, []

    def save_until_full(fig, stem: Path) -> list[Path]:
        if len(written) == figures:
            Path(f"{stem}.png").write_bytes(b"\x89PNG half")  # a partial file, as a full disk leaves one
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(stem)
        return save(fig, stem)

    monkeypatch.setattr(style, "save", save_until_full)


@pytest.mark.slow
def test_a_report_onto_a_full_disk_is_one_line_naming_the_folder_and_leaves_no_folder(
    sweep, tmp_path, capsys, monkeypatch
):
    """It printed `[Errno 28] No space left on device` with no path and left 3 of the report files."""
    fill_the_disk_after(monkeypatch, figures=2)
    out = tmp_path / "disk" / "report"
    assert report.cli([str(sweep), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"{report.PROG}: error: cannot write the report into {out} (No space left on device); " + (
        "nothing there changed\n"
    )
    assert list((tmp_path / "disk").iterdir()) == []  # no report folder, no staging folder beside it


@pytest.mark.slow
def test_a_full_disk_leaves_an_earlier_report_as_it_was(sweep, tmp_path, monkeypatch):
    out = tmp_path / "report"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    (out / "my-notes.txt").write_text("mine")
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    fill_the_disk_after(monkeypatch, figures=0)
    with pytest.raises(AnalysisError, match="No space left on device"):
        build.build_report([sweep], ["kernel_size=5"], out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir()] == ["report"]


@pytest.mark.slow
def test_a_report_replaces_its_files_in_place_and_keeps_the_users(sweep, tmp_path):
    out = tmp_path / "report"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    (out / "my-notes.txt").write_text("mine")
    assert report.main([str(sweep), "--out", str(out), "--baseline", "kernel_size=5"]) == 0
    assert (out / "my-notes.txt").read_text() == "mine" and "Baseline: kernel_size=5" in (out / "report.md").read_text()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report"]
    assert all(path.stat().st_size > 0 for path in out.iterdir())


@pytest.mark.slow
def test_matplotlibs_own_error_after_a_full_disk_is_one_line_and_leaves_nothing(sweep, tmp_path, capsys, monkeypatch):
    """On a full disk matplotlib's PDF writer ended in a traceback: AttributeError: 'Stream' object has no attribute
    'pos', raised while it cleaned up after the ENOSPC; its staging folder and an empty --out were left."""

    def save_onto_a_full_disk(fig, stem: Path) -> list[Path]:
        Path(f"{stem}.pdf").write_bytes(b"")  # the PDF of 0 bytes the probe found
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise AttributeError("'Stream' object has no attribute 'pos'") from None  # as matplotlib's, no __cause__

    monkeypatch.setattr(style, "save", save_onto_a_full_disk)
    out = tmp_path / "disk" / "rep"
    assert report.cli([str(sweep), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"{report.PROG}: error: cannot write the report into {out} (No space left on device); nothing there changed\n"
    )
    assert list((tmp_path / "disk").iterdir()) == []


@pytest.mark.parametrize("out", [".", "sweep-copy", "sweep-copy/.."])
def test_an_out_holding_a_sweep_or_the_current_folder_is_refused(sweep, tmp_path, capsys, monkeypatch, out):
    """A report replaces its whole folder: a sweep inside it would be moved away."""
    monkeypatch.chdir(tmp_path)
    copy = copy_sweep(sweep, tmp_path / "sweep-copy")
    assert report.cli([str(copy), "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"error: --out {out!r} is not accepted: it holds " in err and err.count("\n") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sweep-copy"]


@pytest.mark.slow
def test_a_rerun_after_a_killed_report_is_whole_and_clears_its_leftovers(sweep, tmp_path):
    out = tmp_path / "report"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    clean = {path.name: path.read_bytes() for path in out.iterdir()}
    out.chmod(0o750)
    (tmp_path / ".report.k1.tmp").mkdir()
    (tmp_path / ".report.k1.tmp" / "table.md").write_text("half")
    out.rename(tmp_path / ".report.old-k2")  # killed between the two renames of publish
    assert report.main([str(sweep), "--out", str(out)]) == 0
    assert {path.name: path.read_bytes() for path in out.iterdir()} == clean
    assert [path.name for path in tmp_path.iterdir()] == ["report"] and out.stat().st_mode & 0o777 == 0o750


@pytest.mark.slow
def test_a_second_report_into_one_folder_waits_for_the_first(sweep, tmp_path, capsys):
    """Two reports at once: the second's recover_folder removed the first's staging, which then failed."""
    out = tmp_path / "rep"
    first = os.open(tmp_path, os.O_RDONLY)  # as a report into `out` holds it while it writes
    fcntl.flock(first, fcntl.LOCK_EX)
    done = []
    second = threading.Thread(target=lambda: done.append(report.cli([str(sweep), "--out", str(out)])))
    second.start()
    while "waiting" not in capsys.readouterr().err and second.is_alive():
        second.join(0.05)
    assert second.is_alive() and not out.exists()  # it waits, touching nothing
    os.close(first)  # the first report ends
    second.join()
    assert done == [0] and (out / "report.md").exists()
